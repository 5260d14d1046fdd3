"""Curvature blocks between two dense layers (``T = 1``) as a few large matrix products.

For layers ``l <= m`` with features ``U_l (N, r_l)``, ``U_m (N, r_m)`` (a column of ones
appended for a bias) and ``D[n, c, i] = d(delta^m_i)/d(z_l,c)`` from the identity seed of
:func:`refprune.curvature.exact._assemble`, the block is (``docs/derivations.md`` §12)

    H[(c, r), (i, j)] = sum_n D[n, c, i] U_l[n, r] U_m[n, j]                   (first term)
                      + sum_n U_l[n, r] delta^m_0[n, i] dU_m[n, c, j]        (second term)

The first term is ONE product ``D^T (K_l K_m x N) @ KR (N x r_l r_m)`` with the row-wise
Khatri-Rao product ``KR[n, (r, j)] = U_l[n, r] U_m[n, j]``, followed by a copy that
reorders ``(c, i, r, j) -> (c, r, i, j)``; for a diagonal block only the pairs
``c <= i`` are multiplied (``D[n]`` is the symmetric Hessian of the loss in ``z_l``) and
each result is written at ``(c, i)`` and ``(i, c)``.  The second term is diagonal in
``(c, j)`` when only elementwise layers lie between ``l`` and ``m`` and one product
``U_l^T (s * delta_0)`` then; otherwise it is a second product
``KR2^T (r_l K_m x N) @ dU (N x K_l r_m)`` with ``KR2[n, (r, i)] = U_l[n, r] delta_0[n, i]``.
Every temporary holds at most about ``CHUNK_FLOATS / 4`` values.
"""

import numpy as np

from .. import derivatives as _d


def _with_ones(U, bias):
    """Features ``(N, r)`` with a column of ones appended for a bias (its "feature")."""
    if not bias:
        return U
    return np.concatenate([U, np.ones((U.shape[0], 1))], axis=1)


def view(a, shape):
    """``a`` reshaped to ``shape`` as a view: writing through it must reach ``a``."""
    v = a.reshape(shape)
    if v.size and not np.shares_memory(v, a):
        raise AssertionError(f"dense_pairs: a ({a.shape}, strides {a.strides}) cannot be viewed as {shape}")
    return v


class _BlockViews:
    """The block ``(rows of K unit rows of layer l, n_m columns of layer m)`` in PyTorch's flat
    order (weights ``(c, r)`` row-major, then biases) seen as ``(c, r', i, j')`` with the
    extended feature indices ``r' < r_l + b_l``, ``j' < r_m + b_m`` (``r_l``: the bias)."""

    def __init__(self, target, K, layer_l, layer_m):
        self.rl, self.rm = layer_l.n_weight // layer_l.out_units, layer_m.n_weight // layer_m.out_units
        self.bl, self.bm = layer_l.bias, layer_m.bias
        Km = layer_m.out_units
        nwl, nwm = K * self.rl, layer_m.n_weight
        self.ww = view(target[:nwl, :nwm], (K, self.rl, Km, self.rm))
        self.wb = view(target[:nwl, nwm:], (K, self.rl, Km)) if self.bm else None
        self.bw = view(target[nwl:, :nwm], (K, Km, self.rm)) if self.bl else None
        self.bb = target[nwl:, nwm:] if (self.bl and self.bm) else None

    def put(self, c, r0, r1, i, V, add):
        """Write (or add) ``V (len c, r1 - r0, len i, r_m + b_m)`` at ``(c, r0:r1, i, :)``;
        ``c`` and ``i`` are slices."""
        rw = min(r1, self.rl)
        if r0 < rw:
            _set(self.ww[c, r0:rw, i], V[:, : rw - r0, :, : self.rm], add)
            if self.bm:
                _set(self.wb[c, r0:rw, i], V[:, : rw - r0, :, self.rm], add)
        if r1 > self.rl:  # the bias "feature" of layer l is in this range
            _set(self.bw[c, i], V[:, self.rl - r0, :, : self.rm], add)
            if self.bm:
                _set(self.bb[c, i], V[:, self.rl - r0, :, self.rm], add)


def _set(dst, src, add):
    if add:
        dst += src
    else:
        dst[...] = src


