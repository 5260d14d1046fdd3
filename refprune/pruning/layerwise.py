"""Layer-wise OBS: Optimal Brain Compression (Frantar & Alistarh 2022).

For an affine layer with input features ``X`` (``r x N T``: every sample and location) the
layer-wise objective ``||(W - W') X||^2 / N`` is a quadratic in each row of ``W`` with the
same Hessian ``H = 2 X X^T / N`` (OBC, eq. 1-2).  Rows are independent: each runs greedy
OBS with ``H^-1`` eliminated after every removal (OBC Algorithm 1; one ``r x r`` inverse per
row, all rows updated together as a ``(c, r, r)`` stack).  The per-step increases of all
rows are then merged into one layer mask of the requested size by always taking the row
whose next step costs least (OBC §4, "global mask selection").  Layers are processed in
order, each on the inputs produced by the already pruned layers before it.
"""

import heapq

import numpy as np

from ..params import unflatten_params
from .masks import affine_layers
from .obs import inverse_spd


def layer_hessian(U, n_samples):
    """``2 X X^T / N`` from features ``U (N, r, T)``."""
    Xm = U.transpose(1, 0, 2).reshape(U.shape[1], -1)
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
    n_pre = int(pre.sum(axis=1).max()) if pre.any() else 0
    C = np.zeros((c, n_pre + max_steps, r))
    diag = np.broadcast_to(np.diag(Hinv), (c, r)).copy()
    # eliminate the weights pruned before (they stay zero; no saliency is charged)
    for t in range(n_pre):
        has = pre.sum(axis=1) > t
        q = np.array([np.flatnonzero(p)[t] if h else 0 for p, h in zip(pre, has)])
        _eliminate(Hinv, C, t, diag, W, rows[has], q[has], update_w=False)
    order = np.zeros((c, max_steps), dtype=np.int64)
    inc = np.full((c, max_steps), np.inf)
    traj = np.empty((c, max_steps + 1, r))
    traj[:, 0] = W
    act = active.copy()
    for t in range(max_steps):
        live = act.any(axis=1)
        s = np.where(act, W**2 / (2.0 * np.where(act, diag, 1.0)), np.inf)
        q = s.argmin(axis=1)
        order[:, t] = q
        inc[live, t] = s[live, q[live]]
        _eliminate(Hinv, C, n_pre + t, diag, W, rows[live], q[live], update_w=True)
        act[rows[live], q[live]] = False
        traj[:, t + 1] = W
    return order, inc, traj


def _eliminate(Hinv, C, t, diag, W, rows, q, update_w):
    """Remove coordinate ``q[i]`` of row ``rows[i]``: the OBS update of the row (Hassibi &
    Stork 1993, eq. 5) and the elimination of ``q`` from that row's inverse, stored as
    the ``t``-th column of ``C``."""
    if rows.size == 0:
        return
    # column q of the current inverse: H^-1 e_q - C^T (C e_q); a slice, not a copy, when
    # every row takes part
    Ct = C[:, :t] if rows.size == C.shape[0] else C[rows, :t]
    cq = np.take_along_axis(Ct, q[:, None, None], axis=2)  # (m, t, 1)
    col = Hinv[:, q].T - np.matmul(cq.transpose(0, 2, 1), Ct)[:, 0]
    dq = col[np.arange(rows.size), q]
    if update_w:
        W[rows] -= (W[rows, q] / dq)[:, None] * col
        W[rows, q] = 0.0
    C[rows, t] = col / np.sqrt(dq)[:, None]
    diag[rows] -= col**2 / dq[:, None]
    diag[rows, q] = 1.0  # eliminated: never selected again (the weight is inactive)


def select_counts(inc, total):
    """Per-row step counts ``k_i`` with ``sum k_i = total``, taking steps in order of
    least next increase (OBC §4)."""
    c = inc.shape[0]
    k = np.zeros(c, dtype=np.int64)
    heap = [(inc[i, 0], i) for i in range(c) if inc.shape[1] and np.isfinite(inc[i, 0])]
    heapq.heapify(heap)
    for _ in range(total):
        if not heap:
            raise ValueError("layer-wise OBS: fewer prunable weights than requested")
        _, i = heapq.heappop(heap)
        k[i] += 1
        if k[i] < inc.shape[1] and np.isfinite(inc[i, k[i]]):
            heapq.heappush(heap, (inc[i, k[i]], i))
    return k


def layer_obs_round(model, theta, X, mask, prunable, fraction, damping):
    """Prune every affine layer to ``fraction`` of its prunable weights; returns
    ``(theta, removed, predicted)``, ``predicted`` the summed layer-wise objective."""
    theta = theta.copy()
    removed, predicted = [], 0.0
    inp_X = np.asarray(X, dtype=np.float64)
    for j, layer, start, wstop, stop in affine_layers(model):
        w_prunable = prunable[start:wstop]
        total = int(w_prunable.sum())
        act = (mask[start:wstop] & w_prunable).reshape(layer.out_units, -1)
        k_total = int(np.floor(fraction * total)) - int((w_prunable & ~mask[start:wstop]).sum())
        if k_total <= 0:
            continue
        params = unflatten_params(model, theta)
        grouped = model.group_params(params)
        x = inp_X
        for layer_i, p in zip(model.layers[:j], grouped[:j]):
            x, _ = layer_i.forward(p, x)
        U = layer.features(x)
        H = layer_hessian(U, len(inp_X))
        Hinv = inverse_spd(H, damping, what=f"layer-wise Hessian 2XX^T/N of layer {j}")
        W = theta[start:wstop].reshape(layer.out_units, -1)
        steps = min(int(act.sum(axis=1).max()), k_total)
        order, inc, traj = obc_rows(W, Hinv, act, steps)
        k = select_counts(inc, k_total)
        Wn = traj[np.arange(layer.out_units), k]
        theta[start:wstop] = Wn.ravel()
        rows_removed = [i * W.shape[1] + order[i, : k[i]] for i in range(layer.out_units)]
        removed.append(start + np.concatenate(rows_removed))
        predicted += float(sum(inc[i, : k[i]].sum() for i in range(layer.out_units)))
    removed = np.concatenate(removed) if removed else np.zeros(0, dtype=int)
    return theta, removed, predicted
