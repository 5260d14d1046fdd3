"""K-FAC, KFC and EKFAC against the exact matrices.

Exact cases (each asserted to float64 precision):
* one data point: ``F_l = R sum_k (g_k kron a)(g_k kron a)^T = (R sum_k g_k g_k^T) kron (a a^T)``
  (Martens & Grosse 2015, §3: K-FAC's only approximation is the expectation of a
  Kronecker product replaced by the product of expectations);
* deep linear networks with squared error: the back-propagated columns do not depend on
  the sample, so the expectation factorises for any batch (Bernacchia, Lengyel &
  Hennequin 2018, "Exact natural gradient in deep linear networks", §3);
* repeated identical inputs: every sample contributes the same Kronecker product;
* convolution with a single output location: KFC reduces to K-FAC and expand equals
  reduce (Grosse & Martens 2016, §3; Eschenhagen et al. 2023, §3).
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refprune as rp
from refprune.testing import assert_close
from refprune.testing.strategies import problems

from cases import ARCHS, make


def tol(M):
    return 1e-12 * max(1.0, np.abs(M).max())


def exact_blocks(model, params, X, y, loss, fisher, samples=1, seed=0):
    """Per-layer diagonal blocks of the exact matrix that a Fisher type approximates."""
    if fisher == "ggn":
        M = rp.ggn(model, params, X, y, loss)
    else:
        mc = dict(samples=samples, seed=seed) if fisher == "mc_fisher" else {}  # the others refuse them
        M = rp.fisher(model, params, X, y, loss, curvature=fisher, **mc)
    off = model.param_offsets()
    return [M[off[j] : off[j + 1], off[j] : off[j + 1]] for j, layer in enumerate(model)
            if isinstance(layer, rp.nn.AffineLayer)]


def kfac_blocks(K):
    return [b.dense() for b in K.blocks]


DENSE = ["mlp-tanh", "mlp-sigmoid-softplus", "mlp-relu"]


@pytest.mark.parametrize("arch", DENSE)
@pytest.mark.parametrize("lossname", ["ce-mean", "ce-sum", "mse-mean", "mse-sum", "bce-mean", "bce-sum"])
@pytest.mark.parametrize("fisher", ["ggn", "fisher", "empirical_fisher", "mc_fisher"])
def test_kfac_is_exact_for_one_data_point(arch, lossname, fisher):
    model, params, X, y, loss = make(arch, lossname, n=1)
    mc = dict(samples=4, seed=3) if fisher == "mc_fisher" else {}
    K = rp.kfac(model, params, X, y, loss, curvature=fisher, **mc)
    for kb, eb in zip(kfac_blocks(K), exact_blocks(model, params, X, y, loss, fisher, samples=4, seed=3)):
        assert_close(kb, eb, 1e-11, tol(eb), f"K-FAC ({fisher}) vs exact block, N = 1")


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("n", [1, 4, 9])
def test_kfac_is_exact_for_deep_linear_networks_with_mse(reduction, n):
    rng = np.random.default_rng(n)
    model = rp.Sequential(rp.Linear(3, 4), rp.Linear(4, 5, bias=False), rp.Linear(5, 2))
    params = model.init(2)
    X, y = rng.standard_normal((n, 3)), rng.standard_normal((n, 2))
    loss = rp.MSELoss(reduction)
    K = rp.kfac(model, params, X, y, loss)
    for kb, eb in zip(kfac_blocks(K), exact_blocks(model, params, X, y, loss, "ggn")):
        assert_close(kb, eb, 1e-11, tol(eb), "K-FAC vs GGN block, deep linear MSE")


def test_kfac_is_not_exact_for_a_nonlinear_network_with_many_samples():
    """The exact cases above are not vacuous: with a nonlinearity and N > 1 K-FAC differs."""
    model, params, X, y, loss = make("mlp-tanh", "mse-mean", n=6)
    kb = kfac_blocks(rp.kfac(model, params, X, y, loss))[0]
    eb = exact_blocks(model, params, X, y, loss, "ggn")[0]
    assert np.abs(kb - eb).max() > 1e-3 * np.abs(eb).max()


@pytest.mark.parametrize("arch", DENSE + ["conv-tanh-avgpool", "conv-conv-softplus"])
@pytest.mark.parametrize("approx", ["expand", "reduce"])
def test_kfac_is_exact_for_repeated_identical_inputs(arch, approx):
    """Repeated inputs give identical ``J_n`` and, for the GGN, identical columns."""
    model, params, X, y, loss = make(arch, "ce-mean", n=1)
    Xr, yr = np.repeat(X, 5, axis=0), np.repeat(y, 5)
    K1 = kfac_blocks(rp.kfac(model, params, X, y, loss, approx=approx))
    K5 = kfac_blocks(rp.kfac(model, params, Xr, yr, loss, approx=approx))
    for a, b in zip(K1, K5):
        assert_close(b, a, 1e-11, tol(a), "K-FAC of repeated inputs vs one input")
    if arch in DENSE:
        for kb, eb in zip(K5, exact_blocks(model, params, Xr, yr, loss, "ggn")):
            assert_close(kb, eb, 1e-11, tol(eb), "K-FAC vs GGN block, repeated inputs")


@pytest.mark.parametrize("lossname", ["ce-sum", "mse-mean", "bce-mean"])
def test_kfc_with_one_output_location(lossname):
    """Conv whose kernel covers the padded input (``T = 1``): KFC == GGN block for one
    data point, and expand == reduce for any batch."""
    rng = np.random.default_rng(0)
    model = rp.Sequential(rp.Conv2d(2, 3, 3, padding=1), rp.Tanh(), rp.Flatten(), rp.Linear(3, 2))
    params = [2 * p for p in model.init(1)]
    for n in (1, 4):
        X = rng.standard_normal((n, 2, 1, 1))
        _, _, _, _, loss = make("mlp-tanh", lossname)
        if isinstance(loss, rp.CrossEntropyLoss):
            y = rng.integers(0, 2, n)
        elif isinstance(loss, rp.BCEWithLogitsLoss):
            y = rng.random((n, 2))
        else:
            y = rng.standard_normal((n, 2))
        Ke = kfac_blocks(rp.kfac(model, params, X, y, loss, approx="expand"))
        Kr = kfac_blocks(rp.kfac(model, params, X, y, loss, approx="reduce"))
        for a, b in zip(Ke, Kr):
            assert_close(a, b, 1e-12, tol(a), "expand vs reduce, T = 1")
        if n == 1:
            for kb, eb in zip(Ke, exact_blocks(model, params, X, y, loss, "ggn")):
                assert_close(kb, eb, 1e-11, tol(eb), "KFC vs GGN block, T = 1, N = 1")


def test_kfc_factors_by_definition():
    """KFC expand/reduce factors from explicit loops over samples and locations."""
    model, params, X, y, loss = make("conv-relu-maxpool-stride", "ce-mean", n=3)
    conv = model[0]
    n = len(X)
    from refprune.nn.conv import im2col

    U = im2col(X, conv.kernel_size, conv.stride, conv.padding)  # (n, r, T)
    a = np.concatenate([U, np.ones((n, 1, U.shape[2]))], axis=1)
    T = U.shape[2]
    # output-gradient columns at the conv output, by brute force from the GGN's Jacobian form:
    # g_nkt = J_{f <- z}^T sqrt(Lambda)_k, obtained with refprune's backward on the columns
    from refprune import derivatives as d
    from refprune.checks import validate
    from refprune.curvature.output_factors import hessian_sqrt

    inp = validate(model, params, X, y, loss)
    f, caches = d.forward(inp)
    g = d.backward(inp, caches, hessian_sqrt(loss, f))[0].reshape(n, -1, conv.out_units, T)
    R = 1.0 / n
    A_exp = sum(np.outer(a[i, :, t], a[i, :, t]) for i in range(n) for t in range(T)) / (n * T)
    S_exp = R * sum(np.outer(g[i, k, :, t], g[i, k, :, t]) for i in range(n) for k in range(g.shape[1])
                    for t in range(T))
    A_red = sum(np.outer(a[i].mean(1), a[i].mean(1)) for i in range(n)) / n
    S_red = R * sum(np.outer(g[i, k].sum(1), g[i, k].sum(1)) for i in range(n) for k in range(g.shape[1]))
    (Se, Ae), _ = rp.kfac(model, params, X, y, loss, approx="expand").factors()
    (Sr, Ar), _ = rp.kfac(model, params, X, y, loss, approx="reduce").factors()
    for got, ref, what in ((Ae, A_exp, "A expand"), (Se, S_exp, "S expand"), (Ar, A_red, "A reduce"),
                           (Sr, S_red, "S reduce")):
        assert_close(got, ref, 1e-12, 1e-14, what)


def test_mc_kfac_converges_to_type2():
    """``S_mc`` is an average of ``samples`` i.i.d. draws with mean ``S_type2`` (for every
    entry, since ``E[g g^T] = Lambda``); its error shrinks like ``1/sqrt(samples)``.  With
    fixed seeds the relative Frobenius error must fall below 5% at 4000 samples and
    decrease by more than 3x from 40 to 4000 samples (10x expected)."""
    model, params, X, y, loss = make("mlp-tanh", "ce-mean", n=4)
    S2 = [S for S, _ in rp.kfac(model, params, X, y, loss).factors()]
    errs = []
    for samples in (40, 4000):
        Smc = [S for S, _ in rp.kfac(model, params, X, y, loss, curvature="mc_fisher", samples=samples, seed=1).factors()]
        errs.append(max(np.linalg.norm(a - b) / np.linalg.norm(b) for a, b in zip(Smc, S2)))
    assert errs[1] < 0.05 and errs[0] > 3 * errs[1], errs


@pytest.mark.parametrize("arch", list(ARCHS))
def test_ekfac_before_reestimation_is_kfac(arch):
    model, params, X, y, loss = make(arch, "ce-mean", n=4)
    K = rp.kfac(model, params, X, y, loss)
    E = rp.EKFAC.from_kfac(K)
    assert_close(E.to_dense(), K.to_dense(), 1e-12, tol(K.to_dense()), "EKFAC before re-estimation")


@settings(max_examples=20)
@given(problems(max_samples=5), st.sampled_from(["ggn", "fisher", "mc_fisher", "empirical_fisher"]), st.sampled_from(["expand", "reduce"]))
def test_ekfac_is_never_farther_from_the_fisher_than_kfac(p, fisher, approx):
    """George et al. 2018, §3: EKFAC's re-estimated eigenvalues minimise the Frobenius
    distance to the Fisher block among matrices diagonal in K-FAC's eigenbasis."""
    mc = dict(samples=3, seed=2) if fisher == "mc_fisher" else {}
    K = rp.kfac(p.model, p.params, p.X, p.y, p.loss, curvature=fisher, approx=approx, **mc)
    E = rp.ekfac(p.model, p.params, p.X, p.y, p.loss, curvature=fisher, approx=approx, **mc)
    F = exact_blocks(p.model, p.params, p.X, p.y, p.loss, fisher, samples=3, seed=2)
    for kb, eb, fb in zip(K.blocks, E.blocks, F):
        dk, de = np.linalg.norm(fb - kb.dense()), np.linalg.norm(fb - eb.dense())
        assert de <= dk + 1e-12 * max(1.0, np.linalg.norm(fb)), (de, dk)
        # and EKFAC's eigenvalues are the diagonal of F in that basis (the reason why)
        Q = np.kron(eb.US, eb.UA)[eb.layout.perm]  # eigenvectors in flat order
        assert_close(eb.scales.ravel(), np.einsum("ij,ik,kj->j", Q, fb, Q), 1e-10, 1e-12 * max(1, np.abs(fb).max()),
                     "s* = diag(Q^T F Q)")


