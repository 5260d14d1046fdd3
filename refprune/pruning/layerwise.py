"""Layer-wise OBS: Optimal Brain Compression (Frantar & Alistarh 2022).

For an affine layer with input features ``X`` (``r x N T``: every sample and location) the
layer-wise objective ``||(W - W') X||^2 / N`` is a quadratic in each row of ``W`` with the
same Hessian ``H = 2 X X^T / N`` (OBC, eq. 1-2).  Rows are independent: each runs greedy
OBS with ``H^-1`` eliminated after every removal (OBC Algorithm 1; one ``r x r`` inverse per
row, all rows updated together as a ``(c, r, r)`` stack).  Layers are processed in
order, each on the inputs produced by the already pruned layers before it.

How many weights each row gives up (``k_i``, with ``sum k_i`` the layer's target) is a
choice over the rows' greedy traces, whose cumulative increases ``C_i(k)`` are additive
across rows (rows are independent):

* ``"exact"`` (default): minimise ``sum_i C_i(k_i)`` by a dynamic programme over rows and
  counts (a (min, +) convolution of the ``C_i``), ``O(c r K)`` for a target ``K``;
* ``"greedy"``: repeatedly take the row whose next step costs least;
* ``"obc"``: the published OBC code's rule: pool every row's step increases, take the
  ``K`` smallest, and give row ``i`` as many steps as it has among them.

Both greedy rules are optimal when every row's increases grow with ``k``; when a row's
later step is cheaper than an earlier one (often, since OBS updates the remaining
weights) they are not, and the exact selection is never worse than either.
"""

import heapq

import numpy as np

from ..options import SELECTIONS
from ..params import unflatten_params
from .masks import affine_layers
from .obs import inverse_spd
from .targets import how_many


def layer_hessian(U, n_samples):
    """``2 X X^T / N`` from features ``U (N, r, T)``."""
    n, r, T = U.shape
    Xm = U.transpose(1, 0, 2).reshape(r, n * T)
    return 2.0 * (Xm @ Xm.T) / n_samples


def obc_rows(W, Hinv, active, max_steps):
    """Greedy OBS on every row of ``W (c, r)`` at once.

    ``active (c, r)`` marks the free weights (the others are eliminated first).  Returns
    ``(order, increments, trajectory)``: the weight removed at each step ``(c, s)``, its
    predicted increase ``(c, s)``, and the rows after each step ``(c, s + 1, r)``.

    Each row's eliminated inverse is kept in low-rank form ``H^-1 - C_i^T C_i``, ``C_i``
    holding the scaled eliminated columns ``H_t^-1 e_q / sqrt([H_t^-1]_qq)``; a step then
    costs one column ``O(r t)`` and a diagonal update ``O(r)`` per row instead of an
    ``O(r^2)`` rank-one update of the full inverse.
    """
    c, r = W.shape
    W = W.copy()
    rows = np.arange(c)
    pre = ~active
    n_pre = int(pre.sum(axis=1).max())
    C = np.zeros((c, n_pre + max_steps, r))
    diag = np.broadcast_to(np.diag(Hinv), (c, r)).copy()
    # eliminate the weights pruned before (they are zero and stay zero; no saliency is charged)
    for t in range(n_pre):
        has = rows[pre.sum(axis=1) > t]
        _eliminate(Hinv, C, t, diag, has, np.array([np.flatnonzero(pre[i])[t] for i in has], dtype=np.int64))
    order = np.zeros((c, max_steps), dtype=np.int64)
    inc = np.full((c, max_steps), np.inf)
    traj = [W.copy()]
    act = active.copy()
    for t in range(max_steps):
        live = rows[act.any(axis=1)]
        with np.errstate(invalid="ignore"):  # removed weights: 0 / 0
            s = W**2 / (2.0 * diag)  # OBS saliency (Hassibi & Stork 1993, eq. 5)
        s[~act] = np.inf
        q = s.argmin(axis=1)
        order[:, t] = q
        inc[live, t] = s[live, q[live]]
        col, dq = _eliminate(Hinv, C, n_pre + t, diag, live, q[live])
        # the OBS update of each row (eq. 5), which leaves the removed weight at zero
        W[live] -= (W[live, q[live]] / dq)[:, None] * col
        W[live, q[live]] = 0.0
        act[live, q[live]] = False
        traj.append(W.copy())
    return order, inc, np.stack(traj, axis=1)


def _eliminate(Hinv, C, t, diag, rows, q):
    """Eliminate coordinate ``q[i]`` from the inverse of row ``rows[i]``, stored as the
    ``t``-th column of ``C``; returns that row's column ``H_t^-1 e_q`` and its entry
    ``[H_t^-1]_qq``, which the OBS update of the row needs."""
    m = rows.size
    # column q of the current inverse: H^-1 e_q - C^T (C e_q); a slice, not a copy, when
    # every row takes part
    Ct = C[:, :t] if m == C.shape[0] else C[rows, :t]
    cq = Ct[np.arange(m), :, q]  # (m, t)
    col = Hinv[:, q].T - np.matmul(cq[:, None, :], Ct)[:, 0]
    dq = col[np.arange(m), q]
    C[rows, t] = col / np.sqrt(dq)[:, None]
    diag[rows] -= col**2 / dq[:, None]  # 0 at q, which is inactive from now on
    return col, dq




