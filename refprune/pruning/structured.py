"""Structured criteria: remove whole output units (neurons, channels).

For an affine layer with K-FAC block ``F = S kron A`` over the rows ``w_i`` of
``[W | b]`` (``docs/conventions.md`` §4, §7; factored damping ``S + sqrt(lam) I``, ``A + sqrt(lam) I``):

* Kron-OBD:  ``s_i = S_ii w_i^T A w_i / 2``  (the OBD saliency of the whole row under ``F``);
* Kron-OBS:  ``s_i = w_i^T A w_i / (2 [S^-1]_ii)``, update ``dW = -S^-1 e_i w_i^T / [S^-1]_ii``:
  group OBS with ``F`` for the set ``Q = row i``, since ``[F^-1]_QQ = [S^-1]_ii A^-1``
  (Wang et al. 2019, "EigenDamage", §3.2, eqs. 7-8, with the exact ``w_i^T A w_i``);
* C-OBD: ``s_i = sum_j w_ij^2 F_(ij),(ij) / 2`` with the exact diagonal of the Fisher;
* C-OBS: ``s_i = sum_j w_ij^2 / (2 [F^-1]_(ij),(ij))`` with ``[F^-1]_(ij),(ij) =
  [S^-1]_ii [A^-1]_jj`` (K-FAC); the removed row gets the exact group update above.

Derivations: ``docs/pruning_explained.md`` §5.  Units are removed one at a time, lowest saliency over all prunable layers first; after a
Kron-OBS/C-OBS removal ``S^-1`` of that layer is updated by eliminating the unit.  At the
end :func:`~refprune.pruning.surgery.remove_units` returns the smaller network.
"""

import sys

import numpy as np

from .. import options
from ..derivatives import grad as _grad
from ..curvature.diagonal import curvature_diagonal
from ..curvature.kronecker import LayerLayout, kfac
from ..curvature.output_factors import monte_carlo_kwargs
from ..params import flatten_params, unflatten_params
from ..vocabulary import FISHER_LIKE, check_curvature, renamed_options
from .masks import affine_layers, check_mask
from .obs import inverse_spd
from .records import PruneResult, maybe_retrain, record_step
from .targets import round_goal, warn_nothing_removed
from .surgery import remove_units, structurally_prunable


def _unit_rows(layout, theta):
    """Rows ``w_i`` of ``[W | b]`` for a layer: ``(c, p)``."""
    return layout.to_matrix(theta[layout.offset : layout.offset + layout.size][:, None])[0]


class _LayerState:
    def __init__(self, block, alive, damping, diag=None):
        self.layout = block.layout
        r = np.sqrt(damping)
        self.A = block.A + r * np.eye(len(block.A))
        S = block.S + r * np.eye(len(block.S))
        idx = np.flatnonzero(alive)
        self.alive = alive.copy()
        # S restricted to the units still alive (dead rows are constrained to zero)
        self.Sinv = np.zeros_like(S)
        self.S = S
        self.diag = diag
        self.Ainv_diag = None
        if diag is not None:
            return  # C-OBD ranks by the exact diagonal: it neither inverts nor damps the factors
        self.Sinv[np.ix_(idx, idx)] = inverse_spd(S[np.ix_(idx, idx)], what=f"K-FAC factor S of {block.layout.layer!r}")
        self.Ainv_diag = np.diag(inverse_spd(self.A, what=f"K-FAC factor A of {block.layout.layer!r}"))

    def saliencies(self, M, method, shortcut=False):
        """Saliency of every alive unit (``inf`` for removed ones).  ``shortcut``: the
        published EigenDamage code's row sums ``sum_k W_ik^2 (A 1)_k`` in place of
        ``w_i^T A w_i`` (Kron-OBD/OBS only)."""
        s = np.full(self.layout.c, np.inf)
        a = self.alive
        if method in ("kron_obd", "kron_obs"):
            quad = (M[a] ** 2) @ self.A.sum(axis=1) if shortcut else np.einsum("ip,pq,iq->i", M[a], self.A, M[a])
            scale = np.diag(self.S)[a] if method == "kron_obd" else 1.0 / np.diag(self.Sinv)[a]
            s[a] = scale * quad / 2
        elif method == "c_obs":
            s[a] = np.sum(M[a] ** 2 / (2 * np.outer(np.diag(self.Sinv)[a], self.Ainv_diag)), axis=1)
        else:  # c_obd
            s[a] = np.sum(M[a] ** 2 * self.diag[a], axis=1) / 2
        return s

    def remove(self, M, i, update):
        """Remove unit ``i`` from ``M = [W | b]`` in place; returns nothing."""
        if update:
            col = self.Sinv[:, i].copy()
            M -= np.outer(col / col[i], M[i])
            self.Sinv -= np.outer(col, col) / col[i]
        M[i] = 0.0
        self.Sinv[i, :] = 0.0
        self.Sinv[:, i] = 0.0
        self.alive[i] = False


