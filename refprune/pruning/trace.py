"""Sweeps from one factorisation, and every criterion's saliencies.

:func:`obs_trace` removes weights one at a time from a single inverse by elimination
(``docs/derivations.md`` §9) and records, for every step, the removed index, its predicted
change, the weights after the update and, when asked, the actual objective and any
metric: the curve "loss against weights removed" of Hassibi & Stork (1993) in one call,
at the cost of one inversion.  :func:`saliencies` gives the ranking quantity of every
criterion at the current weights.
"""

import sys
import time
from dataclasses import dataclass, field

import numpy as np

from .. import derivatives as _d
from .. import options
from ..checks import validate
from ..curvature.output_factors import monte_carlo_kwargs
from ..params import flatten_params, unflatten_params
from ..scalars import is_int
from . import unstructured as U
from .masks import check_mask, prunable_mask
from .obs import OBS
from ..options import SALIENCY_METHODS
from .prune import _check_protected, _resolve_curvature, layer_ids
from .records import evaluate
from .structured import unit_saliencies


@dataclass
class OBSTrace:
    """One OBS sweep.  Row ``i`` of ``theta`` (``(k + 1, n)``) holds the weights after
    ``i`` removals (row 0: the start); ``order[i]`` and ``increments[i]`` are the
    ``i+1``-th removal and its predicted change, ``predicted[i]`` the sum up to it
    (the model's change from the start); ``loss[i]`` and ``metrics[name][i]`` are
    measured on ``theta[i]`` (``loss`` is the objective, with weight decay)."""

    model: object
    order: np.ndarray
    increments: np.ndarray
    predicted: np.ndarray
    theta: np.ndarray
    loss: np.ndarray = None
    metrics: dict = field(default_factory=dict)

    def params(self, step):
        """The parameter list after ``step`` removals."""
        return unflatten_params(self.model, self.theta[step])