def test_ekfac_equals_fisher_block_when_kfac_is_exact():
    """Where K-FAC is exact, so is EKFAC (its eigenvalues then match K-FAC's)."""
    model, params, X, y, loss = make("mlp-sigmoid-softplus", "ce-sum", n=1)
    E = rp.ekfac(model, params, X, y, loss)
    for eb, fb in zip(E.blocks, exact_blocks(model, params, X, y, loss, "ggn")):
        assert_close(eb.dense(), fb, 1e-10, tol(fb), "EKFAC, N = 1")


@pytest.mark.parametrize("form", ["exact", "factored"])
@pytest.mark.parametrize("lam", [0.0, 1e-3, 0.7])
def test_kronecker_operations_against_dense_linear_algebra(form, lam):
    model, params, X, y, loss = make("conv-tanh-avgpool", "ce-mean", n=6)
    K = rp.kfac(model, params, X, y, loss)
    for b in K.blocks:
        S, A = b.S, b.A
        if form == "exact":
            D = np.kron(S, A) + lam * np.eye(S.shape[0] * A.shape[0])
        else:
            r = np.sqrt(lam)
            D = np.kron(S + r * np.eye(len(S)), A + r * np.eye(len(A)))
        D = b.layout.to_flat_order(D)
        assert_close(b.dense(lam, form), D, 1e-12, tol(D), "damped block")
        assert_close(b.trace(lam, form), np.trace(D), 1e-12, 1e-14, "trace")
        if lam > 0:
            sign, ld = np.linalg.slogdet(D)
            assert sign > 0
            assert_close(b.logdet(lam, form), ld, 1e-10, 1e-10, "logdet")
            v = np.random.default_rng(0).standard_normal((D.shape[0], 2))
            assert_close(b.inverse_matmat(v, lam, form), np.linalg.solve(D, v), 1e-8, 1e-10, "inverse-vector product")
    # network level
    if lam > 0:
        Kd = K.damped(lam, form).to_dense()
        Ki = K.inverse(lam, form)
        assert_close(Ki.to_dense() @ Kd, np.eye(K.n), 1e-8, 1e-8, "inverse @ damped")
        assert_close(K.damped(lam, form).logdet(), np.linalg.slogdet(Kd)[1], 1e-10, 1e-10, "logdet")
        assert_close(Ki.logdet(), -np.linalg.slogdet(Kd)[1], 1e-10, 1e-10, "logdet of inverse")
        assert_close(Ki.trace(), np.trace(np.linalg.inv(Kd)), 1e-8, 1e-10, "trace of inverse")
        assert_close(np.sort(K.damped(lam, form).eigenvalues()), np.linalg.eigvalsh(Kd), 1e-10, 1e-12,
                     "eigenvalues")


