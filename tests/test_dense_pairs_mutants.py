"""``refprune.curvature.dense_pairs`` against its documented contracts: the one-product-per-pair
route gives exactly symmetric weight and bias sub-blocks on the diagonal (it multiplies only
the pairs ``c <= i`` of a symmetrized ``D``), takes one product per group of pairs of one
unit ``c`` (as many as the budget allows) and adds a later chunk of samples in row strips of
the largest size the budget allows (docs/derivations.md §12);
``view`` refuses a reshape that would copy.  Values are checked against ``einsum`` of the
defining sums, the block formula of the module docstring."""

import types

import numpy as np
import pytest

import refprune as rp
from refprune import derivatives as _d
from refprune.curvature import dense_pairs, exact


class _CountingNumpy(types.SimpleNamespace):
    """``numpy`` for ``dense_pairs`` with every ``matmul`` recorded as (rows, inner, columns)."""

    def __init__(self):
        super().__init__(products=[])

    def __getattr__(self, name):
        return getattr(np, name)

    def matmul(self, a, b, out=None):
        self.products.append((a.shape[-2], a.shape[-1], b.shape[-1]))
        return np.matmul(a, b) if out is None else np.matmul(a, b, out=out)


def _dense_bias_net():
    # the layer before two more nonlinear layers: its D[n] = J^T H J is symmetric only up
    # to rounding, so symmetry of the result comes from the route, not from the input
    model = rp.Sequential(rp.Linear(3, 4), rp.Tanh(), rp.Linear(4, 3), rp.Sigmoid(), rp.Linear(3, 2))
    rng = np.random.default_rng(0)
    params = [2.0 * p for p in model.init(0)]
    X = rng.standard_normal((5, 3))
    y = rng.integers(0, 2, 5)
    return model, params, X, y, rp.CrossEntropyLoss()


