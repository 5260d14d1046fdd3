"""``prune``: one entry point for every criterion, with a record of every step.

Every step reports the loss change the criterion's quadratic model predicted and the
loss change actually observed, with the criterion's update of the remaining weights and
without it (the removed weights just zeroed), so that each criterion's quality is
measured (``docs/conventions.md`` §7).
"""

import sys

import numpy as np

from ..checks import validate
from ..params import flatten_params, unflatten_params
from ..vocabulary import CURVATURES, FISHER_LIKE, check_curvature, renamed_options
from . import unstructured as U
from .eigendamage import eigendamage
from .layerwise import layer_obs_round
from .masks import affine_layers, check_mask, check_not_emptied, prunable_mask
from .records import PruneResult, PruneStep, maybe_retrain, record_step  # noqa: F401 (re-exported)
from .structured import prune_units
from .unstructured import DIAGONALS

UNSTRUCTURED = ("magnitude", "obd", "obs", "woodfisher", "layer_obs")
STRUCTURED = ("c_obd", "c_obs", "kron_obd", "kron_obs")
METHODS = UNSTRUCTURED + STRUCTURED + ("eigendamage",)


def _check_fraction(sparsity):
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float, np.floating, np.integer)) \
            or not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    return float(sparsity)


#: the curvature each method uses when ``curvature=None``
DEFAULT_CURVATURE = {"obs": "ggn", "obd": "hessian", "woodfisher": "empirical_fisher", "c_obd": "ggn", "c_obs": "ggn",
                     "kron_obd": "ggn", "kron_obs": "ggn", "eigendamage": "ggn"}
#: earlier ``diagonal=`` values that named a curvature, and what to write now
_OLD_DIAGONALS = {"ggn": "ggn", "fisher": "mc_fisher", "empirical": "empirical_fisher"}


def _resolve_curvature(method, curvature, diagonal):
    """The curvature name a method uses, checked against what the method can use."""
    if method == "obd" and diagonal in _OLD_DIAGONALS:
        raise ValueError(
            f"prune: diagonal={diagonal!r} is an earlier spelling; write curvature="
            f"{_OLD_DIAGONALS[diagonal]!r}, diagonal='exact' (diagonal= now only chooses exact or OBD's "
            f"approximation: {DIAGONALS})"
        )
    if method == "obd" and diagonal not in DIAGONALS:
        raise ValueError(f"prune: diagonal must be one of {DIAGONALS}, got {diagonal!r}")
    if method in ("magnitude", "layer_obs"):
        if curvature is not None:
            raise ValueError(f"prune: method {method!r} uses no curvature matrix; leave curvature=None")
        return None
    default = DEFAULT_CURVATURE[method]
    if curvature is None:
        return default
    if method == "woodfisher":
        check_curvature(curvature, ("empirical_fisher",), "prune (woodfisher)")
    elif method == "obd" and diagonal != "exact":
        check_curvature(curvature, ("hessian",), f"prune (obd, diagonal={diagonal!r})")
    elif method in ("obs", "obd"):
        check_curvature(curvature, CURVATURES, f"prune ({method})")
    else:
        check_curvature(curvature, FISHER_LIKE, f"prune ({method})")
    return curvature


