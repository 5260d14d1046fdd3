"""What a pruning step records (``refprune.pruning.records``): the objective with weight
decay, the change without the update, the table of ``summary()``, and when the warning
that the quadratic model does not describe a step is given."""

import warnings

import numpy as np
import pytest

import refprune as rp
from refprune.pruning.records import PruneStep, _warn_if_untrustworthy


def step(predicted, actual, loss=1.0, predicted_full=float("nan")):
    return PruneStep(3, np.zeros(0, dtype=np.int64), predicted, actual, actual, loss, 0.5,
                     predicted_full=predicted_full)


def warns(s):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _warn_if_untrustworthy(s)
    return [str(w.message) for w in caught if issubclass(w.category, rp.PruningWarning)]


def test_when_the_prediction_is_not_trusted():
    assert warns(step(1.0, 1000.5)) == [
        "pruning step 3: actual change 1.000e+03 is 1.0e+03 times the predicted 1.000e+00; the quadratic model "
        "does not describe a step this large (prune in more steps, or retrain between them)"]
    assert warns(step(1.0, 1000.0)) == []  # exactly 1e3 times is not beyond
    assert warns(step(2.0, -4000.0))[0].startswith("pruning step 3: actual change -4.000e+03 is 2.0e+03 times")
    # the full-Taylor prediction is used when there is one
    assert warns(step(1e-10, 10.0, predicted_full=1.0)) == []
    assert len(warns(step(1.0, 5000.0, predicted_full=float("nan")))) == 1
    # nothing to compare
    assert warns(step(1.0, float("inf"))) == [] and warns(step(float("nan"), 5.0)) == []
    # changes below 1e-12 of the loss are rounding: a prediction of 0 is not contradicted
    assert warns(step(0.0, 5e-7, loss=1e6)) == []
    assert len(warns(step(0.0, 5e-3, loss=1e6))) == 1
    assert len(warns(step(0.0, 1.5e-9, loss=0.5))) == 1


def test_steps_record_the_objective_with_weight_decay():
    rng = np.random.default_rng(0)
    model = rp.Sequential(rp.Linear(3, 4), rp.Tanh(), rp.Linear(4, 2))
    params = model.init(1)
    X, y = rng.standard_normal((10, 3)), rng.integers(0, 2, 10)
    loss, wd = rp.CrossEntropyLoss(), 0.2
    r = rp.prune(model, params, X, y, loss, method="obs", count=4, damping=0.1, weight_decay=wd)
    s = r.steps[0]
    theta0, theta1 = rp.flatten_params(params), rp.flatten_params(r.params)

    def objective(theta):
        return rp.loss(model, rp.unflatten_params(model, theta), X, y, loss) + wd / 2 * theta @ theta

    zeroed = theta0.copy()
    zeroed[s.removed] = 0.0
    assert s.actual == pytest.approx(objective(theta1) - objective(theta0), rel=1e-12)
    assert s.actual_without_update == pytest.approx(objective(zeroed) - objective(theta0), rel=1e-12)
    assert s.loss == pytest.approx(objective(theta1), rel=1e-13)
    assert s.saliencies.dtype == np.float64
    lines = r.summary().split("\n")
    header = lines.index(next(line for line in lines if line.lstrip().startswith("step")))
    assert lines[header].split() == ["step", "removed", "predicted", "with", "g", "actual", "no", "update", "loss",
                                     "sparsity"]
    assert len(lines) == header + 2 and lines[header + 1].split()[:2] == ["1", "4"]
