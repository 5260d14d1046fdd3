"""``prune``: one entry point for every criterion, with a record of every step.

Every step reports the loss change the criterion's quadratic model predicted and the
loss change actually observed, with the criterion's update of the remaining weights and
without it (the removed weights just zeroed), so that each criterion's quality is
measured (``docs/conventions.md`` §7).
"""

import sys

import numpy as np

from .. import derivatives as _d
from .. import options
from ..checks import validate
from ..curvature.output_factors import monte_carlo_kwargs
from ..options import METHODS, STRUCTURED, UNSTRUCTURED  # noqa: F401 (METHODS re-exported)
from ..params import flatten_params, unflatten_params
from ..vocabulary import CURVATURES, FISHER_LIKE, check_curvature, renamed_options
from . import unstructured as U
from .eigendamage import eigendamage
from .layerwise import layer_obs_round
from .masks import affine_layers, check_mask, check_not_emptied, prunable_mask, sparsity_of
from .records import PruneResult, PruneStep, PruningWarning, maybe_retrain, record_step  # noqa: F401 (re-exported)
from .structured import prune_units
from .targets import check_target, round_goal, warn_nothing_removed

#: the curvature each method uses when ``curvature=None``
DEFAULT_CURVATURE = {"obs": "ggn", "obd": "hessian", "woodfisher": "empirical_fisher", "c_obd": "ggn", "c_obs": "ggn",
                     "kron_obd": "ggn", "kron_obs": "ggn", "eigendamage": "ggn"}


def _resolve_curvature(method, curvature, diagonal, where="prune"):
    """The curvature name a method uses, checked against what the method can use; a
    precomputed matrix is checked for symmetry (:func:`unstructured.check_symmetric`)."""
    if method in ("magnitude", "layer_obs"):
        if curvature is not None:
            raise ValueError(f"{where}: method {method!r} uses no curvature matrix; leave curvature=None")
        return None
    default = DEFAULT_CURVATURE[method]
    if curvature is None:
        return default
    if U.is_matrix_like(curvature):
        if method not in ("obs", "obd") or (method == "obd" and diagonal != "exact"):
            raise ValueError(f"{where}: a precomputed curvature (matrix or operator) applies to obs and to obd with "
                             f"diagonal='exact', not {method!r}")
        if isinstance(curvature, np.ndarray):
            U.check_symmetric(curvature, where)
        return curvature
    if method == "woodfisher":
        check_curvature(curvature, ("empirical_fisher",), f"{where} (woodfisher)")
    elif method == "obd" and diagonal != "exact":
        check_curvature(curvature, ("hessian",), f"{where} (obd, diagonal={diagonal!r})")
    elif method in ("obs", "obd"):
        check_curvature(curvature, CURVATURES, f"{where} ({method})")
    else:
        check_curvature(curvature, FISHER_LIKE, f"{where} ({method})")
    return curvature


