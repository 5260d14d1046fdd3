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

import sys

import numpy as np

from .. import derivatives
from ..checks import check_array, validate
from ..curvature import diagonal
from ..curvature import exact as curvature
from ..curvature.operators import CurvatureOperator
from ..options import DIAGONALS, INDEFINITE, TAYLOR  # noqa: F401 (the choices, named here too)
from .obs import OBS, SingularCurvatureError, inverse_spd
from .records import warn

#: a precomputed curvature is refused when ``||C - C^T||_F > SYMMETRY_RTOL ||C||_F``
SYMMETRY_RTOL = 1e-10


def check_symmetric(C, where):
    """Refuse a square matrix that is not symmetric to within :data:`SYMMETRY_RTOL`
    (relative, Frobenius norm), naming its largest asymmetry.  Only one triangle of a
    curvature would be used (Cholesky reads the lower one), so a matrix that is not
    symmetric is a mistake, not something to symmetrise silently; ``1e-10`` leaves six
    orders of magnitude above the rounding of a matrix built as a sum of symmetric
    terms in float64 and far below any asymmetry that changes a result visibly.
    Non-square or non-finite matrices are left to the shape and NaN checks."""
    C = np.asarray(C)
    if C.ndim != 2 or C.shape[0] != C.shape[1] or C.dtype.kind not in "fiu" or not np.all(np.isfinite(C)):
        return
    C = C.astype(np.float64, copy=False)
    D = C - C.T
    gap, norm = float(np.linalg.norm(D)), float(np.linalg.norm(C))
    if gap > SYMMETRY_RTOL * norm:
        i, j = np.unravel_index(int(np.argmax(np.abs(D))), D.shape)
        raise ValueError(f"{where}: the precomputed curvature is not symmetric: ||C - C^T|| = {gap:.3e} exceeds "
                         f"{SYMMETRY_RTOL:g} ||C|| = {SYMMETRY_RTOL * norm:.3e}; largest asymmetry |C[{i}, {j}] - "
                         f"C[{j}, {i}]| = {abs(D[i, j]):.3e} (C[{i}, {j}] = {C[i, j]!r}, C[{j}, {i}] = {C[j, i]!r})")


def is_matrix_like(curvature):
    """A precomputed curvature: an array or a :class:`~refprune.curvature.operators.CurvatureOperator`."""
    return isinstance(curvature, (np.ndarray, CurvatureOperator))


def precomputed_matrix(curvature, n):
    """The dense ``(n, n)`` matrix of a precomputed curvature, checked."""
    M = curvature.to_dense() if isinstance(curvature, CurvatureOperator) else np.asarray(curvature, dtype=np.float64)
    if M.shape != (n, n):
        raise ValueError(f"prune: a precomputed curvature must be ({n}, {n}) for this model, got {M.shape}")
    if not np.all(np.isfinite(M)):
        raise ValueError("prune: the precomputed curvature contains NaN or inf")
    if isinstance(curvature, CurvatureOperator):
        check_symmetric(M, "prune")  # an array was checked when the options were
    return M


def diagonal_of(curvature, kind, args, mc, weight_decay):
    """The diagonal OBD ranks by: the exact diagonal of ``curvature`` (``kind="exact"``),
    of a precomputed matrix or operator, or OBD's own approximation of the Hessian's
    (``"obd"``, ``"obd_lm"``); plus ``weight_decay``."""
    n = args[0].n_params
    if isinstance(curvature, CurvatureOperator):
        d = check_array(curvature.diagonal(), "the precomputed curvature's diagonal")
        if d.shape != (n,):
            raise ValueError(f"prune: the precomputed curvature has {d.size} rows, the model {n} parameters")
    elif isinstance(curvature, np.ndarray):
        d = np.diag(precomputed_matrix(curvature, n)).copy()
    elif kind == "exact":
        d = diagonal.curvature_diagonal(*args, curvature=curvature, **mc)
    else:
        d = diagonal.obd_diagonal(*args, levenberg_marquardt=kind == "obd_lm")
    return d + weight_decay


def curvature_matrix(spec, args, mc, weight_decay):
    """The dense matrix OBS uses: by name or precomputed, plus ``weight_decay I``."""
    n = args[0].n_params
    H = precomputed_matrix(spec, n) if is_matrix_like(spec) else curvature.exact_matrix(*args, curvature=spec, **mc)
    return H + weight_decay * np.eye(n)


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