def test_singular_kfac_without_damping_raises():
    model, params, X, y, loss = make("mlp-tanh", "ce-mean", n=1)  # rank-one factors
    K = rp.kfac(model, params, X, y, loss)
    with pytest.raises(np.linalg.LinAlgError, match="singular or indefinite .* use a larger damping"):
        K.inverse().matvec(np.ones(K.n))
    with pytest.raises(np.linalg.LinAlgError, match="use damping > 0"):
        K.logdet()
    K.inverse(1e-3).matvec(np.ones(K.n))  # damped: fine


def test_ekfac_damping_and_options():
    model, params, X, y, loss = make("mlp-tanh", "ce-mean", n=5)
    E = rp.ekfac(model, params, X, y, loss)
    D = E.damped(0.1).to_dense()
    assert_close(E.inverse(0.1).to_dense() @ D, np.eye(E.n), 1e-9, 1e-9, "EKFAC inverse")
    assert_close(E.damped(0.1).logdet(), np.linalg.slogdet(D)[1], 1e-10, 1e-10, "EKFAC logdet")
    with pytest.raises(ValueError, match="only damping form 'exact'"):
        E.damped(0.1, "factored")
    with pytest.raises(ValueError, match="approx must be one of"):
        rp.kfac(model, params, X, y, loss, approx="diagonal")
    with pytest.raises(TypeError, match="option fisher= was renamed curvature=; write curvature='fisher'"):
        rp.ekfac(model, params, X, y, loss, fisher="true")
    with pytest.raises(ValueError, match="curvature='type-2' is an earlier spelling; write curvature='ggn'"):
        rp.kfac(model, params, X, y, loss, curvature="type-2")
    with pytest.raises(ValueError, match="curvature='hessian' has no Kronecker factorisation"):
        rp.kfac(model, params, X, y, loss, curvature="hessian")
    with pytest.raises(ValueError, match="damping form must be one of"):
        rp.kfac(model, params, X, y, loss).damped(0.1, "tikhonov")
    with pytest.raises(ValueError, match="damping must be a finite number >= 0"):
        rp.kfac(model, params, X, y, loss).inverse(-1.0)


