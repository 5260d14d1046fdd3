"""The conformance harness: a correct implementation passes, and planted bugs (a wrong
scale, a missing bias, an off-by-one in a convolution stride, a transposed layout, a
K-FAC factor split) are caught, on the smallest case that shows them, and named."""

import numpy as np
import pytest

import refprune as rp
from refprune import conformance as cf
from refprune.nn import AffineLayer

ZOO = cf.zoo()


# -- an independent, naive implementation of the forward pass and loss ---------------------

def naive_conv(x, W, b, stride, padding, stride_bug=False):
    """Direct loops over output locations.  ``stride_bug``: the output size is right but
    windows advance by ``stride - 1`` for strided axes (an off-by-one in the stride)."""
    n, cin, h, w = x.shape
    cout, _, kh, kw = W.shape
    (sh, sw), (ph, pw) = stride, padding
    xp = np.zeros((n, cin, h + 2 * ph, w + 2 * pw))
    xp[:, :, ph : ph + h, pw : pw + w] = x
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    step_h = sh - 1 if stride_bug and sh > 1 else sh
    step_w = sw - 1 if stride_bug and sw > 1 else sw
    out = np.zeros((n, cout, ho, wo))
    for i in range(ho):
        for j in range(wo):
            win = xp[:, :, i * step_h : i * step_h + kh, j * step_w : j * step_w + kw]
            out[:, :, i, j] = np.einsum("nchw,ochw->no", win, W)
    return out + (b[None, :, None, None] if b is not None else 0.0)


def naive_loss(case, stride_bug=False, reduction=None):
    x, k = case.X, 0
    ps = case.params
    for layer in case.model:
        name = type(layer).__name__
        if isinstance(layer, AffineLayer):
            W = ps[k]
            b = ps[k + 1] if layer.bias else None
            k += 2 if layer.bias else 1
            if name == "Linear":
                x = x @ W.T + (b if b is not None else 0.0)
            else:
                x = naive_conv(x, W, b, layer.stride, layer.padding, stride_bug)
        elif name == "Tanh":
            x = np.tanh(x)
        elif name == "Sigmoid":
            x = 1 / (1 + np.exp(-x))
        elif name == "Softplus":
            x = np.log1p(np.exp(x))
        elif name == "ReLU":
            x = np.maximum(x, 0)
        elif name == "Flatten":
            x = x.reshape(len(x), -1)
        else:  # 2d pooling with stride = kernel
            kk = layer.kernel_size
            n, c, h, w = x.shape
            win = x[:, :, : h // kk * kk, : w // kk * kk].reshape(n, c, h // kk, kk, w // kk, kk)
            x = win.mean(axis=(3, 5)) if name == "AvgPool2d" else win.max(axis=(3, 5))
    reduction = reduction or case.loss.reduction
    if isinstance(case.loss, rp.CrossEntropyLoss):
        z = x - x.max(axis=1, keepdims=True)
        per = np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(z)), case.y]
        return per.mean() if reduction == "mean" else per.sum()
    if isinstance(case.loss, rp.BCEWithLogitsLoss):
        # -[y log sigma + (1 - y) log(1 - sigma)] written with log1p, in another form than refprune's
        el = np.maximum(x, 0) - x * case.y + np.log1p(np.exp(-np.abs(x)))
        return el.mean() if reduction == "mean" else el.sum()
    sq = (x - case.y) ** 2
    return sq.mean() if reduction == "mean" else sq.sum()


def test_an_independent_correct_implementation_passes():
    report = cf.check(cf.Adapter(loss=naive_loss), ZOO + cf.drawn_zoo(6, seed=3))
    assert report.ok, report
    assert report["loss"].max_error < 1e-13


