"""Divergence is an error, not inf parameters: every optimizer step and ``train`` check
the new parameters, raise :class:`refprune.DivergenceError` naming the step, the learning
rate and the largest update, let no NumPy overflow warning through, and leave the
optimizer's state and the caller's arrays as they were."""

import copy
import warnings

import numpy as np
import pytest

import refprune as rp
from refprune import optim

from cases import make


def steep():
    """A linear model with inputs of size 1e6 and squared error: the gradient is about
    1e11 (computed independently below), so lr=1e300 overflows in the first step."""
    rng = np.random.default_rng(0)
    model = rp.Sequential(rp.Linear(3, 2))
    return model, model.init(0), 1e6 * rng.standard_normal((5, 3)), np.zeros((5, 2)), rp.MSELoss()


def test_divergence_error_is_a_floating_point_error_and_exported():
    assert issubclass(rp.DivergenceError, FloatingPointError)
    assert rp.DivergenceError is optim.DivergenceError
    assert "DivergenceError" in rp.__all__ and "DivergenceError" in optim.__all__


def test_sgd_step_to_inf_names_step_lr_and_largest_update():
    m, p, X, Y, l = steep()
    copies = [a.copy() for a in p] + [X.copy()]
    # the gradient by hand: MSE mean over N C = 10 outputs, d/dW = 2/(N C) (W X^T + b - Y) X^T
    W, b = p
    E = X @ W.T + b - Y
    gW, gb = 2 / E.size * E.T @ X, 2 / E.size * E.sum(axis=0)
    g = np.concatenate([gW.ravel(), gb])
    q = int(np.argmax(np.abs(g)))
    opt = optim.SGD(lr=1e300, momentum=0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NumPy overflow warning leaks
        with pytest.raises(rp.DivergenceError) as err:
            opt.step(m, p, X, Y, l)
    msg = str(err.value)
    assert msg.startswith("SGD: step 1 diverged: lr=1e+300 times the step |buf| = ")
    assert f"|buf| = {abs(g[q]):.3e} gives the largest update, inf (coordinate {q}, " in msg
    bad = int(np.sum(np.abs(g) > np.finfo(float).max / 1e300))  # the coordinates whose update overflows
    assert f"{bad} of 8 parameters would be NaN or inf; lower lr" in msg
    # nothing changed: the optimizer's state and the caller's arrays
    assert opt.steps == 0 and opt.buf is None
    assert all(np.array_equal(a, c) for a, c in zip(list(p) + [X], copies))
    # a small learning rate works from the same state
    opt.lr = 1e-15
    new = opt.step(m, p, X, Y, l)
    assert opt.steps == 1 and np.all(np.isfinite(rp.flatten_params(new)))


@pytest.mark.parametrize("make_opt", [
    lambda: optim.KFAC(lr=0.1, damping=1e-3, momentum=0.5, refresh_interval=2),
    lambda: optim.EKFAC(lr=0.1, damping=1e-3, momentum=0.5, scale_interval=2),
    lambda: optim.NaturalGradient(lr=0.1, damping=1e-3, momentum=0.5, ema_decay=0.5),
], ids=["kfac", "ekfac", "natural"])
def test_a_diverging_step_leaves_the_state_as_before(make_opt):
    m, p, X, y, l = make("conv-tanh-avgpool", "ce-mean", n=4)
    opt = make_opt()
    q = p
    for _ in range(2):
        q = opt.step(m, q, X, y, l)
    before = copy.deepcopy(opt.__dict__)
    opt.lr = 1e308  # the next step's update overflows
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(rp.DivergenceError, match=rf"^{opt.name}: step 3 diverged: lr=1e\+308 .* lower lr or "
                                                     r"raise damping$"):
            opt.step(m, q, X, y, l)
    opt.lr = before["lr"]
    after = opt.__dict__
    assert set(after) == set(before) and after["steps"] == 2
    assert np.array_equal(after["buf"], before["buf"])
    # the curvature averages too: the next step equals the one a fresh copy of the state takes
    twin = make_opt()
    twin.__dict__.update(copy.deepcopy(before))
    a, b = opt.step(m, q, X, y, l), twin.step(m, q, X, y, l)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))


def test_train_reports_the_epoch_and_batch_of_a_diverging_step():
    m, p, X, Y, l = steep()
    copies = [a.copy() for a in p]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(rp.DivergenceError, match=r"^train: epoch 1, batch 1: SGD: step 1 diverged: lr=1e\+300 "):
            rp.train(m, p, X, Y, l, lr=1e300, epochs=2, batch_size=2)
    assert all(np.array_equal(a, c) for a, c in zip(p, copies))


def test_train_overflowing_forward_pass_is_divergence_without_warnings():
    """lr=1e308 keeps the parameters finite but huge; the loss after the second epoch
    overflows.  Its NumPy warnings belong to the error, and are not issued."""
    m, p, X, y, l = make("conv-tanh-avgpool", "ce-mean", n=4)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(rp.DivergenceError, match=r"^train: diverged in epoch 2, computing the epoch's loss "
                                                     r"\(the loss is not finite .*lower lr \(lr=1e\+308\)$"):
            rp.train(m, p, X, y, l, lr=1e308, epochs=2)
    assert not [w for w in seen if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in seen]


def test_train_reissues_warnings_of_an_epoch_that_ends_normally():
    m, p, X, y, l = make("mlp-tanh", "ce-mean", n=4)

    def noisy(epoch, params, value):
        warnings.warn("from the callback", UserWarning)

    with pytest.warns(UserWarning, match="from the callback"):
        rp.train(m, p, X, y, l, epochs=1, callback=noisy)
