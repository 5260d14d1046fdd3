"""The catalogue of diagnosis by neighbouring quantities (docs/conventions.md §9a): every
entry planted as a bug and named.

Each buggy result is computed in the test itself, from torch's autograd (per-sample
Jacobians and gradients, a float32 Hessian-vector product), from NumPy on refprune's
own results (a triangle, a permutation, a block mask, a scaling), or from refprune's
building blocks with another option (K-FAC "reduce"); it is then given to ``diagnose``
(or ``diagnose_pairs``) as the harness gives a failing result, with the quantity
named, and the sentence must name the bug."""

import numpy as np
import pytest

import refprune as rp
from refprune import conformance as cf
from refprune.conformance import neighbours as nb
from refprune.conformance.diagnosis import compare_pairs, diagnose, diagnose_pairs


def _torch():
    """torch, or a skip: only the tests that plant a bug through autograd need it (the
    others run without it, as in CI and under mutmut, docs/testing.md)."""
    return pytest.importorskip("torch")

TOL = cf.DEFAULT_RTOL
KFAC = dict(curvature="ggn", approx="expand", bias="fold")


def ref_of(name, case, options=None):
    fn = cf.QUANTITIES[name][0]
    out = fn(case, dict(KFAC, **(options or {}))) if name in ("kfac", "kfac_factors", "ekfac") else fn(case)
    return out if name == "kfac_factors" else np.asarray(out, dtype=float)


def named(name, case, got, options=None):
    """The diagnosis of ``got`` for quantity ``name``, as one string; it must fail first."""
    ref = ref_of(name, case, options)
    assert cf.relative_error(got, ref) > TOL  # the planted bug is a real failure
    opts = dict(KFAC, **(options or {})) if name in ("kfac", "ekfac") else None
    return " | ".join(diagnose(got, ref, case, TOL, quantity=name, options=opts))


def named_pairs(case, got, options=None):
    opts = dict(KFAC, **(options or {}))
    ref = ref_of("kfac_factors", case, opts)
    err, notes = compare_pairs(got, ref, case, TOL, opts)
    assert err > TOL
    return " | ".join(notes)


def _fd_jacobian(case):
    """``f (N, C)`` and ``J (N, C, n)`` from refprune's forward pass alone, by the
    five-point central difference ``(8 (f(+h) - f(-h)) - (f(+2h) - f(-2h))) / (12 h)``
    (truncation error O(h^4): about 1e-13 at h = 1e-3 for the zoo's smooth networks)."""
    model, theta, X = case.model, case.theta, case.X
    shapes = model.param_shapes()
    off = np.cumsum([0] + [int(np.prod(s)) for s in shapes])

    def f(t):
        return model([t[off[i] : off[i + 1]].reshape(s) for i, s in enumerate(shapes)], X)

    h = 1e-3
    cols = []
    for i in range(len(theta)):
        e = np.zeros(len(theta))
        e[i] = h
        cols.append((8 * (f(theta + e) - f(theta - e)) - (f(theta + 2 * e) - f(theta - 2 * e))) / (12 * h))
    return f(theta), np.stack(cols, axis=-1)