def test_planted_conv_stride_off_by_one_is_caught_on_the_smallest_strided_case():
    report = cf.check(cf.Adapter(loss=lambda c: naive_loss(c, stride_bug=True)), ZOO)
    res = report["loss"]
    assert not res.passed
    strided = {c.name for c in ZOO if any(getattr(layer, "stride", (1, 1)) != (1, 1) for layer in c.model)}
    assert {f.case.name for f in res.failures} <= strided  # never blamed on an unstrided network
    smallest = min((c for c in ZOO if c.name in strided), key=lambda c: (c.n_params, c.name))
    assert res.smallest_failure.case.name == smallest.name
    assert "stride=(1, 2)" in res.smallest_failure.case.describe() or "stride=(2, 2)" in \
        res.smallest_failure.case.describe()
    assert "FAIL" in report.table() and smallest.name in str(report)


def test_planted_sum_instead_of_mean_is_named():
    report = cf.check(cf.Adapter(loss=lambda c: naive_loss(c, reduction="sum")), ZOO)
    f = report["loss"].smallest_failure
    assert f.case.loss.reduction == "mean"
    text = " ".join(f.diagnosis)
    per_element = {"MSELoss": "a sum where MSELoss 'mean' divides by N C",
                   "BCEWithLogitsLoss": "a sum where BCEWithLogitsLoss 'mean' divides by N C"}
    assert per_element.get(type(f.case.loss).__name__, "a sum over samples where the loss takes the mean") in text


def _ggn_half_for_mse(c):
    G = rp.ggn(*c.args())
    return G / 2 if isinstance(c.loss, rp.MSELoss) else G


def test_planted_lambda_identity_for_mse_is_named():
    report = cf.check(cf.Adapter(ggn=_ggn_half_for_mse), ZOO)
    res = report["ggn"]
    assert {f.case.loss.__class__ for f in res.failures} == {rp.MSELoss}
    assert "Lambda = I for squared error" in res.smallest_failure.diagnosis[0]
    assert "Lambda = 2I for squared error" in res.smallest_failure.conventions


def _without_bias(c, g):
    g = np.array(g, copy=True)
    off = c.model.param_offsets()
    for j, layer in enumerate(c.model):
        if isinstance(layer, AffineLayer) and layer.bias:
            g[off[j] + layer.n_weight : off[j + 1]] = 0.0
    return g


def test_planted_missing_bias_is_named():
    report = cf.check(cf.Adapter(grad=lambda c: _without_bias(c, rp.grad(*c.args()))), ZOO)
    f = report["grad"].smallest_failure
    assert any("only bias entries differ" in d for d in f.diagnosis)
    assert "bias" in f.diagnosis[0] and "weight" not in f.diagnosis[0]


def test_planted_missing_bias_row_in_kfac_factors_is_named():
    def factors(c):
        return [(b.S, b.A[:-1, :-1] if b.layout.bias else b.A) for b in rp.kfac(*c.args()).blocks]

    f = cf.check(cf.Adapter(kfac_factors=factors), ZOO)["kfac_factors"].smallest_failure
    assert any("bias row of A" in d for d in f.diagnosis)


def test_a_factor_split_is_named_and_a_library_scaling_passes_as_a_product():
    def split(c):
        return [(3.0 * b.S, b.A / 3.0) for b in rp.kfac(*c.args()).blocks]

    f = cf.check(cf.Adapter(kfac_factors=split), ZOO)["kfac_factors"].smallest_failure
    assert any("the same Kronecker product split differently" in d for d in f.diagnosis)
    # the dense K-FAC matrix does not see the split
    dense = cf.Adapter(kfac=lambda c: rp.kfac(*c.args()).to_dense())
    assert cf.check(dense, ZOO[:8]).ok


def test_planted_transposed_weight_layout_is_named():
    def grad_transposed(c):
        g = rp.grad(*c.args()).copy()
        off = c.model.param_offsets()
        for j, layer in enumerate(c.model):
            if type(layer).__name__ == "Linear":
                s = slice(off[j], off[j] + layer.n_weight)
                g[s] = g[s].reshape(layer.out_features, layer.in_features).T.ravel()
        return g

    f = cf.check(cf.Adapter(grad=grad_transposed), ZOO)["grad"].smallest_failure
    assert any("column-major order" in d for d in f.diagnosis)