def _budget():
    return max(1, _d.CHUNK_FLOATS // 4)


#: results of one pair's product below which that product runs far from the BLAS's speed
#: (docs §12: with 65 x 65 products, net (b)'s, the Khatri-Rao route was 15-20% faster
#: at every N from 8 to 128, where the count below chose the products per pair)
PAIR_PRODUCT_MIN = 128 * 128


def per_pair(n, K, Km, rm1, rl1=None):
    """Whether one product per pair ``(c, i)`` (scaled ``U_l^T`` times ``U_m``, written
    straight into the block) beats the Khatri-Rao product: per pair it forms ``N r_l``
    values where the Khatri-Rao route writes and reorders ``r_l r_m`` results and forms
    ``N r_l r_m / (K_l K_m)`` (docs §12), provided each pair's ``r_l x r_m`` product is
    large enough to run at the BLAS's speed (``PAIR_PRODUCT_MIN``)."""
    if rl1 is not None and rl1 * rm1 < PAIR_PRODUCT_MIN:
        return False
    return n < 2 * rm1 + n * rm1 / (K * Km)


def first_term(views, Ul, Um, D, symmetric, add):
    """``sum_n D[n, c, i] U_l[n, r] U_m[n, j]`` into ``views`` (``D`` already carries the
    loss scale).  ``symmetric``: a diagonal block over all of the layer's units, where
    only ``c <= i`` is multiplied."""
    n, K, Km = D.shape
    rl1, rm1 = Ul.shape[1], Um.shape[1]
    if per_pair(n, K, Km, rm1, rl1):
        _pairs(views, Ul, Um, D, symmetric, add)
        return
    budget = _budget()
    rc = max(1, min(rl1, budget // max(1, n * rm1)))
    for r0 in range(0, rl1, rc):
        r1 = min(rl1, r0 + rc)
        KR = (Ul[:, r0:r1, None] * Um[:, None, :]).reshape(n, -1)
        cols = KR.shape[1]
        if symmetric:
            _symmetric_rows(views, D, KR, r0, r1, rm1, budget, add)
            continue
        cc = max(1, budget // max(1, Km * cols))
        Dt = D.reshape(n, K * Km).T
        for c0 in range(0, K, cc):
            c1 = min(K, c0 + cc)
            G = np.matmul(Dt[c0 * Km : c1 * Km], KR).reshape(c1 - c0, Km, r1 - r0, rm1)
            views.put(slice(c0, c1), r0, r1, slice(None), G.transpose(0, 2, 1, 3), add)


def _pairs(views, Ul, Um, D, symmetric, add):
    """The weight sub-blocks of the pairs ``(c, i)`` of one ``c`` as one product
    ``U_l^T (N x r_l)^T @ [U_m * D[:, c, i]]_i (N x (i's) r_m)``, written into the block's row
    strip of ``c`` (a strided view: ``np.matmul`` hands BLAS its leading dimension); the bias
    rows and columns are three small products over all pairs."""
    n, K, Km = D.shape
    rl, rm = views.rl, views.rm
    Ul_w, Um_w = Ul[:, :rl], Um[:, :rm]
    if symmetric:
        # D[n] is symmetric: take its upper triangle, so that the (i, c) results are the
        # (c, i) ones and each (i, c) sub-block is a copy of its (c, i) twin (each
        # U^T diag(d) U itself is symmetric only to rounding: the product computes both of
        # its triangles; docs §12)
        upper = np.triu(np.ones((K, K), dtype=bool))
        D = np.where(upper, D, D.transpose(0, 2, 1))
    budget = _budget()
    # pairs per product: the scaled right factor (N x g r_m) within the budget.  One product
    # per row strip rather than per pair: with 2 BLAS threads net (c)'s 10 products of
    # 512 x 128 x 5120 .. 512 x 128 x 512 ran 20% faster than its 55 per-pair products
    # that skip half of each symmetric sub-block (docs §12)
    g = max(1, min(Km, budget // max(1, n * rm)))
    for c in range(K):
        for a in range(c if symmetric else 0, Km, g):
            b = min(Km, a + g)
            right = (Um_w[:, None, :] * D[:, c, a:b, None]).reshape(n, (b - a) * rm)
            dst = view(views.ww[c, :, a:b, :], (rl, (b - a) * rm))
            if add:  # a later chunk of samples: the product's rows a budget at a time
                step = max(1, budget // ((b - a) * rm))
                for r0 in range(0, rl, step):
                    dst[r0 : r0 + step] += np.matmul(Ul_w[:, r0 : r0 + step].T, right)
            else:
                np.matmul(Ul_w.T, right, out=dst)
        if symmetric:
            for i in range(c + 1, Km):
                views.ww[i, :, c, :] = views.ww[c, :, i, :]  # the (i, c) sub-block
    D2 = D.reshape(n, K * Km)
    if views.bm:
        _set(views.wb, np.matmul(Ul_w.T, D2).reshape(rl, K, Km).transpose(1, 0, 2), add)
    if views.bl:
        _set(views.bw, np.matmul(D2.T, Um_w).reshape(K, Km, rm), add)
        if views.bm:
            _set(views.bb, D2.sum(axis=0).reshape(K, Km), add)


def _symmetric_rows(views, D, KR, r0, r1, rm1, budget, add):
    """Pairs ``c <= i`` of a diagonal block, grouped by ``c``: ``G[c, i] = G[i, c]``
    (``D[n]`` symmetric, ``U_l = U_m``) is written at ``(c, r, i, j)`` and ``(i, r, c, j)``."""
    n, K, _ = D.shape
    cols = KR.shape[1]
    c0 = 0
    while c0 < K:
        # as many c as keep the product under the budget (pairs of c: K - c)
        c1, pairs = c0, 0
        while c1 < K and (c1 == c0 or (pairs + K - c1) * cols <= budget):
            pairs += K - c1
            c1 += 1
        rows = np.concatenate([D[:, c, c:] for c in range(c0, c1)], axis=1).T  # (pairs, n)
        G = np.matmul(rows, KR)
        p = 0
        for c in range(c0, c1):
            Gc = G[p : p + K - c].reshape(K - c, r1 - r0, rm1)
            views.put(slice(c, c + 1), r0, r1, slice(c, K), Gc[None].transpose(0, 2, 1, 3), add)
            if c + 1 < K:
                views.put(slice(c + 1, K), r0, r1, slice(c, c + 1), Gc[1:, :, None], add)
            p += K - c
        c0 = c1


def second_term_diagonal(views, Ul, s, dz0, u0):
    """``sum_n U_l[n, r] dz0[n, i] s[n, c]`` added at ``(c, r, i, j = u0 + c)``: the second
    term when ``dU_m[n, c, j] = s[n, c] [j = u0 + c]`` (only elementwise layers between)."""
    n, K = s.shape
    Km = dz0.shape[1]
    rl1 = Ul.shape[1]
    cl = np.arange(K)
    cc = max(1, _budget() // max(1, (n + rl1) * Km))
    for c0 in range(0, K, cc):
        c1 = min(K, c0 + cc)
        M = (s[:, c0:c1, None] * dz0[:, None, :]).reshape(n, -1)
        E = np.matmul(Ul.T, M).reshape(rl1, c1 - c0, Km)
        c, j = cl[c0:c1], u0 + cl[c0:c1]
        views.ww[c, :, :, j] += E[: views.rl].transpose(1, 0, 2)
        if views.bl:
            views.bw[c, :, j] += E[views.rl]


def second_term_dense(views, Ul, dz0, dU):
    """``sum_n U_l[n, r] dz0[n, i] dU[n, c, j]`` added at ``(c, r, i, j)`` (weights of ``m``
    only: its bias has no input factor)."""
    n, K, rm = dU.shape
    Km = dz0.shape[1]
    rl1 = Ul.shape[1]
    right = dU.reshape(n, K * rm)
    rc = max(1, min(rl1, _budget() // max(1, Km * max(n, K * rm))))
    for r0 in range(0, rl1, rc):
        r1 = min(rl1, r0 + rc)
        KR2 = (Ul[:, r0:r1, None] * dz0[:, None, :]).reshape(n, -1)
        G = np.matmul(KR2.T, right).reshape(r1 - r0, Km, K, rm).transpose(2, 0, 1, 3)  # (c, r, i, j)
        rw = min(r1, views.rl)
        if r0 < rw:
            views.ww[:, r0:rw] += G[:, : rw - r0]
        if r1 > views.rl:
            views.bw[:, :, :] += G[:, views.rl - r0]


def dense_rows(target, layer_l, cache_l, layer_m, cache_m, D, dx, diagonal, d0, scale, first, units, symmetric):
    """Block ``(l, m)`` of two dense layers from the identity seed on ``z_l`` (of units
    ``units`` or all): ``D (N, K, K_m)`` the pulled-back cotangents at ``z_m``, ``dx`` the
    tangents of ``m``'s input (``None``: no second term), ``diagonal`` whether only
    elementwise layers lie between, ``d0`` the first-order cotangent at ``z_m``.  Written
    into ``target`` (``first``) or added to it (a later chunk of samples)."""
    n, K = D.shape[:2]
    Km = layer_m.out_units
    views = _BlockViews(target, K, layer_l, layer_m)
    Ul = _with_ones(cache_l[0][:, :, 0], layer_l.bias)
    Um = _with_ones(cache_m[0][:, :, 0], layer_m.bias)
    # the loss scale R folded into the small factors (N K K_m values), not the block
    Ds = scale * D.reshape(n, K, Km)
    first_term(views, Ul, Um, Ds, symmetric, not first)
    if dx is None:
        return
    dz0 = scale * layer_m.from_output(d0[:, 0])[:, :, 0]
    u0 = 0 if units is None else units[0]
    if diagonal:
        dxf = dx.reshape(n, K, -1)
        s = dxf[:, np.arange(K), u0 + np.arange(K)]
        second_term_diagonal(views, Ul, s, dz0, u0)
    else:
        second_term_dense(views, Ul, dz0, layer_m.input_tangent_features(dx)[..., 0])