def _layer_states(args, layers, alive, method, curvature, mc, damping):
    """K-FAC (and for C-OBD the exact Fisher diagonal) at ``args``' parameters, as a
    :class:`_LayerState` and the matrix ``[W | b]`` of every layer in ``layers``."""
    model, params = args[0], args[1]
    K = kfac(*args, curvature=curvature, **mc)
    blocks = {b.layout.offset: b for b in K.blocks}
    diag = None
    if method == "c_obd":
        diag = curvature_diagonal(*args, curvature=curvature, **mc)
    theta = flatten_params(params)
    offsets = model.param_offsets()
    states, mats = {}, {}
    for j in layers:
        b = blocks[offsets[j]]
        states[j] = _LayerState(b, alive[j], damping, None if diag is None else _unit_rows(b.layout, diag))
        mats[j] = _unit_rows(b.layout, theta)
    return states, mats


def prune_units(model, params, X, y, loss, method, target, steps, mask, o):
    """The structured criteria as :func:`refprune.prune` runs them: remove whole
    units one at a time by the lowest saliency over all layers, then the surgery."""
    layers = structurally_prunable(model)
    if not layers:
        raise ValueError(f"{method}: the model has no affine layer whose units can be removed (only the last one)")
    mask = check_mask(model, mask)
    theta = flatten_params(params) * mask
    total = sum(model[j].out_units for j in layers)
    # units whose whole row of [W | b] is already masked count as removed
    alive = {j: _unit_rows(_layout_of(model, j), mask).any(axis=1) for j in layers}
    records = []
    base = sum(int((~a).sum()) for a in alive.values())
    for k in range(1, steps + 1):
        count = round_goal(target, total, k, steps, base) - sum(int((~a).sum()) for a in alive.values())
        if count <= 0:
            continue
        args = (model, unflatten_params(model, theta), X, y, loss)
        states, mats = _layer_states(args, layers, alive, method, o["curvature"], o["mc"], o["damping"])
        new_theta = theta.copy()
        removed_units, predicted, unit_sal = [], 0.0, []
        update = method in ("kron_obs", "c_obs")
        for _ in range(count):
            # a layer down to its last unit leaves the candidate set: never empty a layer
            cands = [(states[j].saliencies(mats[j], method), j) for j in layers if alive[j].sum() > 1]
            if not cands:
                raise ValueError(
                    f"{method}: {target[0]} {target[1]} would remove every unit of some layer; at most "
                    f"{total - len(layers)} of {total} units can go (one must stay in each layer)")
            s, j = min(cands, key=lambda t: np.min(t[0]))
            i = int(np.argmin(s))
            predicted += float(s[i])
            unit_sal.append(float(s[i]))
            states[j].remove(mats[j], i, update)
            alive[j] = states[j].alive
            removed_units.append((j, i))
        removed_idx = []
        for j in layers:
            lay = states[j].layout
            new_theta[lay.offset : lay.offset + lay.size] = lay.from_matrix(mats[j][None])[:, 0]
        new_mask = mask.copy()
        for j, i in removed_units:
            lay = states[j].layout
            idx = lay.offset + np.flatnonzero(lay.perm // lay.p == i)  # flat positions of row i of [W | b]
            new_mask[idx] = False
            removed_idx.append(idx)
        removed = np.concatenate(removed_idx)
        g = _grad(*args)
        rec = record_step(model, X, y, loss, k, theta, new_theta * new_mask, removed, predicted,
                          1.0 - sum(int(a.sum()) for a in alive.values()) / total,
                          predicted_full=predicted + float(g @ (new_theta * new_mask - theta)))
        rec.unit_saliencies = np.array(unit_sal)
        rec.removed_units = removed_units
        theta, mask = new_theta * new_mask, new_mask
        theta, rec.retrain_history = maybe_retrain(model, theta, X, y, loss, mask, o["retrain"], o["seed"])
        records.append(rec)
        if o["progress"]:
            print(f"prune ({method}): step {k}/{steps}, {rec.sparsity:.3f} of units removed", file=sys.stderr)
    if not records:
        warn_nothing_removed(method, target, total, base)
    small, small_params = remove_units(model, unflatten_params(model, theta), alive, np.shape(X)[1:])
    return PruneResult(small, small_params, _carry_mask(model, mask, alive, np.shape(X)[1:], small),
                       records, method, model, unflatten_params(model, theta))


def _carry_mask(model, mask, alive, in_shape, small):
    """The mask of the smaller model: the same surgery applied to the 0/1 mask selects
    exactly the kept weights; biases (possibly new ones that hold folded constants)
    are free."""
    if mask.all():
        return np.ones(small.n_params, dtype=bool)
    _, mp = remove_units(model, unflatten_params(model, mask.astype(float)), alive, in_shape)
    m = flatten_params(mp) != 0
    for _, _, start, wstop, stop in affine_layers(small):
        m[wstop:stop] = True
    return m


def _layout_of(model, j):
    return LayerLayout(model[j], model.param_offsets()[j])


@renamed_options(fisher="curvature")
def unit_saliencies(model, params, X, y, loss, method="kron_obs", curvature="ggn", damping=0.0, shortcut=False,
                    samples=1, seed=0, targets=None):
    """Per-unit saliencies ``{layer index: (c,)}`` of a structured criterion at ``params``.

    ``shortcut=True`` gives the approximation of the published EigenDamage code for
    Kron-OBD/Kron-OBS: ``w_i^T A w_i`` replaced by ``sum_k W_ik^2 (A 1)_k`` (row sums of
    ``A``), exact only for diagonal ``A``; compare both to see how far it is off.
    """
    if method not in ("c_obd", "c_obs", "kron_obd", "kron_obs"):
        raise ValueError(f"unit_saliencies: method must be a structured criterion, got {method!r}")
    check_curvature(curvature, FISHER_LIKE, "unit_saliencies")
    v = options.convert("unit_saliencies", dict(damping=damping, shortcut=shortcut, samples=samples, seed=seed,
                                                targets=targets))
    options.refuse_inapplicable("unit_saliencies", v, method, curvature)
    damping, shortcut = v["damping"], v["shortcut"]
    layers = structurally_prunable(model)
    alive = {j: np.ones(model[j].out_units, dtype=bool) for j in layers}
    mc = monte_carlo_kwargs(curvature, samples, seed, targets)
    states, mats = _layer_states((model, params, X, y, loss), layers, alive, method, curvature, mc, damping)
    out = {j: states[j].saliencies(mats[j], method, shortcut=shortcut) for j in layers}
    return out


def unit_update(S, A, M, i, shortcut=False):
    """The change of ``M = [W | b]`` when unit ``i`` is removed under ``F = S kron A``.

    Exact (group OBS): ``-S^-1 e_i w_i^T / [S^-1]_ii``, which zeroes row ``i``.  With
    ``shortcut=True``, the sum of the single-weight OBS updates of the row's weights (as
    the published C-OBS code does): ``-(S^-1 e_i / [S^-1]_ii) (A^-1 D^-1 w_i)^T`` with
    ``D = diag(A^-1)``; it zeroes row ``i`` only if ``A^-1`` is diagonal.
    """
    Sinv, Ainv = np.linalg.inv(S), np.linalg.inv(A)
    u = Sinv[:, i] / Sinv[i, i]
    v = Ainv @ (M[i] / np.diag(Ainv)) if shortcut else M[i]
    return -np.outer(u, v)