def test_an_adapter_that_raises_is_a_finding():
    def broken(c):
        if any(type(layer).__name__ == "MaxPool2d" for layer in c.model):
            raise NotImplementedError("no max pooling")
        return rp.grad(*c.args())

    res = cf.check(cf.Adapter(grad=broken), ZOO)["grad"]
    assert not res.passed and "NotImplementedError: no max pooling" in res.smallest_failure.explain()


def test_every_quantity_of_refprune_itself_passes_and_the_obs_step_is_checked_against_a_solve():
    """Plumbing of every quantity; the OBS step is given independently by a constrained
    least-change solve: minimise d^T H d / 2 subject to d_q = -theta_q."""
    def obs_by_kkt(c):
        H = rp.ggn(*c.args()) + c.obs_damping * np.eye(c.n_params)
        q, n = c.obs_index, c.n_params
        K = np.zeros((n + 1, n + 1))
        K[:n, :n], K[n, q], K[q, n] = H, 1.0, 1.0
        rhs = np.zeros(n + 1)
        rhs[n] = -c.theta[q]
        return np.linalg.solve(K, rhs)[:n]

    quantities = {name: (lambda ref, d: (lambda c: ref(c, dict(d))))(ref, d) for name, (ref, _, d) in cf.QUANTITIES.items()
                  if name not in ("kfac", "kfac_factors", "ekfac")}
    quantities["obs_update"] = obs_by_kkt
    # the six linear cases (one per loss) and two of the next network, whose hidden units
    # the structured quantities need
    report = cf.check(cf.Adapter(**quantities), ZOO[:8])
    assert report.ok, report
    assert report["obs_update"].max_error < 1e-9


def test_bad_adapters_and_options_are_refused():
    with pytest.raises(ValueError, match="unknown quantities \\['hessain'\\]"):
        cf.Adapter(hessain=lambda c: 0)
    with pytest.raises(ValueError, match="at least one quantity"):
        cf.Adapter()
    with pytest.raises(TypeError, match="must be a callable"):
        cf.Adapter(grad=3)
    with pytest.raises(TypeError, match="expected a refprune.conformance.Adapter"):
        cf.check({"grad": rp.grad})
    with pytest.raises(ValueError, match="rtol for grad must be a number"):
        cf.check(cf.Adapter(grad=lambda c: 0), rtol=-1)
    with pytest.raises(ValueError, match="no cases"):
        cf.check(cf.Adapter(grad=lambda c: 0), cases=[])
    with pytest.raises(AssertionError, match="conformance with refprune failed"):
        cf.assert_conforms(cf.Adapter(grad=lambda c: 0 * rp.grad(*c.args())), ZOO[:2])


def test_torch_func_adapter_passes_in_one_assertion():
    torch = pytest.importorskip("torch")

    def flat_loss(case):
        tm, lf, X, y = case.torch()
        names = [k for k, _ in tm.named_parameters()]
        shapes = [p.shape for p in tm.parameters()]
        sizes = [p.numel() for p in tm.parameters()]

        def f(theta):
            ps = [t.reshape(s) for t, s in zip(torch.split(theta, sizes), shapes)]
            return lf(torch.func.functional_call(tm, dict(zip(names, ps)), (X,)), y)

        return f, torch.from_numpy(case.theta)

    def grad(case):
        f, th = flat_loss(case)
        return torch.func.grad(f)(th)

    def hessian(case):
        f, th = flat_loss(case)
        return torch.func.hessian(f)(th)

    cf.assert_conforms(cf.Adapter(grad=grad, hessian=hessian))


