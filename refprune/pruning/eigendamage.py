"""EigenDamage (Wang et al. 2019, "EigenDamage: Structured pruning in the
Kronecker-factored eigenbasis", §4).

Reparametrise each affine layer in the eigenbases of its K-FAC factors
``S = U_S diag(sigma) U_S^T``, ``A = U_A diag(alpha) U_A^T``:  ``W* = U_S^T [W | b] U_A``.  In that
basis the K-FAC (or EKFAC) Fisher is diagonal with entries ``kappa_ij`` (``sigma_i alpha_j``, or the
EKFAC re-estimates), so OBS equals OBD there and the importance of ``W*_ij`` is
``W*_ij^2 kappa_ij / 2`` (their eq. 9).  Whole eigen-directions are removed, columns ``j``
of ``U_A`` and rows ``i`` of ``U_S^T``, ranked by their summed importance with one global
threshold and a per-layer cap on the fraction removed; the predicted loss increase is
the importance summed over the removed entries (each once).

The kept directions give the bottleneck ``x -> U_A'^T [x; 1] -> W*' -> U_S'`` as three
layers (for a convolution: the ``kh x kw`` convolution ``U_A'``, then two 1x1
convolutions).  A layer keeps its bottleneck only when it has fewer parameters than the
original; otherwise the pruned function is stored densely, ``[W' | b'] = U_S' W*' U_A'^T``.

Derived in ``docs/pruning_explained.md`` §5.
"""

import sys

import numpy as np

from ..curvature.ekfac import ekfac
from ..curvature.kronecker import kfac
from ..nn import Conv2d, Linear, Sequential
from ..params import flatten_params, unflatten_params
from .masks import affine_layers
from .records import PruneResult, PruneStep, evaluate, maybe_retrain
from .targets import round_goal, warn_nothing_removed


def _bottleneck_layers(layer, UA, Wstar, US):
    """Three layers computing ``U_S W* U_A^T [x; 1]`` and their parameters, as matrices
    in the flat order of the layers' parameters."""
    kA, kS = UA.shape[1], US.shape[1]
    r = layer.n_weight // layer.out_units
    first_w = UA[:r].T
    first_b = UA[r] if layer.bias else None
    if isinstance(layer, Linear):
        l1 = Linear(layer.in_features, kA, bias=layer.bias)
        l2, l3 = Linear(kA, kS, bias=False), Linear(kS, layer.out_features, bias=False)
    else:
        l1 = Conv2d(layer.in_channels, kA, layer.kernel_size, stride=layer.stride, padding=layer.padding,
                    bias=layer.bias)
        l2, l3 = Conv2d(kA, kS, 1, bias=False), Conv2d(kS, layer.out_channels, 1, bias=False)
    # as matrices: a convolution's weight (out, in, kh, kw) holds the same numbers in the
    # same order as (out, in kh kw), and the caller reads them back in the layers' shapes
    ps = [first_w] + ([first_b] if layer.bias else []) + [Wstar, US]
    return [l1, l2, l3], ps