@renamed_options(fisher="curvature")
def prune(model, params, X, y, loss, method="obs", sparsity=None, steps=1, scope="global", curvature=None,
          diagonal="exact", damping=0.0, group_size=1, samples=1, seed=0, targets=None, mask=None,
          include_bias=False, retrain=None, max_layer_fraction=0.9, eigenvalues="ekfac", progress=False,
          count=None, protected=None, skip_emptied=False, taylor="second_order", weight_decay=0.0,
          indefinite="raise", selection="exact"):
    """Prune ``model`` with ``method`` and record every step.

    Every option is checked through :data:`refprune.options.TABLE` (its type, its range,
    the methods and curvatures it applies to): a number given as text or ``None`` is a
    ``TypeError``, and an option given a value other than its default where it does not
    apply (``selection=`` with ``"obs"``, ``damping=`` with ``"magnitude"``, ``samples=``
    without ``curvature="mc_fisher"``...) is refused by name, never ignored.  The section
    "Options by method" at the end is generated from the table;
    ``print(refprune.options.describe("prune", method="obs"))`` lists one method's.

    Parameters
    ----------
    method : str
        ``"magnitude"``, ``"obd"``, ``"obs"``, ``"woodfisher"``, ``"layer_obs"``
        (unstructured); ``"c_obd"``, ``"c_obs"``, ``"kron_obd"``, ``"kron_obs"`` (whole
        output units); ``"eigendamage"`` (eigen-directions; ``max_layer_fraction=``).
    sparsity : float in [0, 1), optional
        Fraction of prunable weights (unstructured), of prunable units (structured) or
        of eigen-directions (EigenDamage) to remove: ``floor(sparsity * total)`` of them
        (module docstring).  Default 0.5 unless ``count`` is given.
    count : int, optional
        Remove exactly this many weights (units, directions) instead.
    steps : int
        Number of rounds; the curvature is recomputed at the current weights every
        round (unless given precomputed), and ``retrain`` (a dict of
        :func:`refprune.train` options) fine-tunes with the mask after each round.
    scope : {"global", "layer"}
        One ranking over all layers, or the same fraction in every layer (``layer_obs``
        always prunes every layer to the fraction: its objective is per layer).
    curvature : str, array (n, n) or CurvatureOperator, optional
        The matrix the criterion uses, by the names of ``docs/conventions.md`` §3:
        any of ``"hessian"``, ``"ggn"``, ``"fisher"``, ``"mc_fisher"``,
        ``"empirical_fisher"`` for ``"obs"`` and ``"obd"`` (which also take a
        precomputed matrix or operator, reused in every round); the last four (the
        ones K-FAC approximates) for the structured methods and EigenDamage;
        ``"empirical_fisher"`` for ``"woodfisher"``.  ``None``: the method's default
        (:data:`DEFAULT_CURVATURE`: the GGN for OBS and the Kronecker methods, the
        Hessian for OBD).  A precomputed matrix must be symmetric:
        ``||C - C^T||_F <= 1e-10 ||C||_F`` (only one triangle would be used).
    diagonal : {"exact", "obd", "obd_lm"}
        OBD: the exact diagonal of ``curvature``, or OBD's own approximation of the
        Hessian's (LeCun et al. 1990, eqs. 7-9; ``"obd_lm"`` without the ``phi''`` term).
    damping : float
        Added to the curvature before it is inverted (OBS, WoodFisher, layer-wise OBS;
        factored damping of the Kronecker factors for C-OBS, Kron-OBD and Kron-OBS).
        OBD, C-OBD and EigenDamage use no damping and refuse it.
    indefinite : {"raise", "damp", "abs", "ggn"}
        OBS when the damped matrix is not positive definite (an exact Hessian away from
        a minimum): raise naming a damping that would do, add that damping, use the
        absolute eigenvalues, or use the GGN (each with a warning).
    taylor : {"second_order", "full"}
        OBS: minimise ``1/2 d^T H d`` (at a minimum, the papers' model) or the full
        ``g^T d + 1/2 d^T H d`` under the removal constraint (docs/derivations.md §10).
        Every step records both predictions (``predicted``, ``predicted_full``).
    weight_decay : float
        Prune the objective ``L + weight_decay/2 |theta|^2``: its gradient, curvature
        (``+ weight_decay I``) and recorded values (magnitude, OBD, OBS, WoodFisher).
    group_size : int
        OBS removes this many weights at a time by the group formula.
    selection : {"exact", "greedy", "obc"}
        ``layer_obs``: how many weights each row of a layer gives up
        (:mod:`refprune.pruning.layerwise`).
    protected : bool array (n,), optional
        Coordinates that are never removed (they stay free and are updated).
    skip_emptied : bool
        Instead of refusing a removal that would empty a layer, skip that weight and
        take the next candidate (unstructured methods but ``layer_obs``).
    samples, seed, targets :
        The Monte Carlo targets of ``curvature="mc_fisher"`` (drawn, or the caller's);
        refused with any other curvature, except ``seed``, which also seeds
        ``retrain``'s batch order.
    max_layer_fraction, eigenvalues :
        EigenDamage: the largest fraction of a layer's directions (per factor) that may
        go, and whose eigenvalues rank them (``"ekfac"`` re-estimated or ``"kfac"``).
    mask : bool array (n,), optional
        Coordinates already pruned (``False``); they stay zero (not EigenDamage, which
        takes a dense network).
    include_bias : bool
        Let magnitude, OBD, OBS and WoodFisher remove biases too.

    Returns
    -------
    PruneResult
        Each step lists the removed coordinates in the order they were taken, with
        their saliencies.
    """
    if method not in METHODS:
        raise ValueError(f"unknown pruning method {method!r}; choose one of {METHODS}")
    given = dict(method=method, sparsity=sparsity, count=count, steps=steps, scope=scope, curvature=curvature,
                 diagonal=diagonal, damping=damping, group_size=group_size, samples=samples, seed=seed,
                 targets=targets, mask=mask, include_bias=include_bias, retrain=retrain,
                 max_layer_fraction=max_layer_fraction, eigenvalues=eigenvalues, progress=progress,
                 protected=protected, skip_emptied=skip_emptied, taylor=taylor, weight_decay=weight_decay,
                 indefinite=indefinite, selection=selection)
    if count is not None and sparsity is not None:
        raise ValueError("prune: give sparsity= or count=, not both")
    v = options.convert("prune", given)
    target = check_target(v["sparsity"], v["count"], v["steps"])
    if target[0] == "count" and (scope == "layer" or method == "layer_obs"):
        raise ValueError("prune: count= is one global number; with scope='layer' or layer_obs give sparsity=")
    curvature = _resolve_curvature(method, curvature, diagonal)
    options.refuse_inapplicable("prune", v, method, curvature)
    if retrain is not None:
        _check_retrain(retrain)
    inp = validate(model, params, X, y, loss)
    X, y = inp.X, inp.y  # float64 inputs and checked targets from here on
    opts = dict(scope=scope, curvature=curvature, diagonal=diagonal, damping=v["damping"],
                group_size=v["group_size"], mc=monte_carlo_kwargs(curvature, samples, seed, targets), seed=seed,
                include_bias=v["include_bias"], retrain=retrain, max_layer_fraction=v["max_layer_fraction"],
                eigenvalues=eigenvalues, progress=v["progress"], target=target, skip_emptied=v["skip_emptied"],
                protected=_check_protected(model, protected), taylor=taylor, weight_decay=v["weight_decay"],
                indefinite=indefinite, selection=selection)
    if method in UNSTRUCTURED:
        return _prune_unstructured(model, params, X, y, loss, method, steps, mask, opts)
    if method in STRUCTURED:
        return prune_units(model, params, X, y, loss, method, target, steps, mask, opts)
    if v["steps"] != 1:
        raise ValueError("eigendamage is one-shot (steps=1): it changes the architecture; prune the returned "
                         "model again for another round")
    return eigendamage(model, params, X, y, loss, target, opts)