@pytest.mark.parametrize("chunk", [None, 40])
def test_pairs_route_diagonal_blocks_exactly_symmetric_with_biases(monkeypatch, chunk):
    monkeypatch.setattr(dense_pairs, "per_pair", lambda *a: True)
    if chunk is not None:
        monkeypatch.setattr(_d, "CHUNK_FLOATS", chunk)
    model, params, X, y, loss = _dense_bias_net()
    H = rp.hessian(model, params, X, y, loss)
    o = model.param_offsets()
    for l in exact._param_layers(model):
        block = H[o[l]:o[l + 1], o[l]:o[l + 1]]
        nw = model[l].n_weight
        # weights x weights: W[c, r, i, j] = sum_n D[n, c, i] U[n, r] U[n, j] = W[i, r, c, j]
        # holds exactly (the (i, c) sub-block is the (c, i) product), the transposes only to
        # rounding (a later chunk of samples adds a full product per pair)
        K = model[l].out_units
        W = block[:nw, :nw].reshape(K, nw // K, K, nw // K)
        for c in range(K):
            for i in range(c + 1, K):
                assert np.array_equal(W[i, :, c, :], W[c, :, i, :]), (l, c, i)
        # bias x bias: sum_n D[n, c, i] over the symmetrized D, the same sum for (c, i) and (i, c)
        assert np.array_equal(block[nw:, nw:], block[nw:, nw:].T), l
        assert np.max(np.abs(block - block.T)) <= 1e-15 * np.max(np.abs(block))


def _views_for(layer_l, layer_m, K):
    target = np.zeros((K * (layer_l.n_weight // layer_l.out_units) + (K if layer_l.bias else 0), layer_m.n_params))
    return target, dense_pairs._BlockViews(target, K, layer_l, layer_m)


def _pair_groups(n, K, Km, rm, budget, symmetric):
    """The groups ``(c, a, b)`` of pairs ``(c, a:b)`` that take one product each: as many
    pairs ``i`` as keep the scaled right factor (``n x (b - a) r_m``) within the budget, at
    least one, from ``i = c`` on for a diagonal block."""
    g = _largest(Km, lambda k: n * k * rm <= budget)
    return [(c, a, min(Km, a + g)) for c in range(K) for a in range(c if symmetric else 0, Km, g)]


@pytest.mark.parametrize("rl, rm, chunk", [(5, 3, 20), (5, 3, 4), (6, 1, 12), (6, 1, 4), (4, 1, 100), (4, 2, 400)])
def test_a_later_chunk_is_added_in_the_largest_row_strips_that_fit(monkeypatch, rl, rm, chunk):
    # budget = CHUNK_FLOATS // 4; the pairs of one c go in groups whose scaled right factor
    # (n x group r_m) fits, and each group's product is added (rows, group r_m) at a time with
    # rows = max(1, budget // (group r_m)) (at least one row), never more than r_l
    monkeypatch.setattr(_d, "CHUNK_FLOATS", chunk)
    budget = max(1, chunk // 4)
    layer_l, layer_m = rp.Linear(rl, 2, bias=False), rp.Linear(rm, 3, bias=False)
    n, K, Km = 4, 2, 3
    rng = np.random.default_rng(1)
    Ul, Um, D = rng.standard_normal((n, rl)), rng.standard_normal((n, rm)), rng.standard_normal((n, K, Km))
    target, views = _views_for(layer_l, layer_m, K)
    start = rng.standard_normal(target.shape)
    target[...] = start
    counting = _CountingNumpy()
    monkeypatch.setattr(dense_pairs, "np", counting)
    dense_pairs._pairs(views, Ul, Um, D, False, True)
    monkeypatch.undo()
    expected = []
    for c, a, b in _pair_groups(n, K, Km, rm, budget, False):
        cols = (b - a) * rm
        rows = min(rl, max(1, budget // cols))
        expected += [(min(rows, rl - r0), n, cols) for r0 in range(0, rl, rows)]
    assert counting.products == expected
    added = np.einsum("nci,nr,nj->crij", D, Ul, Um).reshape(K * rl, Km * rm)
    assert np.allclose(target - start, added, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("n, r, chunk", [(4, 3, 4000), (4, 3, 40), (4, 3, 4), (4, 5, 100), (1, 1, 12)])
def test_the_first_chunk_takes_one_product_per_group_of_pairs(monkeypatch, symmetric, n, r, chunk):
    # each group (c, a:b) is one product (r_l x n) @ (n x (b - a) r_m) written into the row
    # strip of c; a diagonal block multiplies only i >= c and copies sub-block (c, i) to (i, c)
    # (n = r = 1 with a budget of 3: one product of all three pairs, budget // (n r_m) = 3)
    monkeypatch.setattr(_d, "CHUNK_FLOATS", chunk)
    budget = max(1, chunk // 4)
    K = 3
    rng = np.random.default_rng(2)
    U = rng.standard_normal((n, r))
    D = rng.standard_normal((n, K, K))
    D = D + D.transpose(0, 2, 1)
    layer = rp.Linear(r, K, bias=False)
    target, views = _views_for(layer, layer, K)
    target[...] = np.nan
    counting = _CountingNumpy()
    monkeypatch.setattr(dense_pairs, "np", counting)
    dense_pairs._pairs(views, U, U, D, symmetric, False)
    monkeypatch.undo()
    assert counting.products == [(r, n, (b - a) * r) for _, a, b in _pair_groups(n, K, K, r, budget, symmetric)]
    assert np.allclose(target, np.einsum("nci,nr,nj->crij", D, U, U).reshape(target.shape), rtol=1e-13, atol=1e-13)
    if symmetric:
        W = target.reshape(K, r, K, r)
        for c in range(K):
            for i in range(c + 1, K):
                assert np.array_equal(W[i, :, c, :], W[c, :, i, :]), (c, i)


def test_view_refuses_a_reshape_that_copies_and_accepts_empty_blocks():
    a = np.zeros((4, 6))
    with pytest.raises(AssertionError, match=r"dense_pairs: a \(\(4, 4\), strides \(48, 8\)\) cannot be viewed as \(16,\)"):
        dense_pairs.view(a[:, :4], (16,))  # rows of 4 in a row stride of 6: only a copy
    v = dense_pairs.view(a[:2], (2, 2, 3))
    v[1, 0, 2] = 5.0
    assert a[1, 2] == 5.0
    # a block with no columns (a layer pair with nothing to write) has no memory to share
    assert dense_pairs.view(np.zeros((3, 0)), (3, 1, 0)).shape == (3, 1, 0)


def test_the_route_rule_between_its_two_terms():
    # N < 2 r_m + N r_m / (K_l K_m) worked by hand where each term decides
    assert not dense_pairs.per_pair(1200, 64, 64, 513, 513)  # 1200 > 1026 + 150.3 (3 r_m would pass)
    assert dense_pairs.per_pair(1100, 64, 64, 513, 513)      # 1100 < 1026 + 137.8
    assert dense_pairs.per_pair(2000, 4, 4, 513, 513)        # 2000 < 1026 + 64125 (N r_m, not N / r_m)
    assert not dense_pairs.per_pair(2000, 64, 64, 513)       # the count alone: 2000 > 1026 + 250.5


@pytest.mark.parametrize("n, r, expect_pairs", [(4, 128, True), (4, 10, False)])
def test_first_term_takes_the_route_the_rule_chooses(monkeypatch, n, r, expect_pairs):
    # (4, 128): 4 < 2 * 128 + 4 * 128 / 6 with 128 x 128 results per pair; (4, 10): the count
    # would choose pairs too, but 10 x 10 results are below PAIR_PRODUCT_MIN
    K, Km = 2, 3
    assert dense_pairs.per_pair(n, K, Km, r, r) == expect_pairs
    rng = np.random.default_rng(3)
    Ul, Um, D = rng.standard_normal((n, r)), rng.standard_normal((n, r)), rng.standard_normal((n, K, Km))
    layer_l, layer_m = rp.Linear(r, K, bias=False), rp.Linear(r, Km, bias=False)
    target, views = _views_for(layer_l, layer_m, K)
    calls = []
    pairs = dense_pairs._pairs
    monkeypatch.setattr(dense_pairs, "_pairs", lambda *a: calls.append(a[0]) or pairs(*a))
    dense_pairs.first_term(views, Ul, Um, D, False, False)
    assert (calls == [views]) == expect_pairs
    expected = np.einsum("nci,nr,nj->crij", D, Ul, Um).reshape(target.shape)
    assert np.allclose(target, expected, rtol=1e-12, atol=1e-12)


def _largest(limit, fits):
    """The largest k in 1..limit with fits(k), or 1 (a chunk is never empty)."""
    return max([k for k in range(1, limit + 1) if fits(k)], default=1)


@pytest.mark.parametrize("n, rl1, rm1, K, Km, chunk", [(3, 4, 3, 2, 2, 40), (1, 8, 1, 2, 3, 40), (2, 5, 2, 3, 2, 4000),
                                                       (4, 3, 3, 2, 2, 4), (1, 1, 1, 8, 1, 40)])
def test_khatri_rao_products_in_the_largest_chunks_that_fit(monkeypatch, n, rl1, rm1, K, Km, chunk):
    # docs §12: the Khatri-Rao factor KR (N x rows r_m) and each product's result (units K_m x
    # its columns) hold at most budget = CHUNK_FLOATS // 4 values, in the largest chunks that fit
    monkeypatch.setattr(dense_pairs, "per_pair", lambda *a: False)
    monkeypatch.setattr(_d, "CHUNK_FLOATS", chunk)
    budget = max(1, chunk // 4)
    rng = np.random.default_rng(4)
    Ul, Um, D = rng.standard_normal((n, rl1)), rng.standard_normal((n, rm1)), rng.standard_normal((n, K, Km))
    target, views = _views_for(rp.Linear(rl1, K, bias=False), rp.Linear(rm1, Km, bias=False), K)
    counting = _CountingNumpy()
    monkeypatch.setattr(dense_pairs, "np", counting)
    dense_pairs.first_term(views, Ul, Um, D, False, False)
    monkeypatch.setattr(dense_pairs, "np", np)
    rc = _largest(rl1, lambda k: n * k * rm1 <= budget)
    expected = []
    for r0 in range(0, rl1, rc):
        cols = (min(rl1, r0 + rc) - r0) * rm1
        cc = _largest(K, lambda k: k * Km * cols <= budget)
        expected += [((min(K, c0 + cc) - c0) * Km, n, cols) for c0 in range(0, K, cc)]
    assert counting.products == expected
    assert np.allclose(target, np.einsum("nci,nr,nj->crij", D, Ul, Um).reshape(target.shape), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n, r1, K, chunk", [(3, 3, 3, 40), (2, 2, 4, 60), (1, 1, 3, 4000), (3, 4, 2, 4),
                                            (1, 1, 3, 20), (1, 1, 4, 36)])  # 3 + 2 = 5 and 4 + 3 + 2 = 9 fit exactly
def test_symmetric_khatri_rao_pairs_grouped_by_unit_within_the_budget(monkeypatch, n, r1, K, chunk):
    # a diagonal block: only the pairs c <= i, units c taken together while their K - c pairs
    # times the columns fit the budget (at least one unit)
    monkeypatch.setattr(dense_pairs, "per_pair", lambda *a: False)
    monkeypatch.setattr(_d, "CHUNK_FLOATS", chunk)
    budget = max(1, chunk // 4)
    rng = np.random.default_rng(5)
    U = rng.standard_normal((n, r1))
    D = rng.standard_normal((n, K, K))
    D = D + D.transpose(0, 2, 1)
    layer = rp.Linear(r1, K, bias=False)
    target, views = _views_for(layer, layer, K)
    counting = _CountingNumpy()
    monkeypatch.setattr(dense_pairs, "np", counting)
    dense_pairs.first_term(views, U, U, D, True, False)
    monkeypatch.setattr(dense_pairs, "np", np)
    rc = _largest(r1, lambda k: n * k * r1 <= budget)
    expected = []
    for r0 in range(0, r1, rc):
        cols = (min(r1, r0 + rc) - r0) * r1
        c0 = 0
        while c0 < K:
            c1 = c0 + _largest(K - c0, lambda k: sum(K - c for c in range(c0, c0 + k)) * cols <= budget)
            expected.append((sum(K - c for c in range(c0, c1)), n, cols))
            c0 = c1
    assert counting.products == expected
    assert np.allclose(target, np.einsum("nci,nr,nj->crij", D, U, U).reshape(target.shape), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("chunk", [100, 60, 4000])
def test_diagonal_second_term_in_the_largest_unit_chunks_that_fit(monkeypatch, chunk):
    # docs §12: E[r, c, i] = sum_n U_l[n, r] s[n, c] d0[n, i] added at (c, r, i, j = c); per chunk
    # of units the factor (N x units K_m) and the result (r_l x units K_m) hold at most budget values
    monkeypatch.setattr(_d, "CHUNK_FLOATS", chunk)
    budget = max(1, chunk // 4)
    n, rl, K, Km = 3, 2, 4, 2
    layer_l, layer_m = rp.Linear(rl, K), rp.Linear(K, Km)  # m's input: the K units of l
    rng = np.random.default_rng(6)
    Ul = dense_pairs._with_ones(rng.standard_normal((n, rl)), True)
    s, dz0 = rng.standard_normal((n, K)), rng.standard_normal((n, Km))
    target, views = _views_for(layer_l, layer_m, K)
    counting = _CountingNumpy()
    monkeypatch.setattr(dense_pairs, "np", counting)
    dense_pairs.second_term_diagonal(views, Ul, s, dz0, 0)
    monkeypatch.setattr(dense_pairs, "np", np)
    cc = _largest(K, lambda k: (n + rl + 1) * k * Km <= budget)
    assert counting.products == [(rl + 1, n, (min(K, c0 + cc) - c0) * Km) for c0 in range(0, K, cc)]
    E = np.einsum("nr,nc,ni->cri", Ul, s, dz0)
    expected = np.zeros((K, rl + 1, Km, K + 1))  # (c, r', i, j') with r' = rl and j' = K the biases
    expected[np.arange(K), :, :, np.arange(K)] = E
    dense = np.zeros_like(target)
    dense[: K * rl, : Km * K] = expected[:, :rl, :, :K].reshape(K * rl, Km * K)
    dense[K * rl :, : Km * K] = expected[:, rl, :, :K].reshape(K, Km * K)
    assert np.allclose(target, dense, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n, rl, K, rm, Km, chunk", [(3, 2, 2, 3, 2, 100), (3, 4, 2, 3, 2, 200), (1, 6, 1, 1, 1, 16),
                                                     (2, 3, 2, 2, 3, 4000), (3, 2, 2, 3, 2, 60),
                                                     (3, 4, 2, 3, 2, 150)])  # rows 0-2, then 3 and the bias
def test_dense_second_term_in_the_largest_row_chunks_that_fit(monkeypatch, n, rl, K, rm, Km, chunk):
    # docs §12: sum_n U_l[n, r] d0[n, i] dU[n, c, j] added at (c, r, i, j), weights of m only; per
    # chunk of rows r the factor KR2 (N x rows K_m) and the result (rows K_m x K r_m) fit the budget
    monkeypatch.setattr(_d, "CHUNK_FLOATS", chunk)
    budget = max(1, chunk // 4)
    layer_l, layer_m = rp.Linear(rl, K), rp.Linear(rm, Km)
    rng = np.random.default_rng(7)
    Ul = dense_pairs._with_ones(rng.standard_normal((n, rl)), True)
    dz0, dU = rng.standard_normal((n, Km)), rng.standard_normal((n, K, rm))
    target, views = _views_for(layer_l, layer_m, K)
    counting = _CountingNumpy()
    monkeypatch.setattr(dense_pairs, "np", counting)
    dense_pairs.second_term_dense(views, Ul, dz0, dU)
    monkeypatch.setattr(dense_pairs, "np", np)
    rl1 = rl + 1
    rc = _largest(rl1, lambda k: k * Km * max(n, K * rm) <= budget)
    assert counting.products == [((min(rl1, r0 + rc) - r0) * Km, n, K * rm) for r0 in range(0, rl1, rc)]
    G = np.einsum("nr,ni,ncj->crij", Ul, dz0, dU)
    dense = np.zeros_like(target)
    dense[: K * rl, : Km * rm] = G[:, :rl].reshape(K * rl, Km * rm)
    dense[K * rl :, : Km * rm] = G[:, rl].reshape(K, Km * rm)
    assert np.allclose(target, dense, rtol=1e-12, atol=1e-12)