def select_counts(inc, total, selection="exact"):
    """Per-row step counts ``k_i`` with ``sum k_i = total`` from the rows' step
    increases ``inc (c, s)`` (``inf`` where a row has no step left); see the module
    docstring for the three rules.  All three give ties to the earlier rows."""
    if selection not in SELECTIONS:
        raise ValueError(f"layer-wise OBS: selection must be one of {SELECTIONS}, got {selection!r}")
    c = inc.shape[0]
    available = int(np.isfinite(inc).sum())
    if total > available:
        raise ValueError(f"layer-wise OBS: fewer prunable weights ({available}) than requested ({total})")
    if selection == "greedy":
        return _greedy_counts(inc, total)
    if selection == "obc":
        flat = np.argsort(inc.ravel(), kind="stable")[:total]
        return np.bincount(flat // inc.shape[1], minlength=c).astype(np.int64)
    return _exact_counts(inc, total)


def _greedy_counts(inc, total):
    c = inc.shape[0]
    k = np.zeros(c, dtype=np.int64)
    heap = [(inc[i, 0], i) for i in range(c) if inc.shape[1] and np.isfinite(inc[i, 0])]
    heapq.heapify(heap)
    for _ in range(total):
        _, i = heapq.heappop(heap)
        k[i] += 1
        if k[i] < inc.shape[1] and np.isfinite(inc[i, k[i]]):
            heapq.heappush(heap, (inc[i, k[i]], i))
    return k


def _exact_counts(inc, total):
    """``argmin sum_i C_i(k_i)`` subject to ``sum_i k_i = total``: ``best[i][t]`` is the
    least cost of ``t`` removals among rows ``< i``, built one row at a time."""
    c = inc.shape[0]
    best = np.zeros(1)
    choices = []
    for i in range(c):
        steps = int(np.isfinite(inc[i]).sum())
        cum = np.concatenate([[0.0], np.cumsum(inc[i, :steps])])
        width = min(total, best.size - 1 + steps) + 1
        new = np.full(width, np.inf)
        arg = np.zeros(width, dtype=np.int64)
        for k in range(min(steps, width - 1) + 1):
            hi = min(width, k + best.size)
            cand = best[: hi - k] + cum[k]
            better = cand < new[k:hi]
            new[k:hi] = np.where(better, cand, new[k:hi])
            arg[k:hi] = np.where(better, k, arg[k:hi])
        best = new
        choices.append(arg)
    k = np.zeros(c, dtype=np.int64)
    t = total
    for i in range(c - 1, -1, -1):
        k[i] = choices[i][t]
        t -= k[i]
    return k


def layer_obs_round(model, theta, X, mask, prunable, fraction, damping, selection="exact"):
    """Prune every affine layer to ``fraction`` of its prunable weights (``X`` the
    validated float64 inputs); returns
    ``(theta, removed, predicted)``, ``predicted`` the summed layer-wise objective."""
    theta = theta.copy()
    removed, predicted = [], 0.0
    for j, layer, start, wstop, stop in affine_layers(model):
        w_prunable = prunable[start:wstop]
        total = int(w_prunable.sum())
        r = (wstop - start) // layer.out_units  # weights per row
        act = (mask[start:wstop] & w_prunable).reshape(layer.out_units, r)
        k_total = how_many(fraction, total) - int((w_prunable & ~mask[start:wstop]).sum())
        if k_total <= 0:
            continue
        params = unflatten_params(model, theta)
        grouped = model.group_params(params)
        x = X
        for layer_i, p in zip(model.layers[:j], grouped[:j]):
            x, _ = layer_i.forward(p, x)
        U = layer.features(x)
        H = layer_hessian(U, len(X))
        Hinv = inverse_spd(H, damping, what=f"layer-wise Hessian 2XX^T/N of layer {j}")
        W = theta[start:wstop].reshape(layer.out_units, r)
        steps = min(int(act.sum(axis=1).max()), k_total)
        order, inc, traj = obc_rows(W, Hinv, act, steps)
        k = select_counts(inc, k_total, selection)
        new = traj[np.arange(layer.out_units), k].ravel()
        taken = np.arange(steps)[None, :] < k[:, None]  # each row's first k_i steps, row by row
        rows_removed = (np.arange(layer.out_units)[:, None] * r + order)[taken]
        # a later step moves an eliminated weight by rounding only (its column entry is
        # 0 in exact arithmetic): keep every removed weight exactly zero
        new[rows_removed] = 0.0
        theta[start:wstop] = new * mask[start:wstop]
        removed.append(start + rows_removed)
        predicted += float(inc[taken].sum())
    return theta, np.concatenate([np.zeros(0, dtype=np.int64)] + removed), predicted