prune.__doc__ += "\n    Options by method\n    -----------------\n" + "".join(
    f"    {line}\n" for line in options.describe("prune").splitlines()[1:])


def _check_retrain(retrain):
    """The ``retrain`` dict's options, checked as :func:`refprune.train` would check them
    but before any pruning is done (``mask`` is prune's own)."""
    allowed = [o.name for o in options.TABLE["train"] if o.name != "mask"]
    unknown = sorted(set(retrain) - set(allowed), key=str)
    if unknown:
        raise ValueError(f"prune: retrain has options train does not take here: {unknown}; it takes {allowed}")
    options.convert("train", retrain, where="prune: retrain")
    given = [k for k in ("lr", "momentum", "weight_decay") if retrain.get(k) is not None]
    if retrain.get("optimizer") is not None and given:
        raise TypeError(f"prune: retrain's {', '.join(given)} belong to its optimizer when one is given; set them "
                        "on the optimizer")


def _check_protected(model, protected):
    if protected is None:
        return np.zeros(model.n_params, dtype=bool)
    p = np.asarray(protected)
    if p.shape != (model.n_params,) or p.dtype != bool:
        raise ValueError(f"protected must be a bool array of shape ({model.n_params},), got {p.dtype} {p.shape}")
    return p.copy()


def layer_ids(model):
    """The affine layer's number for every coordinate of ``theta``."""
    ids = np.zeros(model.n_params, dtype=np.int64)  # every coordinate belongs to an affine layer
    for i, (_, _, start, _, stop) in enumerate(affine_layers(model)):
        ids[start:stop] = i
    return ids


def _targets(model, prunable, mask, target, k, steps, scope, base):
    """Number of coordinates to remove now: ``[(indices of a group, count)]``."""
    if scope == "global":
        total = int(prunable.sum())
        done = int((prunable & ~mask).sum())
        return [(np.flatnonzero(mask), round_goal(target, total, k, steps, base) - done)]
    out = []
    for _, _, start, _, stop in affine_layers(model):
        c = prunable[start:stop]
        total, done = int(c.sum()), int((c & ~mask[start:stop]).sum())
        out.append((start + np.flatnonzero(mask[start:stop]), round_goal(target, total, k, steps) - done))
    return out