@renamed_options(fisher="curvature")
def prune(model, params, X, y, loss, method="obs", sparsity=0.5, steps=1, scope="global", curvature=None,
          diagonal="exact", damping=0.0, group_size=1, samples=1, seed=0, targets=None, mask=None,
          include_bias=False, retrain=None, max_layer_fraction=0.9, eigenvalues="ekfac", progress=False):
    """Prune ``model`` to ``sparsity`` with ``method`` and record every step.

    Parameters
    ----------
    method : str
        ``"magnitude"``, ``"obd"``, ``"obs"``, ``"woodfisher"``, ``"layer_obs"``
        (unstructured); ``"c_obd"``, ``"c_obs"``, ``"kron_obd"``, ``"kron_obs"`` (whole
        output units); ``"eigendamage"`` (eigen-directions; ``max_layer_fraction=``).
    sparsity : float in [0, 1)
        Fraction of prunable weights (unstructured), of prunable units (structured) or
        of eigen-directions (EigenDamage) to remove.
    steps : int
        Number of rounds; round ``k`` reaches ``sparsity * k / steps``, the curvature is
        recomputed at the current weights every round, and ``retrain`` (a dict of
        :func:`refprune.train` options) fine-tunes with the mask after each round.
    scope : {"global", "layer"}
        One ranking over all layers, or the same fraction in every layer (``layer_obs``
        always prunes every layer to the fraction: its objective is per layer).
    curvature : str, optional
        The matrix the criterion uses, by the names of ``docs/conventions.md`` §3:
        any of ``"hessian"``, ``"ggn"``, ``"fisher"``, ``"mc_fisher"``,
        ``"empirical_fisher"`` for ``"obs"`` and ``"obd"``; the last four (the ones
        K-FAC approximates) for the structured methods and EigenDamage;
        ``"empirical_fisher"`` for ``"woodfisher"``.  ``None``: the method's default
        (:data:`DEFAULT_CURVATURE`: the GGN for OBS and the Kronecker methods, the
        Hessian for OBD).
    diagonal : {"exact", "obd", "obd_lm"}
        OBD: the exact diagonal of ``curvature``, or OBD's own approximation of the
        Hessian's (LeCun et al. 1990, eqs. 7-9; ``"obd_lm"`` without the ``phi''`` term).
    damping : float
        Added to the curvature before it is inverted (OBS, WoodFisher, layer-wise OBS;
        factored damping of the Kronecker factors for the structured methods).
    group_size : int
        OBS removes this many weights at a time by the group formula.
    samples, seed, targets :
        The Monte Carlo targets of ``curvature="mc_fisher"`` (drawn, or the caller's).
    max_layer_fraction, eigenvalues :
        EigenDamage: the largest fraction of a layer's directions (per factor) that may
        go, and whose eigenvalues rank them (``"ekfac"`` re-estimated or ``"kfac"``).
    mask : bool array (n,), optional
        Coordinates already pruned (``False``); they stay zero.
    include_bias : bool
        Let unstructured methods remove biases too.

    Returns
    -------
    PruneResult
    """
    if method not in METHODS:
        raise ValueError(f"unknown pruning method {method!r}; choose one of {METHODS}")
    sparsity = _check_fraction(sparsity)
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
    if not isinstance(group_size, (int, np.integer)) or group_size < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")
    if not np.isfinite(damping) or damping < 0:
        raise ValueError(f"damping must be a finite number >= 0, got {damping!r}")
    if eigenvalues not in ("ekfac", "kfac"):
        raise ValueError(f"eigenvalues must be 'ekfac' or 'kfac', got {eigenvalues!r}")
    curvature = _resolve_curvature(method, curvature, diagonal)
    if targets is not None and curvature != "mc_fisher":
        raise ValueError(f"prune: targets= is for curvature='mc_fisher', got curvature={curvature!r}")
    validate(model, params, X, y, loss)
    opts = dict(scope=scope, curvature=curvature, diagonal=diagonal, damping=float(damping),
                group_size=int(group_size), mc=dict(samples=samples, seed=seed, targets=targets), seed=seed,
                include_bias=include_bias, retrain=retrain, max_layer_fraction=max_layer_fraction,
                eigenvalues=eigenvalues, progress=progress)
    if method in UNSTRUCTURED:
        return _prune_unstructured(model, params, X, y, loss, method, sparsity, steps, mask, opts)
    if method in STRUCTURED:
        return prune_units(model, params, X, y, loss, method, sparsity, steps, mask, opts)
    if steps != 1:
        raise ValueError("eigendamage is one-shot (steps=1): it changes the architecture; prune the returned "
                         "model again for another round")
    return eigendamage(model, params, X, y, loss, sparsity, opts)


def _targets(model, candidates_all, mask, fraction, scope):
    """Number of weights to remove now: ``[(indices of a group, count)]``."""
    if scope == "global":
        total = int(candidates_all.sum())
        done = int((candidates_all & ~mask).sum())
        return [(np.flatnonzero(mask), int(np.floor(fraction * total)) - done)]
    out = []
    for _, _, start, _, stop in affine_layers(model):
        c = candidates_all[start:stop]
        total, done = int(c.sum()), int((c & ~mask[start:stop]).sum())
        out.append((start + np.flatnonzero(mask[start:stop]), int(np.floor(fraction * total)) - done))
    return out


def _prune_unstructured(model, params, X, y, loss, method, sparsity, steps, mask, o):
    mask = check_mask(model, mask)
    prunable = prunable_mask(model, o["include_bias"])
    theta = flatten_params(params) * mask
    records = []
    for k in range(1, steps + 1):
        frac = sparsity * k / steps
        args = (model, unflatten_params(model, theta), X, y, loss)
        candidates = prunable & mask
        if method == "layer_obs":
            new, removed, predicted = layer_obs_round(model, theta, X, mask, prunable, frac, o["damping"])
        else:
            groups = _targets(model, prunable, mask, frac, o["scope"])
            if sum(c for _, c in groups) <= 0:
                continue
            if method == "magnitude" or method == "obd":
                score = np.abs(theta) if method == "magnitude" else theta**2 * U.diagonal_of(
                    o["curvature"], o["diagonal"], args, o["mc"]) / 2.0
                removed = np.concatenate([idx[candidates[idx]][np.argsort(score[idx[candidates[idx]]],
                                                                            kind="stable")[:c]]
                                          for idx, c in groups if c > 0])
                new = theta.copy()
                new[removed] = 0.0
                predicted = float("nan") if method == "magnitude" else float(np.sum(score[removed]))
            else:
                kind = "woodfisher" if method == "woodfisher" else o["curvature"]
                Hinv_of = U.obs_inverse_factory(kind, args, o["damping"], o["mc"])
                new, removed, predicted = U.select_obs(theta, mask, candidates, [c for _, c in groups],
                                                       Hinv_of, o["group_size"], [idx for idx, _ in groups])
        new_mask = mask.copy()
        new_mask[removed] = False
        check_not_emptied(model, new_mask, prunable)
        rec = record_step(model, X, y, loss, k, theta, new, removed, predicted, new_mask, prunable)
        mask, theta = new_mask, new * new_mask
        theta, rec.retrain_history = maybe_retrain(model, theta, X, y, loss, mask, o["retrain"], o["seed"])
        records.append(rec)
        if o["progress"]:
            print(f"prune ({method}): step {k}/{steps}, sparsity {rec.sparsity:.3f}, loss {rec.loss:.5f}",
                  file=sys.stderr)
    return PruneResult(model, unflatten_params(model, theta), mask, records, method)
