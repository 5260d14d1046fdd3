"""What a pruning run reports: one :class:`PruneStep` per round and a :class:`PruneResult`."""

from dataclasses import dataclass, field

import numpy as np

from ..derivatives import loss as loss_value
from ..params import flatten_params, unflatten_params
from ..training import train
from .masks import sparsity_of


@dataclass
class PruneStep:
    """One pruning step.

    ``predicted``: the quadratic model's increase (``nan`` for magnitude, which has no
    loss model; for ``layer_obs`` the increase of the layer-wise objective).
    ``actual``: loss after the step (with the criterion's update) minus loss before.
    ``actual_without_update``: the same with the removed weights zeroed and nothing
    else changed.
    """

    step: int
    removed: np.ndarray
    predicted: float
    actual: float
    actual_without_update: float
    loss: float
    sparsity: float
    retrain_history: list = field(default_factory=list)


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
        lines = [f"{self.method}: {len(self.steps)} step(s)",
                 f"{'step':>4} {'removed':>8} {'predicted':>12} {'actual':>12} {'no update':>12} {'loss':>10} {'sparsity':>8}"]
        for s in self.steps:
            lines.append(f"{s.step:4d} {len(s.removed):8d} {s.predicted:12.4e} {s.actual:12.4e} "
                         f"{s.actual_without_update:12.4e} {s.loss:10.5f} {s.sparsity:8.3f}")
        return "\n".join(lines)


def evaluate(model, theta, X, y, loss):
    return loss_value(model, unflatten_params(model, theta), X, y, loss)


def record_step(model, X, y, loss, k, theta_before, theta_after, removed, predicted, mask, prunable):
    L0 = evaluate(model, theta_before, X, y, loss)
    zeroed = theta_before.copy()
    zeroed[removed] = 0.0
    L1 = evaluate(model, theta_after, X, y, loss)
    return PruneStep(k, np.sort(removed), float(predicted), L1 - L0, evaluate(model, zeroed, X, y, loss) - L0, L1,
                     sparsity_of(mask, prunable))


def maybe_retrain(model, theta, X, y, loss, mask, retrain, seed):
    if not retrain:
        return theta, []
    opts = dict(retrain)
    opts.setdefault("seed", seed)
    p, hist = train(model, unflatten_params(model, theta), X, y, loss, mask=mask, **opts)
    return flatten_params(p), hist