def eigendamage(model, params, X, y, loss, target, o):
    """EigenDamage (Wang et al. 2019) as :func:`refprune.prune` runs it: rank the
    eigen-directions of every layer's Kronecker factors globally and replace each layer
    by its bottleneck when that is smaller (docs/derivations.md §9)."""
    eig = o["eigenvalues"]
    cap = o["max_layer_fraction"]
    if not 0 < cap <= 1:
        raise ValueError(f"max_layer_fraction must be in (0, 1], got {cap!r}")
    args = (model, params, X, y, loss)
    approx = ekfac(*args, curvature=o["curvature"], **o["mc"]) if eig == "ekfac" else None
    K = kfac(*args, curvature=o["curvature"], **o["mc"])
    theta = flatten_params(params)
    info = []
    for idx, (j, layer, start, _, stop) in enumerate(affine_layers(model)):
        block = K.blocks[idx]
        s, US, a, UA = block.eigh()
        M = block.layout.to_matrix(theta[start:stop][:, None])[0]
        Wstar = US.T @ M @ UA
        sstar = approx.blocks[idx].scales if approx is not None else np.outer(s, a)
        imp = Wstar**2 * sstar / 2
        info.append(dict(j=j, layout=block.layout, US=US, UA=UA, Wstar=Wstar, imp=imp))
    # one global ranking of every direction (S side: rows, A side: columns)
    dirs = []
    for li, d in enumerate(info):
        dirs += [(float(v), li, "S", i) for i, v in enumerate(d["imp"].sum(axis=1))]
        dirs += [(float(v), li, "A", i) for i, v in enumerate(d["imp"].sum(axis=0))]
    goal = round_goal(target, len(dirs), 1, 1)
    if goal == 0:
        warn_nothing_removed("eigendamage", target, len(dirs), 0)
    removed = {(li, side): [] for li in range(len(info)) for side in ("S", "A")}
    taken = 0
    order = []
    for v, li, side, i in sorted(dirs):  # by importance; ties by layer, side, index
        if taken == goal:
            break
        n_side = info[li]["imp"].shape[0 if side == "S" else 1]
        limit = min(int(np.floor(cap * n_side)), n_side - 1)
        if len(removed[(li, side)]) >= limit:
            continue
        removed[(li, side)].append(i)
        order.append((li, 0 if side == "S" else 1, i, v))
        taken += 1
    if taken < goal:
        raise ValueError(f"eigendamage: {target[0]} {target[1]} exceeds what the per-layer cap "
                         f"max_layer_fraction={cap} allows ({taken} of {len(dirs)} directions)")
    layers, new_params, predicted = [], [], 0.0
    grouped = model.group_params(params)
    info_by_j = {d["j"]: (li, d) for li, d in enumerate(info)}
    kept_report = []
    for j, layer in enumerate(model):
        if j not in info_by_j:
            layers.append(layer)
            new_params += grouped[j]
            continue
        li, d = info_by_j[j]
        rows = np.isin(np.arange(d["imp"].shape[0]), removed[(li, "S")])
        cols = np.isin(np.arange(d["imp"].shape[1]), removed[(li, "A")])
        keepS, keepA = np.flatnonzero(~rows), np.flatnonzero(~cols)
        # each removed entry once: in a removed row or a removed column
        predicted += float(d["imp"][rows[:, None] | cols[None, :]].sum())
        USk, UAk, Wk = d["US"][:, keepS], d["UA"][:, keepA], d["Wstar"][np.ix_(keepS, keepA)]
        b_layers, b_params = _bottleneck_layers(layer, UAk, Wk, USk)
        n_bottleneck = sum(p.size for p in b_params)
        if n_bottleneck < layer.n_params:
            layers += b_layers
            new_params += b_params
            kept_report.append((j, "bottleneck", n_bottleneck, layer.n_params))
        else:
            dense = (USk @ Wk @ UAk.T)[None]
            flat = d["layout"].from_matrix(dense)[:, 0]
            layers.append(layer)
            new_params += unflatten_params(Sequential(layer), flat)
            kept_report.append((j, "dense", layer.n_params, layer.n_params))
    new_model = Sequential(*layers)
    L0 = evaluate(model, theta, X, y, loss)
    L1 = evaluate(new_model, flatten_params(new_params), X, y, loss)
    # removal order: (layer number, 0 for an S direction or 1 for an A direction, index)
    removed_list = np.array([t[:3] for t in order], dtype=np.int64).reshape(-1, 3)
    step = PruneStep(1, removed_list, predicted, L1 - L0, L1 - L0, L1, taken / len(dirs))
    step.layers = kept_report
    step.saliencies = np.array([t[3] for t in order])
    new_mask = np.ones(new_model.n_params, dtype=bool)
    theta_new, step.retrain_history = maybe_retrain(new_model, flatten_params(new_params), X, y, loss, new_mask,
                                                    o["retrain"], o["seed"])
    if o["progress"]:
        print(f"prune (eigendamage): {taken} of {len(dirs)} directions removed, {new_model.n_params} of "
              f"{model.n_params} parameters left, loss {L1:.5f}", file=sys.stderr)
    return PruneResult(new_model, unflatten_params(new_model, theta_new), new_mask, [step], "eigendamage")