def test_non_finite_and_complex_results_fail_by_name():
    """Every comparison with NaN is false: without the finiteness check an all-NaN
    adapter would pass.  A complex result is refused, not cast to its real part."""
    cases = ZOO[:2]
    nan = cf.check(cf.Adapter(grad=lambda c: np.full(c.n_params, np.nan)), cases)
    assert not nan.ok and nan["grad"].max_error == float("inf") and len(nan["grad"].failures) == 2
    assert "NaN and 0 inf entries" in str(nan)
    assert cf.relative_error(np.full(3, np.nan), np.ones(3)) == float("inf")
    assert cf.relative_error(np.array([1.0, np.inf, 1.0]), np.ones(3)) == float("inf")
    cplx = cf.check(cf.Adapter(grad=lambda c: rp.grad(*c.args()) + 1e-3j), cases)
    assert not cplx.ok and "is complex (complex128)" in str(cplx)
    assert cf.check(cf.Adapter(grad=lambda c: rp.grad(*c.args()).astype(np.float32)), cases,
                    rtol=np.float32(1e-6)).ok
    for bad, exc in ((float("nan"), ValueError), (np.float32(-1e-3), ValueError), (np.float64(1.0), ValueError),
                     (True, TypeError), ("1e-9", TypeError), (1e-9 + 0j, TypeError)):
        with pytest.raises(exc, match="rtol"):
            cf.check(cf.Adapter(grad=lambda c: rp.grad(*c.args())), cases, rtol=bad)


def test_kfac_options_are_checked_and_mc_fisher_replays_the_case_targets():
    with pytest.raises(ValueError, match=r"kfac_options has unknown keys \['aprox'\]"):
        cf.Adapter(kfac=len, kfac_options={"aprox": "reduce"})
    with pytest.raises(ValueError, match="Adapter: kfac_options: approx must be one of"):
        cf.Adapter(kfac=len, kfac_options={"approx": "both"})
    with pytest.raises(TypeError, match="kfac_options must be a dict"):
        cf.Adapter(kfac=len, kfac_options=["reduce"])
    with pytest.raises(ValueError, match=r"kfac_options apply to \['kfac', 'kfac_factors', 'ekfac'\], which the adapter"):
        cf.Adapter(grad=len, kfac_options={"approx": "reduce"})
    # an implementation that replays case.targets conforms: the reference uses them too
    opts = {"curvature": "mc_fisher", "approx": "reduce"}
    adapter = cf.Adapter(kfac_options=opts, kfac=lambda c: rp.kfac(*c.args(), curvature="mc_fisher", approx="reduce",
                                                                   targets=c.targets).to_dense())
    assert cf.check(adapter, ZOO[:4]).ok


def test_ekfac_is_compared_only_where_it_is_unique():
    """On the convolutional cases with approx='reduce', A is singular and the curvature
    is not zero on its null space: EKFAC depends on the eigenvectors chosen, so an
    implementation that picks others (here: the eigenvectors of every repeated
    eigenvalue rotated) is right but differs.  The harness skips those cases and says
    so; on the others the rotated implementation passes."""
    rng = np.random.default_rng(0)

    def rotated_ekfac(case):
        op = rp.kfac(*case.args(), approx="reduce")
        F = rp.ggn(*case.args())
        M = np.zeros_like(F)
        for b in op.blocks:
            lay, Us = b.layout, []
            for W in (b.S, b.A):
                w, U = np.linalg.eigh(W)
                start = 0
                for i in range(1, len(w) + 1):
                    if i == len(w) or w[i] - w[i - 1] > 1e-6 * np.abs(w).max():
                        if i - start > 1:
                            U[:, start:i] = U[:, start:i] @ np.linalg.qr(rng.standard_normal((i - start,) * 2))[0]
                        start = i
                Us.append(U)
            B = lay.from_matrix(np.einsum("ci,pj->ijcp", *Us).reshape(-1, lay.c, lay.p))
            o = slice(lay.offset, lay.offset + lay.size)
            M[o, o] = (B * np.einsum("ik,ij,jk->k", B, F[o, o], B)) @ B.T
        return M

    report = cf.check(cf.Adapter(ekfac=rotated_ekfac, kfac_options={"approx": "reduce"}), ZOO)
    res = report["ekfac"]
    skipped = {name for name, _ in res.skipped}
    assert report.ok, report
    assert skipped and all(name.startswith("conv") for name in skipped)
    assert res.cases + len(skipped) == len(ZOO)
    assert "not compared on" in str(report) and "(" + str(len(skipped)) + " skipped)" in report.table()
    only_skipped = cf.check(cf.Adapter(ekfac=rotated_ekfac, kfac_options={"approx": "reduce"}),
                            [c for c in ZOO if c.name in skipped][:2])
    assert not only_skipped.ok and "compared on no case" in str(only_skipped)
