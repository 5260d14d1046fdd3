"""Unstructured criteria: choose single weights, optionally update the others.

* magnitude: smallest ``|w_q|`` (no loss model);
* OBD (LeCun, Denker & Solla 1990, eq. 6): ``s_q = w_q^2 h_qq / 2`` with any diagonal;
* OBS (Hassibi & Stork 1993) on the exact Hessian, GGN or a Fisher, restricted to the
  coordinates still free, inverted once per round and eliminated per removal;
* WoodFisher (Singh & Alistarh 2020, §3): OBS on the damped empirical Fisher
  ``lam I + U^T U`` (``U = G / sqrt(R)``, rows the per-sample gradients), whose inverse
  the Woodbury identity gives from an ``N x N`` solve:
  ``(lam I + U^T U)^-1 = (I - U^T (lam I_N + U U^T)^-1 U) / lam``.

Magnitude and OBD rank by a score (``prune`` does that); this module provides the
diagonals, the dense curvatures, their inverses (dense, or Woodbury) and the OBS driver
:func:`select_obs`, which returns ``(new_theta, removed_indices, predicted_increase)``.
"""

import numpy as np

from .. import curvature, derivatives, diagonal
from ..checks import validate
from .obs import OBS, SingularCurvatureError, inverse_spd

DIAGONALS = ("exact", "obd", "obd_lm")


def diagonal_of(curvature, kind, args, mc):
    """The diagonal OBD ranks by: the exact diagonal of ``curvature`` (``kind="exact"``)
    or OBD's own approximation of the Hessian's (``"obd"``, ``"obd_lm"``)."""
    if kind == "exact":
        return diagonal.curvature_diagonal(*args, curvature=curvature, **mc)
    return diagonal.obd_diagonal(*args, levenberg_marquardt=kind == "obd_lm")


def dense_curvature(kind, args, mc):
    if kind in ("hessian", "ggn"):
        return getattr(curvature, kind)(*args)
    return curvature.fisher(*args, curvature=kind, **mc)


def woodbury_inverse(U, damping):
    """``(damping I + U^T U)^-1`` for ``U (N, m)`` via an ``N x N`` solve."""
    if not damping > 0:
        raise SingularCurvatureError(
            f"the empirical Fisher of {U.shape[0]} samples has rank <= {U.shape[0]}"
            f"{' < ' + str(U.shape[1]) if U.shape[0] < U.shape[1] else ''} parameters; "
            "WoodFisher needs damping > 0"
        )
    K = damping * np.eye(U.shape[0]) + U @ U.T
    inv = (np.eye(U.shape[1]) - U.T @ np.linalg.solve(K, U)) / damping
    return (inv + inv.T) / 2


def select_obs(theta, mask, candidates, count, Hinv_of, group_size, groups):
    """OBS within each group of coordinates (``groups``: list of index arrays covering the
    free coordinates; one group = global OBS, one per layer = layer-wise blocks), with
    ``count[i]`` removals in group ``i``.  ``Hinv_of(idx)`` returns the inverse curvature
    restricted to ``idx``."""
    out = theta.copy()
    removed, predicted = [], 0.0
    for idx, k in zip(groups, count):
        if k <= 0:
            continue
        solver = OBS(Hinv_of(idx), out[idx], prunable=candidates[idx])
        predicted += solver.prune(k, group_size)
        out[idx] = solver.w
        removed.append(idx[~solver.active])
    removed = np.concatenate(removed) if removed else np.zeros(0, dtype=int)
    return out, removed, predicted


def obs_inverse_factory(kind, args, damping, mc):
    """``idx -> (H_idx,idx + damping I)^-1`` for a dense curvature or WoodFisher."""
    if kind == "woodfisher":
        inp_scale = validate(*args).scale
        rows = derivatives.per_sample_grads(*args) / np.sqrt(inp_scale)
        return lambda idx: woodbury_inverse(rows[:, idx], damping)
    H = dense_curvature(kind, args, mc)
    return lambda idx: inverse_spd(H[np.ix_(idx, idx)], damping, what=f"{kind} restricted to the free weights")
