"""Every neighbour of ``refprune.conformance.neighbours`` against a list written out by
hand: its description word for word (docs/conventions.md §9a) and its array from a
second route (Jacobians by a five-point stencil on the forward pass, the dense exact
matrices of ``refprune.curvature.exact`` where the neighbour takes a diagonal, index
arithmetic for permutations and masks).  The catalogue tests
(tests/test_diagnosis_catalogue.py) check that a planted bug is named; these check the
neighbours that no planted bug reaches, and the helpers directly."""

import numpy as np
import pytest

import refprune as rp
from refprune import conformance as cf
from refprune.conformance import neighbours as nb
from test_diagnosis_catalogue import _fd_jacobian, col_major

TOL = dict(rtol=1e-9, atol=1e-12)


def by_hand(case):
    """``f``, ``J`` (stencil), unscaled per-sample gradients ``G`` and ``R`` of a case."""
    f, J = _fd_jacobian(case)
    n, c = f.shape
    if isinstance(case.loss, rp.CrossEntropyLoss):
        p = np.exp(f - f.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        dl, R = p - np.eye(c)[case.y], (1 / n if case.loss.reduction == "mean" else 1.0)
    elif isinstance(case.loss, rp.BCEWithLogitsLoss):
        p = 1 / (1 + np.exp(-f))
        dl, R = p - case.y, (1 / (n * c) if case.loss.reduction == "mean" else 1.0)
    else:
        p = None
        dl, R = 2 * (f - case.y), (1 / (n * c) if case.loss.reduction == "mean" else 1.0)
    return f, J, np.einsum("nc,nci->ni", dl, J), p, R


def curv(J, lam, R):
    """``R sum_n J_n^T lam_n J_n``, written as a loop over samples."""
    return R * sum(J[i].T @ lam[i] @ J[i] for i in range(len(J)))


def assert_list(got, want):
    assert [d for d, _ in got] == [d for d, _ in want]
    for (d, a), (_, b) in zip(got, want):
        assert np.allclose(np.asarray(a, dtype=float), b, **TOL), d


def dense(case):
    a = case.args()
    return dict(hessian=rp.hessian(*a), ggn=rp.ggn(*a), mc=rp.fisher(*a, curvature="mc_fisher", targets=case.targets))


CE = ("mlp-tanh", "ce-mean")
LAM_CE = ("the GGN with the softmax Lambda taken as diag(p) (the - p p^T of the cross-entropy Hessian missing)")
EF = ("refprune's empirical Fisher (gradients at the observed targets, not an expectation over the model's "
      "distribution)")
MC = "refprune's MC Fisher over case.targets (sampled targets, not the exact expectation)"
GGN = "refprune's GGN (= the true Fisher)"
HESS = "refprune's Hessian (the residual included where only the Gauss-Newton part belongs)"


def test_fisher_family_neighbours():
    case = cf.make_case(*CE)
    f, J, G, p, R = by_hand(case)
    D = dense(case)
    ef = R * G.T @ G
    lam = curv(J, [np.diag(q) for q in p], R)
    for q in ("ggn", "fisher"):
        assert_list(nb.NEIGHBOURS[q](case, None), [(EF, ef), (MC, D["mc"]), (LAM_CE, lam), (HESS, D["hessian"])])
    assert_list(nb.NEIGHBOURS["mc_fisher"](case, None), [(GGN, D["ggn"]), (EF, ef), (LAM_CE, lam),
                                                         (HESS, D["hessian"])])
    g = R * G.sum(0)
    n = len(G)
    Dc = G - G.mean(0)
    assert_list(nb.NEIGHBOURS["empirical_fisher"](case, None), [
        (GGN, D["ggn"]), (MC, D["mc"]), (HESS, D["hessian"]),
        ("the squared mini-batch gradient grad grad^T (the outer product of the averaged gradient, not the average "
         "of the per-sample outer products)", np.outer(g, g)),
        ("the squared mini-batch gradient divided by R, grad grad^T / R (the outer product of the summed gradient "
         "scaled once by R)", np.outer(g, g) / R),
        ("the centred covariance of the per-sample gradients divided by N - 1 (np.cov), where refprune takes the "
         "uncentred mean of the outer products", R * n * np.cov(G, rowvar=False)),
        ("the centred covariance of the per-sample gradients divided by N (np.cov(bias=True)), where refprune "
         "takes the uncentred mean of the outer products", R * Dc.T @ Dc)])


def test_diagonal_family_neighbours():
    case = cf.make_case(*CE)
    f, J, G, p, R = by_hand(case)
    D = dense(case)
    ef = R * (G**2).sum(0)
    lam = np.diag(curv(J, [np.diag(q) for q in p], R))
    H = ("refprune's Hessian diagonal (the residual included)", np.diag(D["hessian"]))
    GG = ("refprune's GGN diagonal (the Hessian diagonal without its residual)", np.diag(D["ggn"]))
    E = ("refprune's empirical Fisher diagonal (squared gradients at the observed targets)", ef)
    M = ("refprune's MC Fisher diagonal over case.targets", np.diag(D["mc"]))
    L = (LAM_CE.replace("the GGN", "the GGN diagonal"), lam)
    assert_list(nb.NEIGHBOURS["hessian_diagonal"](case, None), [GG, E, M, L])
    assert_list(nb.NEIGHBOURS["ggn_diagonal"](case, None), [H, E, M, L])
    assert_list(nb.NEIGHBOURS["mc_fisher_diagonal"](case, None), [H, GG, E])
    g = R * G.sum(0)
    assert_list(nb.NEIGHBOURS["empirical_fisher_diagonal"](case, None), [
        H, GG, M,
        ("the squared mini-batch gradient grad**2 (the square of the averaged gradient, not the average of the "
         "per-sample squares)", g**2),
        ("the squared mini-batch gradient divided by R, grad**2 / R", g**2 / R),
        ("the per-sample gradients' variance divided by N - 1 (np.var(ddof=1): centred), where refprune takes the "
         "uncentred mean of the squares", R * len(G) * np.var(G, axis=0, ddof=1))])


def test_lambda_forms_of_bce_and_mse():
    case = cf.make_case("mlp-tanh", "bce-mean")
    f, J, G, p, R = by_hand(case)
    n, c = f.shape
    s = np.exp(f - f.max(1, keepdims=True))
    s /= s.sum(1, keepdims=True)
    got = nb.NEIGHBOURS["ggn"](case, None)[2:5]
    assert_list(got, [
        ("the GGN with the sigmoid Lambda taken as diag(p) (the (1 - p) of binary cross-entropy's p (1 - p) missing)",
         curv(J, [np.diag(q) for q in p], R)),
        ("the GGN with Lambda = I/4 (the sigmoid's curvature at f = 0 taken for every output)",
         curv(J, [np.eye(c) / 4] * n, R)),
        ("the GGN with a softmax over the C outputs (diag(p) - p p^T) in place of binary cross-entropy's "
         "independent sigmoids", curv(J, [np.diag(q) - np.outer(q, q) for q in s], R))])
    case = cf.make_case("mlp-tanh", "mse-sum")
    f, J, G, p, R = by_hand(case)
    got = nb.NEIGHBOURS["ggn"](case, None)[2:3]
    assert_list(got, [("the GGN with Lambda = I for squared error, where refprune (like PyTorch's MSELoss) has 2 I",
                       curv(J, [np.eye(f.shape[1])] * len(f), R))])


COLS = ("refprune's result with every weight in column-major order (W^T stored, or a Fortran-order ravel; refprune "
        "and PyTorch store weight as (out, in) row-major)")


def test_generic_neighbours_by_index_arithmetic():
    case = cf.make_case(*CE)  # Linear(3, 4): weight 0..11, bias 12..15; Linear(4, 3): weight 16..27, bias 28..30
    n = case.n_params
    rng = np.random.default_rng(1)
    M = rng.standard_normal((n, n))
    P = col_major(case.model)
    layer = np.zeros((n, n), bool)
    layer[:16, :16] = layer[16:, 16:] = True
    array = np.zeros((n, n), bool)
    for a, b in ((0, 12), (12, 16), (16, 28), (28, 31)):
        array[a:b, a:b] = True
    assert_list(nb.generic_neighbours(case, M), [
        (COLS, M[np.ix_(P, P)]),
        ("only the upper triangle of refprune's matrix (the lower half zero: one half of a symmetric matrix filled)",
         np.triu(M)),
        ("only the lower triangle of refprune's matrix (the upper half zero: one half of a symmetric matrix filled)",
         np.tril(M)),
        ("the upper triangle of refprune's matrix mirrored with its diagonal counted twice (U + U^T)",
         np.triu(M) + np.triu(M).T),
        ("only the diagonal blocks of each layer of refprune's matrix (the blocks between layers dropped)",
         np.where(layer, M, 0)),
        ("only the diagonal blocks of each parameter array of refprune's matrix (weight and bias apart, their "
         "coupling dropped)", np.where(array, M, 0))])
    assert np.array_equal(nb.block_mask(case.model), layer)
    assert np.array_equal(nb.block_mask(case.model, per="array"), array)
    v = rng.standard_normal(n)
    assert_list(nb.generic_neighbours(case, v), [(COLS, v[P])])
    V = rng.standard_normal((2, n))
    assert_list(nb.generic_neighbours(case, V), [(COLS, V[:, P])])
    assert nb.generic_neighbours(case, np.ones(n + 1)) == []
    assert nb.generic_neighbours(case, np.ones(())) == []


def test_block_mask_of_a_layer_without_bias_and_a_second_layer():
    model = rp.Sequential(rp.Linear(2, 2, bias=False), rp.Tanh(), rp.Linear(2, 1))
    want = np.zeros((7, 7), bool)
    want[:4, :4] = True
    want[4:, 4:] = True
    assert np.array_equal(nb.block_mask(model), want)
    want_a = np.zeros((7, 7), bool)
    want_a[:4, :4] = want_a[4:6, 4:6] = want_a[6:, 6:] = True
    assert np.array_equal(nb.block_mask(model, per="array"), want_a)


def test_small_helpers():
    conv, mlp = cf.make_case("conv-stride2-relu-maxpool", "ce-mean"), cf.make_case(*CE)
    assert nb._has_conv(conv) and not nb._has_conv(mlp)
    opts = dict(curvature="mc_fisher", approx="expand", bias="fold", other=1)
    kw = nb._kfac_kw(mlp, opts)
    assert set(kw) == {"curvature", "approx", "bias", "targets"} and kw["targets"] is mlp.targets
    assert "targets" not in nb._kfac_kw(mlp, dict(opts, curvature="empirical_fisher"))
    f, J, G, p, R = by_hand(mlp)
    D = dense(mlp)
    for cur, want in (("ggn", D["ggn"]), ("fisher", D["ggn"]), ("mc_fisher", D["mc"]),
                      ("empirical_fisher", R * G.T @ G)):
        assert np.allclose(nb._exact_of(mlp, dict(curvature=cur)), want, **TOL), cur
    # centred: np.cov of the per-sample gradients, times R N
    P = nb._parts(mlp)
    assert np.allclose(P.centred(1), R * len(G) * np.cov(G, rowvar=False), **TOL)
    assert np.allclose(P.centred(0), R * len(G) * np.cov(G, rowvar=False, bias=True), **TOL)


def test_quadratic_forms_and_the_shortcut_in_float64():
    W = [[2**32, 1]]  # as ints, w**2 = 2**64 overflows int64
    A = [[1, 0], [0, 1]]
    q, s = nb.quadratic_forms(W, A), nb.row_sum_shortcut(W, A)
    assert q.dtype == np.float64 and s.dtype == np.float64
    assert q.tolist() == [2.0**64 + 1] and s.tolist() == [2.0**64 + 1]
    big = [[2**70]]  # a Python int beyond int64: an object array unless converted
    assert nb.quadratic_forms([[1.0]], big).dtype == np.float64
    assert nb.quadratic_forms(big, [[1.0]]).dtype == np.float64
    assert nb.row_sum_shortcut([[1.0]], big).dtype == np.float64


def test_moving_average_by_hand():
    xs = [np.array([[1, 2], [3, 4]]), np.array([[5, 6], [7, 9]])]
    d = 0.25
    m1 = 0.75 * xs[0]
    m2 = d * m1 + 0.75 * xs[1]
    got = nb.moving_average(xs, d)
    assert got[0].dtype == np.float64 and np.array_equal(got[0], m1) and np.array_equal(got[1], m2)
    got = nb.moving_average(xs, d, start="identity")
    i1 = d * np.eye(2) + 0.75 * xs[0]
    assert np.array_equal(got[0], i1) and np.array_equal(got[1], d * i1 + 0.75 * xs[1])
    got = nb.moving_average(xs, d, start=[[4, 4], [4, 4]])
    s1 = d * 4 + 0.75 * xs[0]
    assert np.array_equal(got[1], d * s1 + 0.75 * xs[1])
    # zeros of the first value's shape, with a later value of another shape broadcast against them
    got = nb.moving_average([np.ones(2), np.ones((3, 2))], 0.5)
    assert got[0].tolist() == [0.5, 0.5] and got[1].shape == (3, 2)
    # ints: the average is a float, not truncated
    assert nb.moving_average([np.array([1])], 0.5)[0].tolist() == [0.5]
    assert nb.moving_average([np.array([1])], 0.5, start=np.array([1]))[0].tolist() == [1.0]
    assert nb.moving_average([[1]], 0.5, start=[1])[0].dtype == np.float64


def test_moving_average_refusals():
    with pytest.raises(ValueError) as e:
        nb.moving_average([], 0.5)
    assert str(e.value) == "moving_average: values must hold at least one array"
    with pytest.raises(ValueError) as e:
        nb.moving_average([np.ones((2, 3)), np.ones((3, 3))], 0.5, start="identity")
    assert str(e.value) == "moving_average: start='identity' needs square matrices, got shape (2, 3)"
    with pytest.raises(ValueError) as e:
        nb.moving_average([np.ones(3), np.ones((3, 3))], 0.5, start="identity")
    assert str(e.value) == "moving_average: start='identity' needs square matrices, got shape (3,)"
    with pytest.raises(ValueError) as e:
        nb.moving_average([np.ones((2, 2))], 0.5, start="ones")
    assert str(e.value) == "moving_average: start must be 'zero', 'identity' or an array, got 'ones'"
    # a square first value with a non-square later one is the caller's business
    assert len(nb.moving_average([np.ones((2, 2)), np.ones((2, 2))], 0.5, start="identity")) == 2


def test_register(monkeypatch):
    monkeypatch.setattr(nb, "NEIGHBOURS", dict(nb.NEIGHBOURS))

    def fn(case, options):
        return []

    assert nb.register("new quantity")(fn) is fn and nb.NEIGHBOURS["new quantity"] is fn
    with pytest.raises(TypeError) as e:
        nb.register("other")(3)
    assert str(e.value) == "register('other'): expected a callable fn(case, options), got int"
    with pytest.raises(ValueError) as e:
        nb.register("new quantity")(fn)
    assert str(e.value) == ("register: quantity 'new quantity' has neighbours already (fn); extend that function "
                            "instead of registering a second one")
    with pytest.raises(TypeError) as e:
        nb.register("")
    assert str(e.value) == "register: name must be a quantity name (a non-empty str), got ''"


# ---------------------------------------------------------------- K-FAC's variants and statistics

CONV = ("conv-stride2-relu-maxpool", "ce-mean")  # Conv2d (T = 4 locations) with a bias, then Linear


def _variants(case, opts, want):
    got = nb.kfac_variants(case, opts)
    assert [(d, o) for d, o, _ in got] == [(d, o) for d, o in want]
    for (d, o, op) in got:
        kw = {k: o[k] for k in ("curvature", "approx", "bias")}
        if o["curvature"] == "mc_fisher":
            kw["targets"] = case.targets
        assert np.allclose(op.to_dense(), rp.kfac(*case.args(), **kw).to_dense(), **TOL), d


def test_kfac_variants_written_out():
    case = cf.make_case(*CONV)
    base = dict(curvature="ggn", approx="expand", bias="fold")
    _variants(case, None, [
        ("refprune's K-FAC with approx='reduce' where 'expand' was asked for (KFC 'reduce': features averaged and "
         "gradients summed over the T locations)", dict(base, approx="reduce")),
        ("refprune's K-FAC with bias='separate' where 'fold' was asked for (the bias kept apart from the weights: a "
         "bias block S kron [1], no weight-bias coupling)", dict(base, bias="separate")),
        ("refprune's K-FAC of the empirical Fisher (curvature='empirical_fisher') where curvature='ggn' was asked "
         "for", dict(base, curvature="empirical_fisher")),
        ("refprune's K-FAC of the MC Fisher over case.targets (curvature='mc_fisher') where curvature='ggn' was "
         "asked for", dict(base, curvature="mc_fisher"))])
    other = dict(curvature="fisher", approx="reduce", bias="separate")
    _variants(case, other, [
        ("refprune's K-FAC with approx='expand' where 'reduce' was asked for (KFC 'expand': every location a sample "
         "of its own)", dict(other, approx="expand")),
        ("refprune's K-FAC with bias='fold' where 'separate' was asked for (the bias folded into A as a constant "
         "input 1)", dict(other, bias="fold")),
        ("refprune's K-FAC of the empirical Fisher (curvature='empirical_fisher') where curvature='fisher' was "
         "asked for", dict(other, curvature="empirical_fisher")),
        ("refprune's K-FAC of the MC Fisher over case.targets (curvature='mc_fisher') where curvature='fisher' was "
         "asked for", dict(other, curvature="mc_fisher"))])
    mc = dict(base, curvature="mc_fisher")
    got = [d for d, _, _ in nb.kfac_variants(case, mc)][2:]
    assert got == ["refprune's K-FAC of the GGN (= the Fisher) (curvature='ggn') where curvature='mc_fisher' was "
                   "asked for",
                   "refprune's K-FAC of the empirical Fisher (curvature='empirical_fisher') where "
                   "curvature='mc_fisher' was asked for"]


def test_kfac_variants_without_convolution_or_bias():
    mlp = cf.make_case(*CE)  # no locations: "expand" and "reduce" agree, no approx variant
    assert [o for _, o, _ in nb.kfac_variants(mlp, None)] == [
        dict(curvature="ggn", approx="expand", bias="separate"),
        dict(curvature="empirical_fisher", approx="expand", bias="fold"),
        dict(curvature="mc_fisher", approx="expand", bias="fold")]
    nobias = cf.build_case("nobias", rp.Sequential(rp.Linear(3, 2, bias=False)), (3,), "ce-mean")
    assert [o["curvature"] for _, o, _ in nb.kfac_variants(nobias, None)] == ["empirical_fisher", "mc_fisher"]


def test_factor_statistics_by_hand_and_chunk_by_chunk(monkeypatch):
    from refprune.curvature import kronecker

    case = cf.make_case(*CE)
    opts = dict(curvature="mc_fisher", approx="expand", bias="fold")
    stats, inp = nb.factor_statistics(case, opts)
    assert [type(layer).__name__ for layer, _, _ in stats] == ["Linear", "Linear"]
    # the first layer's features are the inputs with a constant 1 (the folded bias)
    assert np.array_equal(stats[0][1][:, :, 0], np.c_[case.X, np.ones(len(case.X))])
    # the columns are those of case.targets: S = R sum_(n, k) g g^T is K-FAC's S over the same targets
    op = rp.kfac(*case.args(), curvature="mc_fisher", targets=case.targets)
    for (layer, a, g), b in zip(stats, op.blocks):
        assert np.allclose(inp.scale * np.einsum("nkct,nkdt->cd", g, g), b.S, **TOL)
    # one sample per chunk: the chunks are joined in order
    monkeypatch.setattr(kronecker._d, "chunk_length", lambda *args: 1)
    chunked, _ = nb.factor_statistics(case, opts)
    for (l1, a1, g1), (l2, a2, g2) in zip(stats, chunked):
        assert l1 is l2 and np.array_equal(a1, a2) and np.array_equal(g1, g2)


def test_neighbours_in_float64_and_none_for_an_unchanged_layout():
    case = cf.make_case(*CE)
    for _, a in nb.generic_neighbours(case, np.eye(case.n_params, dtype=int)):
        assert a.dtype == np.float64
    # Linear(3, 1): W^T has the same flat order as W, so no column-major neighbour
    one = cf.build_case("one output", rp.Sequential(rp.Linear(3, 1)), (3,), "mse-mean")
    assert nb.generic_neighbours(one, np.ones(one.n_params)) == []


def test_block_mask_refuses_an_unknown_grouping():
    # before: any per= other than "array" silently gave the per-layer mask
    model = rp.Sequential(rp.Linear(2, 2))
    with pytest.raises(ValueError) as e:
        nb.block_mask(model, per="arrays")
    assert str(e.value) == "block_mask: per must be 'layer' or 'array', got 'arrays'"


def test_block_mask_of_three_layers():
    case = cf.make_case("mlp-sigmoid-softplus-nobias", "ce-mean")  # Linear(3, 3), Linear(3, 3, no bias), Linear(3, 2)
    sizes = [(0, 12, [(0, 9), (9, 12)]), (12, 21, [(12, 21)]), (21, 29, [(21, 27), (27, 29)])]
    assert case.n_params == 29
    layer = np.zeros((29, 29), bool)
    array = np.zeros((29, 29), bool)
    for a, b, arrays in sizes:
        layer[a:b, a:b] = True
        for c, d in arrays:
            array[c:d, c:d] = True
    assert np.array_equal(nb.block_mask(case.model), layer)
    assert np.array_equal(nb.block_mask(case.model, "array"), array)


def test_moving_average_is_float64_whatever_it_is_given():
    # decay 0 keeps only the latest value: still converted to float64
    assert nb.moving_average([np.array([3])], 0)[0].dtype == np.float64
    assert nb.moving_average([np.ones(1)], 0.5, start=[2**70])[0].dtype == np.float64
    # only the first value must be square for start='identity'; later ones broadcast against it
    got = nb.moving_average([np.ones((2, 2)), np.ones((2, 1))], 0.5, start="identity")
    assert got[1].tolist() == [[1.0, 0.75], [0.75, 1.0]]


def _centred_by_hand(case, opts):
    """docs §8's factors with the uncentred second moments replaced by np.cov, one
    sample per row: a location of a sample for "expand", a sample for "reduce"."""
    stats, inp = nb.factor_statistics(case, opts)
    out = []
    for layer, a, g in stats:
        n, p, T = a.shape
        k = g.shape[1]
        if opts["approx"] == "expand":
            ra = [a[i, :, t] for i in range(n) for t in range(T)]
            rg = [g[i, j, :, t] for i in range(n) for j in range(k) for t in range(T)]
        else:
            ra = [a[i].mean(axis=1) for i in range(n)]
            rg = [g[i, j].sum(axis=1) for i in range(n) for j in range(k)]
        A = np.cov(np.array(ra).T) if len(ra) > 1 else np.zeros((p, p))
        S = inp.scale * len(rg) * np.cov(np.array(rg).T) if len(rg) > 1 else np.zeros((g.shape[2],) * 2)
        if opts["bias"] == "separate" and layer.bias:
            out += [(S, A[:-1, :-1]), (S, A[-1:, -1:])]
        else:
            out.append((S, A))
    return out


@pytest.mark.parametrize("arch, n, opts", [
    (CONV[0], 3, dict(curvature="ggn", approx="expand", bias="fold")),
    (CONV[0], 3, dict(curvature="empirical_fisher", approx="reduce", bias="separate")),
    (CONV[0], 1, dict(curvature="ggn", approx="reduce", bias="fold")),  # one sample: A's covariance is zero
    (CONV[0], 1, dict(curvature="empirical_fisher", approx="reduce", bias="fold")),  # one column: S's as well
    (CONV[0], 2, dict(curvature="empirical_fisher", approx="reduce", bias="fold")),  # two: both covariances
    ("mlp-sigmoid-softplus-nobias", 3, dict(curvature="mc_fisher", approx="expand", bias="separate")),
])
def test_centred_factor_pairs_by_hand(arch, n, opts):
    case = cf.make_case(arch, "ce-mean", n=n)
    got = nb.centred_factor_pairs(case, opts)
    want = _centred_by_hand(case, opts)
    assert len(got) == len(want)
    for (S, A), (S2, A2) in zip(got, want):
        assert S.shape == S2.shape and A.shape == A2.shape
        assert np.allclose(S, S2, **TOL) and np.allclose(A, A2, **TOL)