def obs_trace(model, params, X, y, loss, count=None, curvature="ggn", damping=0.0, taylor="second_order",
              weight_decay=0.0, protected=None, mask=None, include_bias=False, skip_emptied=False,
              indefinite="raise", evaluate_loss=True, metrics=None, samples=1, seed=0, targets=None,
              progress=False):
    """Sequential OBS from one inverse, every step recorded (see :class:`OBSTrace`).

    Options are checked through :data:`refprune.options.TABLE` (``TABLE["obs_trace"]``):
    flags must be ``True`` or ``False``, numbers numbers, and ``samples``, ``seed`` and
    ``targets`` are refused unless ``curvature="mc_fisher"``.

    Parameters
    ----------
    count : int, optional
        Removals to make; default every prunable free weight (less one per layer with
        ``skip_emptied``).
    curvature, damping, taylor, weight_decay, indefinite, samples, seed, targets :
        As for :func:`refprune.prune` with ``method="obs"`` (``curvature`` by name, or a
        precomputed matrix or operator).
    protected, mask, include_bias, skip_emptied :
        Which coordinates may go, as for :func:`refprune.prune`.
    evaluate_loss : bool
        Record the actual objective after every step (one forward pass each).
    metrics : dict of name -> callable(model, params) -> float, optional
        Anything else to record after every step (test accuracy, say).
    progress : bool
        Report on stderr every tenth of the sweep.
    """
    given = dict(count=count, curvature=curvature, damping=damping, taylor=taylor, weight_decay=weight_decay,
                 protected=protected, mask=mask, include_bias=include_bias, skip_emptied=skip_emptied,
                 indefinite=indefinite, evaluate_loss=evaluate_loss, metrics=metrics, samples=samples, seed=seed,
                 targets=targets, progress=progress)
    v = options.convert("obs_trace", given)
    inp = validate(model, params, X, y, loss)
    curvature = _resolve_curvature("obs", curvature, "exact", "obs_trace")  # diagonal= is OBD's alone
    options.refuse_inapplicable("obs_trace", v, "obs", curvature)
    damping, weight_decay = v["damping"], v["weight_decay"]
    include_bias, skip_emptied, evaluate_loss, progress = (v[k] for k in ("include_bias", "skip_emptied",
                                                                          "evaluate_loss", "progress"))
    if metrics is not None and (not isinstance(metrics, dict) or not all(callable(f) for f in metrics.values())):
        raise TypeError("obs_trace: metrics must be a dict of name -> callable(model, params)")
    mask = check_mask(model, mask)
    candidates = prunable_mask(model, include_bias) & ~_check_protected(model, protected) & mask
    layer_of = layer_ids(model) if skip_emptied else None
    n_cand = int(candidates.sum())
    if count is None:
        count = n_cand - (len(np.unique(layer_of[candidates])) if skip_emptied else 0)
    if not is_int(count) or not 0 <= count <= n_cand:
        raise ValueError(f"obs_trace: count must be an int in [0, {n_cand}] (the prunable free weights), got "
                         f"{count!r}")
    theta0 = flatten_params([p for group in inp.grouped for p in group]) * mask
    args = (model, unflatten_params(model, theta0), X, y, loss)
    mc = monte_carlo_kwargs(curvature, samples, seed, targets)
    H = U.curvature_matrix(curvature, args, mc, weight_decay)
    idx = np.flatnonzero(mask)
    Hinv = U.obs_inverse_factory(curvature, args, damping, weight_decay, indefinite, H)(idx)
    full = {}
    if taylor == "full":
        g = _d.grad(*args) + weight_decay * theta0
        full = dict(grad=g[idx], H=H[np.ix_(idx, idx)] + damping * np.eye(idx.size))
    solver = OBS(Hinv, theta0[idx], prunable=candidates[idx], **full)
    thetas = np.empty((count + 1, model.n_params))
    thetas[0] = theta0
    sub_layers = None if layer_of is None else layer_of[idx]
    every = max(1, count // 10)
    t0 = time.perf_counter()
    for i in range(count):
        solver.prune(1, layer_of=sub_layers)
        thetas[i + 1] = 0.0
        thetas[i + 1, idx] = solver.w
        if progress and ((i + 1) % every == 0 or i + 1 == count):
            print(f"obs_trace: {i + 1}/{count} removed, predicted change {sum(solver.increments):.4g} "
                  f"[{time.perf_counter() - t0:.1f} s]", file=sys.stderr)
    order = idx[solver.order]
    inc = np.array(solver.increments)
    trace = OBSTrace(model, order, inc, np.cumsum(inc), thetas)
    if evaluate_loss:
        trace.loss = np.array([evaluate(model, t, X, y, loss, weight_decay) for t in thetas])
    for name, fn in (metrics or {}).items():
        trace.metrics[name] = np.array([float(fn(model, unflatten_params(model, t))) for t in thetas])
    return trace


def saliencies(model, params, X, y, loss, method="obs", curvature=None, diagonal="exact", damping=0.0,
               taylor="second_order", weight_decay=0.0, include_bias=False, mask=None, indefinite="raise",
               samples=1, seed=0, targets=None):
    """Each criterion's ranking quantity at ``params`` (lowest is removed first).

    Unstructured methods (``"magnitude"``, ``"obd"``, ``"obs"``, ``"woodfisher"``): an
    ``(n,)`` array over ``theta``, ``inf`` where a coordinate may not be removed:
    ``|w_q|``, ``w_q^2 h_qq / 2`` or the OBS saliency (``taylor="full"``: of the full
    Taylor model).  Structured methods: ``{layer index: (units,)}`` as
    :func:`refprune.pruning.unit_saliencies`.

    Options are checked through :data:`refprune.options.TABLE` (``TABLE["saliencies"]``;
    ``refprune.options.describe("saliencies", method=...)`` lists a method's): one that
    does not apply to ``method`` is refused by name when given a value other than its
    default (``taylor="full"`` with OBD, ``mask=`` or ``weight_decay=`` with a structured
    method, ``targets=`` without ``curvature="mc_fisher"``...).  A precomputed
    ``curvature`` must be symmetric (``||C - C^T||_F <= 1e-10 ||C||_F``).
    """
    if method not in SALIENCY_METHODS:
        raise ValueError(f"saliencies: method must be one of magnitude, obd, obs, woodfisher, c_obd, c_obs, "
                         f"kron_obd, kron_obs; got {method!r}")
    given = dict(method=method, curvature=curvature, diagonal=diagonal, damping=damping, taylor=taylor,
                 weight_decay=weight_decay, include_bias=include_bias, mask=mask, indefinite=indefinite,
                 samples=samples, seed=seed, targets=targets)
    v = options.convert("saliencies", given)
    curvature = _resolve_curvature(method, curvature, diagonal, "saliencies")
    options.refuse_inapplicable("saliencies", v, method, curvature)
    damping, weight_decay, include_bias = v["damping"], v["weight_decay"], v["include_bias"]
    mc = dict(samples=samples, seed=seed, targets=targets)
    if method in ("c_obd", "c_obs", "kron_obd", "kron_obs"):
        return unit_saliencies(model, params, X, y, loss, method=method, curvature=curvature, damping=damping, **mc)
    validate(model, params, X, y, loss)
    mask = check_mask(model, mask)
    cand = prunable_mask(model, include_bias) & mask
    theta = flatten_params(params) * mask
    args = (model, unflatten_params(model, theta), X, y, loss)
    out = np.full(model.n_params, np.inf)
    if method == "magnitude":
        out[cand] = np.abs(theta[cand])
        return out
    if method == "obd":
        d = U.diagonal_of(curvature, diagonal, args, mc, weight_decay)
        out[cand] = theta[cand] ** 2 * d[cand] / 2.0
        return out
    kind = "woodfisher" if method == "woodfisher" else curvature
    H = None if method == "woodfisher" else U.curvature_matrix(kind, args, mc, weight_decay)
    idx = np.flatnonzero(mask)
    grad = None  # the full Taylor model's saliencies need the gradient and the inverse only
    if taylor == "full":
        if H is None:
            raise ValueError("saliencies: taylor='full' needs a dense curvature (method 'obs')")
        grad = (_d.grad(*args) + weight_decay * theta)[idx]
    solver = OBS(U.obs_inverse_factory(kind, args, damping, weight_decay, indefinite, H)(idx), theta[idx],
                 prunable=cand[idx], grad=grad)
    out[idx] = solver.saliencies()
    return out