def suggested_damping(M):
    """A damping that makes ``M`` comfortably positive definite:
    ``max(0, -lambda_min) + 1e-4 max |lambda|`` (condition number at most about 1e4)."""
    ev = np.linalg.eigvalsh(M)
    return float(max(0.0, -ev[0]) + 1e-4 * max(np.abs(ev).max(), sys.float_info.min))


def robust_inverse(M, damping, indefinite, what, ggn_block=None):
    """``(M + damping I)^-1``, or what ``indefinite`` says to do when it is not positive
    definite: ``"raise"`` (with a suggested damping), ``"damp"`` (add the suggested
    damping), ``"abs"`` (absolute eigenvalues, as in saddle-free Newton, Dauphin et al.
    2014), ``"ggn"`` (use ``ggn_block()``, the GGN restricted likewise)."""
    try:
        return inverse_spd(M, damping, what=what)
    except SingularCurvatureError as err:
        if indefinite == "raise":
            lam = suggested_damping(M + damping * np.eye(len(M)))
            raise SingularCurvatureError(f"{err}; damping {damping + lam:.6e} would make it positive definite "
                                         "(or pass indefinite='damp', 'abs' or 'ggn')") from None
        if indefinite == "damp":
            lam = suggested_damping(M + damping * np.eye(len(M)))
            warn(f"the {what} is not positive definite; damping raised by {lam:.3e} (indefinite='damp')")
            return inverse_spd(M, damping + lam, what=what)
        if indefinite == "abs":
            ev, V = np.linalg.eigh(M)
            warn(f"the {what} is not positive definite; using its absolute eigenvalues "
                 f"(indefinite='abs'; smallest eigenvalue {ev[0]:.3e})")
            return inverse_spd((V * np.abs(ev)) @ V.T, damping, what=f"|{what}|")
        warn(f"the {what} is not positive definite; using the GGN instead (indefinite='ggn')")
        return inverse_spd(ggn_block(), damping, what=f"GGN in place of the {what}")


def select_obs(theta, candidates, count, Hinv_of, group_size, groups, grad=None, H=None, layer_of=None):
    """OBS within each group of coordinates (``groups``: list of index arrays covering the
    free coordinates; one group = global OBS, one per layer = layer-wise blocks), with
    ``count[i]`` removals in group ``i``.  ``Hinv_of(idx)`` returns the inverse curvature
    restricted to ``idx``; with ``grad`` and ``H`` the full Taylor model is minimised;
    ``layer_of`` keeps one weight in every layer.  Returns ``(theta, removed in order,
    their saliencies, predicted)``."""
    out = theta.copy()
    removed, sal, predicted = [], [], 0.0
    for idx, k in zip(groups, count):
        if k <= 0:
            continue
        full = {} if grad is None else dict(grad=grad[idx], H=H[np.ix_(idx, idx)])
        solver = OBS(Hinv_of(idx), out[idx], prunable=candidates[idx], **full)
        predicted += solver.prune(k, group_size, None if layer_of is None else layer_of[idx])
        out[idx] = solver.w
        removed.append(idx[solver.order])
        sal.append(np.array(solver.increments))
    removed = np.concatenate(removed) if removed else np.zeros(0, dtype=int)
    sal = np.concatenate(sal) if sal else np.zeros(0)
    return out, removed, sal, predicted


def obs_inverse_factory(kind, args, damping, weight_decay, indefinite, H):
    """``idx -> (H_idx,idx + damping I)^-1`` for the dense curvature ``H`` (from
    :func:`curvature_matrix`, with ``weight_decay`` in it) or WoodFisher
    (``kind="woodfisher"``, ``H`` unused, whose ``weight_decay`` joins the damping)."""
    if isinstance(kind, str) and kind == "woodfisher":
        inp_scale = validate(*args).scale
        rows = derivatives.per_sample_grads(*args) / np.sqrt(inp_scale)
        return lambda idx: woodbury_inverse(rows[:, idx], damping + weight_decay)
    name = "precomputed curvature" if is_matrix_like(kind) else str(kind)
    ggn = []  # computed once, on the first block that needs it

    def ggn_block(idx):
        if not ggn:
            ggn.append(curvature.ggn(*args) + weight_decay * np.eye(len(H)))
        return ggn[0][np.ix_(idx, idx)]

    return lambda idx: robust_inverse(H[np.ix_(idx, idx)], damping, indefinite, f"{name} restricted to the free weights",
                                      lambda: ggn_block(idx))