def _rank_select(score, groups, candidates, layer_of):
    """The ``count`` lowest scores of each group's candidates, in order; with
    ``layer_of``, a candidate that would empty its layer is skipped."""
    removed = []
    for idx, c in groups:
        if c <= 0:
            continue
        cand = idx[candidates[idx]]
        ranked = cand[np.argsort(score[cand], kind="stable")]
        if layer_of is None:
            removed.append(ranked[:c])
            continue
        left = np.bincount(layer_of[candidates])  # a candidate's own layer is always counted
        take = []
        for q in ranked:
            if len(take) == c:
                break
            if left[layer_of[q]] > 1:
                take.append(q)
                left[layer_of[q]] -= 1
        if len(take) < c:
            raise ValueError(f"prune: only {len(take)} of {c} weights can go while one stays in every layer")
        removed.append(np.array(take))
    return np.concatenate(removed)  # called only when some group has a removal


def _prune_unstructured(model, params, X, y, loss, method, steps, mask, o):
    mask = check_mask(model, mask)
    prunable = prunable_mask(model, o["include_bias"]) & ~o["protected"]
    layer_of = layer_ids(model) if o["skip_emptied"] else None
    theta = flatten_params(params) * mask
    wd, target = o["weight_decay"], o["target"]
    base = int((prunable & ~mask).sum())
    records = []
    for k in range(1, steps + 1):
        frac = target[1] * k / steps if target[0] == "sparsity" else None
        args = (model, unflatten_params(model, theta), X, y, loss)
        candidates = prunable & mask
        sal, full = None, float("nan")
        if method == "layer_obs":
            new, removed, predicted = layer_obs_round(model, theta, X, mask, prunable, frac, o["damping"],
                                                      o["selection"])
            if not len(removed):
                continue
        else:
            groups = _targets(model, prunable, mask, target, k, steps, o["scope"], base)
            n_now = sum(max(c, 0) for _, c in groups)
            free = int((prunable & mask).sum())
            if n_now > free:
                raise ValueError(f"prune ({method}): {n_now} removals requested but only {free} prunable weights "
                                 "are left (fewer prunable weights than requested)")
            if n_now <= 0:
                continue
            g = _d.grad(*args) + wd * theta
            if method in ("magnitude", "obd"):
                diag = None if method == "magnitude" else U.diagonal_of(o["curvature"], o["diagonal"], args, o["mc"],
                                                                         wd)
                score = np.abs(theta) if diag is None else theta**2 * diag / 2.0
                removed = _rank_select(score, groups, candidates, layer_of)
                new = theta.copy()
                new[removed] = 0.0
                sal = score[removed]
                d = new - theta
                predicted = float("nan") if diag is None else float(np.sum(sal))
                full = float("nan") if diag is None else float(g @ d + 0.5 * np.sum(diag * d * d))
            else:
                kind = "woodfisher" if method == "woodfisher" else o["curvature"]
                H = None if method == "woodfisher" else U.curvature_matrix(kind, args, o["mc"], wd)
                Hinv_of = U.obs_inverse_factory(kind, args, o["damping"], wd, o["indefinite"], H)
                fullkw = dict(grad=g, H=H + o["damping"] * np.eye(len(H))) if o["taylor"] == "full" else {}
                new, removed, sal, predicted = U.select_obs(theta, candidates, [c for _, c in groups], Hinv_of,
                                                            o["group_size"], [idx for idx, _ in groups],
                                                            layer_of=layer_of, **fullkw)
                d = new - theta
                if o["taylor"] == "full":
                    full, predicted = predicted, predicted - float(g @ d)
                else:
                    full = predicted + float(g @ d)
        new_mask = mask.copy()
        new_mask[removed] = False
        check_not_emptied(model, new_mask, prunable)
        rec = record_step(model, X, y, loss, k, theta, new, removed, predicted, sparsity_of(new_mask, prunable), sal,
                          full, wd)
        mask, theta = new_mask, new * new_mask
        retrain = o["retrain"]
        if retrain and wd and retrain.get("optimizer") is None:  # an optimizer carries its own weight decay
            retrain = dict(retrain)
            retrain.setdefault("weight_decay", wd)
        theta, rec.retrain_history = maybe_retrain(model, theta, X, y, loss, mask, retrain, o["seed"])
        records.append(rec)
        if o["progress"]:
            print(f"prune ({method}): step {k}/{steps}, sparsity {rec.sparsity:.3f}, loss {rec.loss:.5f}",
                  file=sys.stderr)
    if not records:
        warn_nothing_removed(method, target, int(prunable.sum()), base)
    return PruneResult(model, unflatten_params(model, theta), mask, records, method)