def torch_parts(case):
    """Per-sample outputs ``f (N, C)``, Jacobians ``J (N, C, n)`` and the unscaled
    per-sample gradients ``g_n (N, n)`` by torch's autograd (without torch: by
    :func:`_fd_jacobian`), ``R`` by hand."""
    try:
        import torch
    except ModuleNotFoundError:  # no torch (CI, mutation runs): a five-point stencil instead
        fn, J = _fd_jacobian(case)
    else:
        tm, tloss, X, y = case.torch()
        params = list(tm.parameters())
        f = tm(X)
        rows = []
        for i in range(f.shape[0]):
            for k in range(f.shape[1]):
                gr = torch.autograd.grad(f[i, k], params, retain_graph=True)
                rows.append(torch.cat([g.reshape(-1) for g in gr]).numpy())
        J = np.array(rows).reshape(f.shape[0], f.shape[1], -1)
        fn = f.detach().numpy()
    n, c = fn.shape
    if isinstance(case.loss, rp.CrossEntropyLoss):
        p = np.exp(fn - fn.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        dl = p - np.eye(c)[case.y]
        R = 1 / n if case.loss.reduction == "mean" else 1.0
    elif isinstance(case.loss, rp.BCEWithLogitsLoss):
        p = 1 / (1 + np.exp(-fn))  # sigmoids of the logits
        dl = p - case.y
        R = 1 / (n * c) if case.loss.reduction == "mean" else 1.0
    else:
        p = None
        dl = 2 * (fn - case.y)
        R = 1 / (n * c) if case.loss.reduction == "mean" else 1.0
    g = np.einsum("nc,nci->ni", dl, J)
    return fn, J, g, p, R


def col_major(model):
    """Weight indices in column-major order, written out with index arithmetic."""
    P = list(range(model.n_params))
    off = model.param_offsets()
    for j, layer in enumerate(model):
        if type(layer).__name__ in ("Linear", "Conv2d"):
            c = layer.out_units
            r = layer.n_weight // c
            for i_in in range(r):
                for o in range(c):
                    P[off[j] + i_in * c + o] = off[j] + o * r + i_in
    return np.array(P)


# ---------------------------------------------------------------------------------------
# H, GGN, residual and the Lambda forms


def test_hessian_without_its_residual_is_the_ggn():
    c = cf.make_case("mlp-tanh", "ce-mean")
    _, J, _, p, R = torch_parts(c)
    G = R * np.einsum("nci,ncd,ndj->ij", J, p[:, :, None] * np.eye(3) - p[:, :, None] * p[:, None, :], J)
    assert "matches refprune's GGN (the Hessian without its residual" in named("hessian", c, G)


def test_hessian_without_its_gauss_newton_part_is_the_residual():
    c = cf.make_case("mlp-tanh", "mse-sum")
    H = rp.hessian(*c.args())
    _, J, _, _, R = torch_parts(c)
    resid = H - R * 2 * np.einsum("nci,ncj->ij", J, J)
    assert "matches refprune's residual H - GGN alone" in named("hessian", c, resid)


def test_softmax_lambda_taken_as_diag_p():
    c = cf.make_case("mlp-tanh", "ce-mean")
    _, J, _, p, R = torch_parts(c)
    got = R * np.einsum("nci,nc,ncj->ij", J, p, J)
    assert "the softmax Lambda taken as diag(p)" in named("ggn", c, got)


def test_lambda_identity_against_2i_for_squared_error():
    c = cf.make_case("mlp-tanh", "mse-mean")
    _, J, _, _, R = torch_parts(c)
    got = R * np.einsum("nci,ncj->ij", J, J)
    assert "Lambda = I for squared error, where refprune (like PyTorch's MSELoss) has 2 I" in named("ggn", c, got)


@pytest.mark.parametrize("planted, words", [
    ("diag_p", "the sigmoid Lambda taken as diag(p) (the (1 - p) of binary cross-entropy's p (1 - p) missing)"),
    ("quarter", "Lambda = I/4 (the sigmoid's curvature at f = 0 taken for every output)"),
    ("softmax", "a softmax over the C outputs (diag(p) - p p^T) in place of binary cross-entropy's independent "
                "sigmoids")])
def test_binary_cross_entropy_lambda_forms(planted, words):
    c = cf.make_case("mlp-tanh", "bce-mean")
    f, J, _, p, R = torch_parts(c)
    C = f.shape[1]
    if planted == "diag_p":
        lam = p[:, :, None] * np.eye(C)
    elif planted == "quarter":
        lam = np.broadcast_to(np.eye(C) / 4, (len(f), C, C))
    else:
        q = np.exp(f - f.max(1, keepdims=True))
        q /= q.sum(1, keepdims=True)
        lam = q[:, :, None] * np.eye(C) - q[:, :, None] * q[:, None, :]
    text = named("ggn", c, R * np.einsum("nci,ncd,ndj->ij", J, lam, J))
    assert words in text and "squared error" not in text


def test_binary_cross_entropy_factors_are_not_called_squared_error():
    """BCE 'mean' divides by N C like MSELoss, but has no Lambda = 2 I: a sum over all
    elements, and nngeometry's mean over samples only, are named as BCE's."""
    c = cf.make_case("mlp-tanh", "bce-mean", n=4)  # N = 4, C = 3: the two factors are told apart
    _, _, g, _, R = torch_parts(c)
    n, C = 4, 3
    F = R * g.T @ g
    text = named("empirical_fisher", c, n * C * F)
    assert "a sum where BCEWithLogitsLoss 'mean' divides by N C" in text and "squared error" not in text
    text = named("ggn", c, C * rp.ggn(*c.args()))
    assert "a mean over samples only (nngeometry's and ASDL's convention) where BCEWithLogitsLoss" in text
    assert "Lambda = I" not in text and "squared error" not in text


# ---------------------------------------------------------------------------------------
# the Fisher family and the squared mini-batch gradient


def test_empirical_fisher_where_the_fisher_is_meant():
    c = cf.make_case("mlp-tanh", "ce-mean")
    _, _, g, _, R = torch_parts(c)
    assert "matches refprune's empirical Fisher" in named("fisher", c, R * g.T @ g)


def test_fisher_where_the_empirical_fisher_is_meant():
    c = cf.make_case("mlp-tanh", "ce-mean")
    _, J, _, p, R = torch_parts(c)
    F = R * np.einsum("nci,ncd,ndj->ij", J, p[:, :, None] * np.eye(3) - p[:, :, None] * p[:, None, :], J)
    assert "matches refprune's GGN (= the true Fisher)" in named("empirical_fisher", c, F)


def test_mc_fisher_where_the_empirical_fisher_is_meant():
    c = cf.make_case("mlp-tanh", "ce-mean")
    fn, J, _, p, R = torch_parts(c)
    gs = [np.einsum("nc,nci->ni", p - np.eye(3)[t], J) for t in c.targets]  # g at each sampled label
    mc = R * sum(x.T @ x for x in gs) / len(gs)
    assert "matches refprune's MC Fisher over case.targets" in named("empirical_fisher", c, mc)


def test_squared_mini_batch_gradient_matrix_and_diagonal():
    c = cf.make_case("mlp-tanh", "ce-mean")
    _, _, g, _, R = torch_parts(c)
    gb = R * g.sum(0)
    assert "matches the squared mini-batch gradient grad grad^T" in named("empirical_fisher", c, np.outer(gb, gb))
    text = named("empirical_fisher_diagonal", c, gb**2)
    assert "matches the squared mini-batch gradient grad**2" in text and "bias" not in text


def test_empirical_fisher_with_r_applied_twice():
    c = cf.make_case("mlp-tanh", "ce-mean")
    _, _, g, _, R = torch_parts(c)
    rg = R * g  # rows of refprune's per_sample_grads
    assert "off by a constant factor 0.333333: R = 0.333333 applied twice" in named("empirical_fisher", c,
                                                                                    rg.T @ rg)


def test_one_over_c_of_squared_error_mean_is_not_lambda_for_an_empirical_fisher():
    c = cf.make_case("linear", "mse-mean")  # C = 2: 1/C = 1/2, the factor of Lambda = I for a GGN
    _, _, g, _, _ = torch_parts(c)
    n, C = 3, 2
    gm = g / C  # per-sample gradients of MSELoss('mean') on one sample: divided by C
    text = named("empirical_fisher", c, gm.T @ gm / n)
    assert "off by a constant factor 0.5: 1/C = 1/2: per-sample gradients of a loss averaged over the C = 2" in text
    assert "Lambda" not in text


def test_n_factor_from_gradients_multiplied_by_n_on_a_sum_loss():
    c = cf.make_case("mlp-tanh", "ce-sum")
    _, _, g, _, _ = torch_parts(c)
    n = 3
    gn = n * g  # a library that multiplies by N, assuming a mean loss
    text = named("empirical_fisher", c, gn.T @ gn / n)
    assert "off by a constant factor 3: N = 3: gradients multiplied by N as if the loss took the mean" in text


# ---------------------------------------------------------------------------------------
# K-FAC: expand and reduce, bias, the factor pairs


CONV = ("conv-stride2-relu-maxpool", "ce-mean")  # Conv2d with T = 4 locations, then Linear


def test_reduce_instead_of_expand_in_the_dense_matrix_and_the_pairs():
    c = cf.make_case(*CONV)
    red = rp.kfac(*c.args(), approx="reduce")
    assert "with approx='reduce' where 'expand' was asked for" in named("kfac", c, red.to_dense())
    pairs = [(b.S, b.A) for b in red.blocks]
    assert "approx='reduce' where 'expand' was asked for" in named_pairs(c, pairs)
    exp = [(b.S, b.A) for b in rp.kfac(*c.args()).blocks]
    assert "approx='expand' where 'reduce' was asked for" in named_pairs(c, exp, dict(approx="reduce"))


def test_s_and_a_swapped():
    c = cf.make_case(*CONV)
    ref = ref_of("kfac_factors", c)
    assert named_pairs(c, [(A, S) for S, A in ref]).startswith("(A, S) swapped in every pair")
    one = [(A, S) if i == 0 else (S, A) for i, (S, A) in enumerate(ref)]
    assert "layer pair 0: (A, S) swapped" in named_pairs(c, one)
    # the dense matrix with A kron S in each layer's block
    op = rp.kfac(*c.args())
    M = np.zeros((c.n_params, c.n_params))
    for b in op.blocks:
        lay = b.layout
        c_out, p = b.S.shape[0], b.A.shape[0]
        # index of each flat parameter in vec([W | b]) row-major, then in the swapped vec
        rows = lay.perm
        K = np.kron(b.A, b.S)
        idx = lay.offset + np.arange(lay.size)
        M[np.ix_(idx, idx)] = K[np.ix_(rows, rows)]
        assert c_out * p == lay.size
    assert "S and A swapped: A kron S per layer" in named("kfac", c, M)


def test_a_constant_on_s_alone_and_on_a_alone():
    c = cf.make_case("mlp-tanh", "mse-mean")
    ref = ref_of("kfac_factors", c)
    text = named_pairs(c, [(S / 2, A) for S, A in ref])
    assert "S alone off by a constant factor 0.5: Lambda = I for squared error" in text
    text = named_pairs(c, [(S, 3 * A) for S, A in ref])
    assert "A alone off by a constant factor 3: N = 3: A summed over the samples" in text


def test_the_same_kronecker_product_split_as_a_over_t_and_t_s():
    c = cf.make_case(*CONV)
    ref = ref_of("kfac_factors", c)
    got = [(4 * ref[0][0], ref[0][1] / 4), ref[1]]
    assert "split differently: (A/T, T S) with T = 4" in named_pairs(c, got)


def test_t_c_2_and_r_twice_scalings_of_s():
    c = cf.make_case(*CONV)
    ref = ref_of("kfac_factors", c)
    assert "S alone off by a constant factor 4: T = 4: S summed over the locations" in named_pairs(
        c, [(4 * ref[0][0], ref[0][1]), ref[1]])
    assert "S alone off by a constant factor 0.333333: R = 0.333333 applied twice" in named_pairs(
        c, [(S / 3, A) for S, A in ref])
    m = cf.make_case("mlp-tanh", "mse-mean", n=4)  # C = 3 outputs, N = 4 samples: the factors differ
    ref = ref_of("kfac_factors", m)
    assert "S alone off by a constant factor 3: a mean over samples only where MSELoss 'mean' divides by N C" in \
        named_pairs(m, [(3 * S, A) for S, A in ref])
    assert "S alone off by a constant factor 2: Lambda = 4 I or a loss with 2 (f - y)^2" in named_pairs(
        m, [(2 * S, A) for S, A in ref])


def test_n_factor_on_s_for_a_sum_loss():
    c = cf.make_case("mlp-tanh", "ce-sum")
    ref = ref_of("kfac_factors", c)
    assert "S alone off by a constant factor 3: N = 3: gradients multiplied by N" in named_pairs(
        c, [(3 * S, A) for S, A in ref])


def test_centred_covariance_of_the_features():
    c = cf.make_case("mlp-tanh", "ce-mean")  # Linear(3, 4), Tanh, Linear(4, 3): inputs by hand
    W0, b0 = c.params[0], c.params[1]
    x0 = np.hstack([c.X, np.ones((3, 1))])
    x1 = np.hstack([np.tanh(c.X @ W0.T + b0), np.ones((3, 1))])
    ref = ref_of("kfac_factors", c)
    got = [(ref[0][0], np.cov(x0, rowvar=False)), (ref[1][0], np.cov(x1, rowvar=False))]
    text = named_pairs(c, got)
    assert "A matches the A of refprune's factors centred: np.cov" in text


def test_bias_separate_missing_bias_pairs_and_folded_pairs():
    c = cf.make_case("mlp-tanh", "ce-mean")
    sep = dict(bias="separate")
    ref = ref_of("kfac_factors", c, sep)
    weights_only = [ref[0], ref[2]]
    text = named_pairs(c, weights_only, sep)
    assert "the bias pairs are missing; with bias='separate' every layer with a bias has a second pair" in text
    assert "one per Linear/Conv2d layer" not in text
    folded = ref_of("kfac_factors", c)
    assert "one per layer with the bias folded into A (bias='fold'), where bias='separate' was asked for" in \
        named_pairs(c, folded, sep)
    assert "(bias='separate'), where bias='fold' was asked for" in named_pairs(c, ref)
    dense = rp.kfac(*c.args(), bias="separate").to_dense()
    assert "with bias='separate' where 'fold' was asked for" in named("kfac", c, dense)


def test_ekfac_scales_from_the_squared_mini_batch_gradient():
    c = cf.make_case("mlp-tanh", "ce-mean")
    opts = dict(curvature="empirical_fisher")
    op = rp.ekfac(*c.args(), **opts)
    g = rp.grad(*c.args())
    M = np.zeros((c.n_params, c.n_params))
    for b in op.blocks:
        lay = b.layout
        W = g[lay.offset : lay.offset + lay.size]
        cout = b.US.shape[0]
        Gm = np.hstack([W[: lay.size - cout].reshape(cout, -1), W[lay.size - cout :, None]])  # [W | b]
        kappa = (b.US.T @ Gm @ b.UA) ** 2
        U = np.kron(b.US, b.UA)
        K = U @ np.diag(kappa.ravel()) @ U.T
        idx = lay.offset + np.arange(lay.size)
        M[np.ix_(idx, idx)] = K[np.ix_(lay.perm, lay.perm)]
    assert "EKFAC with scales from the squared mini-batch gradient" in named("ekfac", c, M, opts)


# ---------------------------------------------------------------------------------------
# layout, triangles, blocks, float32, saliencies


def test_hessian_with_its_weights_in_column_major_order_and_a_transposed_gradient():
    c = cf.make_case("mlp-tanh", "ce-mean")
    P = col_major(c.model)
    H = rp.hessian(*c.args())
    assert "every weight in column-major order" in named("hessian", c, H[np.ix_(P, P)])
    assert "every weight in column-major order" in named("grad", c, rp.grad(*c.args())[P])


@pytest.mark.parametrize("half, words", [(np.triu, "only the upper triangle"), (np.tril, "only the lower triangle"),
                                         (lambda H: np.triu(H) + np.triu(H).T, "diagonal counted twice")])
def test_one_triangle_only(half, words):
    c = cf.make_case("mlp-tanh", "mse-sum")
    assert words in named("hessian", c, half(rp.hessian(*c.args())))


def test_only_the_diagonal_blocks_per_layer():
    c = cf.make_case("mlp-tanh", "ce-mean")
    G = rp.ggn(*c.args())
    got = np.zeros_like(G)
    got[:16, :16], got[16:, 16:] = G[:16, :16], G[16:, 16:]  # Linear(3, 4): 16 parameters, Linear(4, 3): 15
    assert "only the diagonal blocks of each layer" in named("ggn", c, got)


def test_an_hvp_computed_in_float32():
    torch = _torch()
    c = cf.make_case("mlp-tanh", "ce-mean")
    tm, tloss, X, y = c.torch()
    tm = tm.float()
    params = list(tm.parameters())
    loss = tloss(tm(X.float()), y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    v = torch.from_numpy(c.v.astype(np.float32))
    gv = torch.cat([gr.reshape(-1) for gr in grads]) @ v
    hv = torch.cat([h.reshape(-1) for h in torch.autograd.grad(gv, params)]).numpy()
    assert named("hvp", c, hv).startswith("computed in float32: every entry is a float32 number")


def test_missing_half_in_the_saliencies():
    c = cf.make_case("mlp-tanh", "mse-sum")  # a factor 2 would otherwise read as Lambda = 4 I
    th = c.theta
    h = np.diag(rp.hessian(*c.args()))
    assert "without the 1/2 (OBD's saliency is theta_q^2 H_qq / 2; a missing 1/2)" in named("obd_saliencies", c,
                                                                                             th**2 * h)
    Hd = rp.ggn(*c.args()) + c.obs_damping * np.eye(c.n_params)
    assert "a missing 1/2" in named("obs_saliencies", c, th**2 / np.diag(np.linalg.inv(Hd)))


# ---------------------------------------------------------------------------------------
# the machinery


def test_old_behaviour_without_a_quantity_and_no_match_on_noise():
    c = cf.make_case("mlp-tanh", "ce-mean")
    H = rp.hessian(*c.args())
    assert not any(d.startswith("matches") for d in diagnose(rp.ggn(*c.args()), H, c, TOL))  # no quantity
    noise = H + 1e-3 * np.random.default_rng(0).standard_normal(H.shape)
    assert not any(d.startswith("matches") for d in diagnose(noise, H, c, TOL, quantity="hessian"))


def test_register_refuses_a_second_registration_and_helpers():
    with pytest.raises(ValueError, match="has neighbours already"):
        nb.register("hessian")(lambda case, options: [])
    with pytest.raises(TypeError, match="register: name must be"):
        nb.register(3)
    W = np.array([[1.0, 2.0], [0.0, 3.0]])
    A = np.array([[2.0, 1.0], [1.0, 4.0]])
    assert nb.quadratic_forms(W, A).tolist() == [1 * 2 + 2 * 2 * 1 + 4 * 4, 9 * 4]
    assert nb.row_sum_shortcut(W, A).tolist() == [1 * 3 + 4 * 5, 9 * 5]
    ms = nb.moving_average([np.full((2, 2), 4.0)] * 2, 0.5, start="identity")
    assert np.allclose(ms[-1], 0.25 * np.eye(2) + 0.75 * 4)
    assert diagnose_pairs(ref_of("kfac_factors", c := cf.make_case("linear", "ce-mean")),
                          ref_of("kfac_factors", c), c, TOL, KFAC) == []


def test_kron_blocks_left_in_the_row_major_order_of_w_and_b():
    # np.kron(S, A) written into theta's block as it is: the rows of [W | b] row-major,
    # each unit's bias right after its weights (built here from the pairs alone, with
    # no re-indexing helper of refprune)
    for arch in (CONV, ("mlp-tanh", "ce-mean")):
        c = cf.make_case(*arch)
        M = np.zeros((c.n_params, c.n_params))
        start = 0
        for S, A in rp.kfac(*c.args()).factors():
            K = np.kron(S, A)
            M[start:start + len(K), start:start + len(K)] = K
            start += len(K)
        assert start == c.n_params
        assert "S kron A left in the row-major order of [W | b]" in named("kfac", c, M)


def test_a_factor_with_two_causes_on_the_case_names_both():
    # mlp-tanh/mse-mean has N = C = 3: a sum over samples (factor N) and a mean over the
    # samples only (factor C) give the same result there, so both must be named; on a
    # case with N != C only the true one is
    same = [c for c in cf.zoo() if c.name == "mlp-tanh/mse-mean"][0]
    assert same.X.shape[0] == same.y.shape[1] == 3
    ref = ref_of("grad", same)
    words = " | ".join(diagnose(3 * ref, ref, same, TOL, quantity="grad"))
    assert "a sum over samples where the loss takes the mean" in words
    assert "a mean over samples only where MSELoss 'mean' divides by N C" in words
    assert "these coincide on this case" in words
    apart = cf.make_case("mlp-tanh", "mse-mean", n=5)
    assert apart.X.shape[0] == 5 and apart.y.shape[1] == 3
    ref = ref_of("grad", apart)
    words = " | ".join(diagnose(5 * ref, ref, apart, TOL, quantity="grad"))
    assert "a sum over samples where the loss takes the mean" in words and "coincide" not in words
    words = " | ".join(diagnose(3 * ref, ref, apart, TOL, quantity="grad"))
    assert "divides by N C" in words and "sum over samples" not in words