def test_kfac_is_deterministic():
    model, params, X, y, loss = make("conv-conv-softplus", "mse-mean", n=4)
    a = rp.kfac(model, params, X, y, loss, curvature="mc_fisher", samples=2, seed=9).factors()
    b = rp.kfac(model, params, X, y, loss, curvature="mc_fisher", samples=2, seed=9).factors()
    assert all(np.array_equal(x, z) for p, q in zip(a, b) for x, z in zip(p, q))


def test_pi_damping_is_martens_grosse_section_6_3():
    """``(S + sqrt(lam)/pi I) kron (A + pi sqrt(lam) I)`` with ``pi`` from the factors'
    mean eigenvalues (traces), formed here with numpy's kron."""
    model, params, X, y, loss = make("conv-tanh-avgpool", "ce-mean", n=4)
    K = rp.kfac(model, params, X, y, loss)
    lam = 0.03
    D = K.damped(lam, "pi").to_dense()
    for b in K.blocks:
        pi = np.sqrt((np.trace(b.A) / len(b.A)) / (np.trace(b.S) / len(b.S)))
        ref = np.kron(b.S + np.sqrt(lam) / pi * np.eye(len(b.S)), b.A + pi * np.sqrt(lam) * np.eye(len(b.A)))
        s = slice(b.layout.offset, b.layout.offset + b.layout.size)
        assert_close(D[s, s], b.layout.to_flat_order(ref), 1e-12, 1e-14, "pi-damped block")
        assert_close(np.sort(b.eigenvalues(lam, "pi").ravel()), np.linalg.eigvalsh(ref), 1e-10, 1e-12, "eigenvalues")
    assert_close(K.inverse(lam, "pi").to_dense() @ D, np.eye(K.n), 1e-9, 1e-9, "pi inverse")
    assert_close(K.damped(lam, "pi").logdet(), np.linalg.slogdet(D)[1], 1e-10, 1e-10, "pi logdet")
    # pi = 1 when the factors' mean eigenvalues agree: then pi equals factored damping
    b = K.blocks[0]
    t = np.trace(b.A) / len(b.A) * len(b.S) / np.trace(b.S)
    same = rp.KroneckerBlock(b.S * t, b.A, b.layout)
    assert_close(same.dense(lam, "pi"), same.dense(lam, "factored"), 1e-12, 1e-14, "pi = 1")


