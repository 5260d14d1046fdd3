"""What a pruning run reports: one :class:`PruneStep` per round and a :class:`PruneResult`."""

from dataclasses import dataclass, field

import numpy as np

from .. import user_warnings
from ..derivatives import loss as loss_value
from ..params import flatten_params, unflatten_params
from ..training import train


@dataclass
class PruneStep:
    """One pruning step.

    ``removed``: the removed coordinates in the order the criterion took them;
    ``saliencies``: the predicted change charged to each, in that order.
    ``predicted``: the quadratic term ``1/2 d^T H d`` of the criterion's model for the
    step ``d`` it took (``nan`` for magnitude, which has no loss model; for ``layer_obs``
    the increase of the layer-wise objective); ``predicted_full``: with the first-order
    term, ``g^T d + 1/2 d^T H d`` (``docs/conventions.md`` §7).
    ``actual``: the objective after the step (with the criterion's update) minus before;
    ``actual_without_update``: the same with the removed weights zeroed and nothing
    else changed.  The objective is the loss plus ``weight_decay/2 |theta|^2``.
    """

    step: int
    removed: np.ndarray
    predicted: float
    actual: float
    actual_without_update: float
    loss: float
    sparsity: float
    retrain_history: list = field(default_factory=list)
    saliencies: np.ndarray = None
    predicted_full: float = float("nan")


@dataclass
class PruneResult:
    """``model`` and ``params`` after pruning (a smaller model for structured methods and
    EigenDamage), ``mask`` over the result's ``theta`` and the per-step ``steps``."""

    model: object
    params: list
    mask: np.ndarray
    steps: list
    method: str
    #: structured methods: the original architecture with the removed units zeroed
    #: (it computes the same function as ``model``)
    masked_model: object = None
    masked_params: list = None

    def summary(self):
        """The steps as a table: removed, predicted (without and with the gradient
        term), actual with and without the update, loss, sparsity."""
        lines = [f"{self.method}: {len(self.steps)} step(s)",
                 f"{'step':>4} {'removed':>8} {'predicted':>12} {'with g':>12} {'actual':>12} {'no update':>12} "
                 f"{'loss':>10} {'sparsity':>8}"]
        for s in self.steps:
            lines.append(f"{s.step:4d} {len(s.removed):8d} {s.predicted:12.4e} {s.predicted_full:12.4e} "
                         f"{s.actual:12.4e} {s.actual_without_update:12.4e} {s.loss:10.5f} {s.sparsity:8.3f}")
        return "\n".join(lines)


class PruningWarning(UserWarning):
    """A pruning request that removed nothing, or a prediction not to be trusted."""


def warn(message):
    """Issue a :class:`PruningWarning` attributed to the first caller outside refprune."""
    user_warnings.warn(message, PruningWarning)


def evaluate(model, theta, X, y, loss, weight_decay=0.0):
    """The objective ``L(theta) + weight_decay/2 |theta|^2``."""
    value = loss_value(model, unflatten_params(model, theta), X, y, loss)
    return value + 0.5 * weight_decay * float(theta @ theta)


def record_step(model, X, y, loss, k, theta_before, theta_after, removed, predicted, sparsity,
                saliencies=None, predicted_full=float("nan"), weight_decay=0.0):
    """A :class:`PruneStep` with the objective re-evaluated before and after the
    step, and with the removed weights only zeroed; warns when the prediction is
    far off.  ``sparsity`` is the caller's: of weights or of units."""
    L0 = evaluate(model, theta_before, X, y, loss, weight_decay)
    zeroed = theta_before.copy()
    zeroed[removed] = 0.0
    L1 = evaluate(model, theta_after, X, y, loss, weight_decay)
    step = PruneStep(k, np.asarray(removed), float(predicted), L1 - L0,
                     evaluate(model, zeroed, X, y, loss, weight_decay) - L0, L1, float(sparsity),
                     saliencies=saliencies,
                     predicted_full=float(predicted_full))
    _warn_if_untrustworthy(step)
    return step


def _warn_if_untrustworthy(step):
    """The quadratic model is local: say so when the observed change is orders of
    magnitude beyond the prediction (a step far outside the model's trust region)."""
    pred = step.predicted_full if np.isfinite(step.predicted_full) else step.predicted
    if not np.isfinite(pred) or not np.isfinite(step.actual):
        return
    # below 1e-12 of the loss a change is rounding, whatever the prediction
    scale = 1e-12 * max(1.0, abs(step.loss))
    if abs(step.actual) > 1e3 * max(abs(pred), scale):
        warn(
            f"pruning step {step.step}: actual change {step.actual:.3e} is {abs(step.actual) / max(abs(pred), scale):.1e} "
            f"times the predicted {pred:.3e}; the quadratic model does not describe a step this large "
            "(prune in more steps, or retrain between them)")


def maybe_retrain(model, theta, X, y, loss, mask, retrain, seed):
    """Fine-tune with the mask when ``retrain`` (a dict of :func:`refprune.train`
    options) is given; returns ``(theta, loss history)``."""
    if not retrain:
        return theta, []
    opts = dict(retrain)
    opts.setdefault("seed", seed)
    p, hist = train(model, unflatten_params(model, theta), X, y, loss, mask=mask, **opts)
    return flatten_params(p), hist