def test_pi_damping_refuses_a_zero_factor():
    model, params, X, y, loss = make("mlp-tanh", "ce-mean", n=2)
    b = rp.kfac(model, params, X, y, loss).blocks[0]
    zero = rp.KroneckerBlock(np.zeros_like(b.S), b.A, b.layout)
    with pytest.raises(np.linalg.LinAlgError, match="pi-damping .* needs positive factor traces"):
        zero.dense(0.1, "pi")
    with pytest.raises(ValueError, match="'exact' .* is not a Kronecker product"):
        b.damped_factors(0.1, "exact")


@pytest.mark.parametrize("arch", ["mlp-sigmoid-softplus", "conv-tanh-avgpool"])
@pytest.mark.parametrize("approx", ["expand", "reduce"])
def test_bias_kept_out_of_a(arch, approx):
    """``bias="separate"``: weight block ``S kron A_W`` with ``A_W`` the input second
    moment without the constant, bias block ``S``, no coupling between them."""
    model, params, X, y, loss = make(arch, "mse-mean", n=5)
    folded = rp.kfac(model, params, X, y, loss, approx=approx)
    sep = rp.kfac(model, params, X, y, loss, approx=approx, bias="separate")
    D = sep.to_dense()
    off = model.param_offsets()
    layers = [j for j, layer in enumerate(model) if isinstance(layer, rp.nn.AffineLayer)]
    blocks = iter(sep.blocks)
    for j, fb in zip(layers, folded.blocks):
        layer = model[j]
        wb = next(blocks)
        w = slice(off[j], off[j] + layer.n_weight)
        assert wb.layout.offset == off[j] and wb.layout.size == layer.n_weight
        assert_close(wb.dense(), np.kron(fb.S, fb.A[: wb.A.shape[0], : wb.A.shape[0]]), 1e-12, 1e-14, "weight block")
        if layer.bias:
            bb = next(blocks)
            bsl = slice(off[j] + layer.n_weight, off[j + 1])
            assert_close(D[bsl, bsl], fb.S, 1e-12, 1e-14, "bias block = S")
            assert np.all(D[w, bsl] == 0) and np.all(D[bsl, w] == 0)
            assert np.array_equal(bb.A, np.ones((1, 1)))
    # first layer of the MLP: A_W is X^T X / N, from the data alone
    if arch.startswith("mlp"):
        assert_close(sep.blocks[0].A, X.T @ X / len(X), 1e-12, 1e-14, "A_W = X^T X / N")
    # EKFAC with the same split: eigenvalues are diag(Q^T F Q) of the exact GGN's blocks
    E = rp.ekfac(model, params, X, y, loss, approx=approx, bias="separate")
    G = rp.ggn(model, params, X, y, loss)
    for eb in E.blocks:
        s = slice(eb.layout.offset, eb.layout.offset + eb.layout.size)
        Q = eb.layout.to_flat_order(np.kron(eb.US, eb.UA))
        assert_close(eb.scales.ravel()[eb.layout.perm], np.diag(Q.T @ G[s, s] @ Q), 1e-10, 1e-12,
                     "EKFAC eigenvalues, bias apart")
