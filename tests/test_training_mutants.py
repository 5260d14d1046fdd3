"""train against hand-built expectations: its defaults (epochs, batch size, seed), SGD's
settings given to train, the callback's arguments, the progress report, warnings of an
epoch that ends normally, and the messages of its errors."""

import re
import warnings

import numpy as np
import pytest

import refprune as rp
from refprune.optim import base
from refprune.params import flatten_params, unflatten_params

from cases import small_mlp


class Recorder(base.Optimizer):
    """Plain gradient steps that record the batch sizes and can warn or blow up."""

    name = "recorder"

    def __init__(self, lr=0.1, warn=False, blow_up=False):
        self.warn, self.blow_up, self.sizes = warn, blow_up, []
        super().__init__(lr=lr)

    def precondition(self, inp, theta, g, free):
        self.sizes.append(len(inp.X))
        if self.warn:
            warnings.warn_explicit("from the step", UserWarning, "here.py", 7, source=self)
        if self.blow_up and self.steps == 1:
            return np.full_like(g, -1e308)  # finite parameters whose next forward pass overflows
        return g


def test_defaults_epochs_batch_size_seed():
    model, params, X, y, loss = small_mlp(n=40)
    opt = Recorder()
    out, history = rp.train(model, params, X, y, loss, optimizer=opt)
    assert len(history) == 11  # 10 epochs, and the loss before the first
    assert opt.sizes == [32, 8] * 10
    out0, history0 = rp.train(model, params, X, y, loss, optimizer=Recorder(), seed=0)
    assert history == history0
    assert all(np.array_equal(a, b) for a, b in zip(out, out0))


def test_sgd_settings_given_to_train():
    model, params, X, y, loss = small_mlp(n=8)
    theta = flatten_params(params)
    # two full-batch steps of heavy-ball SGD, written out
    g1 = rp.grad(model, params, X, y, loss) + 0.5 * theta
    t1 = theta - 0.2 * g1
    p1 = unflatten_params(model, t1)
    g2 = rp.grad(model, p1, X, y, loss) + 0.5 * t1
    for momentum in (0.0, 0.3):
        t2 = t1 - 0.2 * (momentum * g1 + g2)
        out, _ = rp.train(model, params, X, y, loss, epochs=2, batch_size=8, lr=0.2, momentum=momentum,
                          weight_decay=0.5)
        np.testing.assert_allclose(flatten_params(out), t2, rtol=1e-12, atol=1e-14)


def test_sgd_settings_with_an_optimizer_are_refused():
    model, params, X, y, loss = small_mlp(n=8)
    with pytest.raises(TypeError) as e:
        rp.train(model, params, X, y, loss, momentum=0.5, weight_decay=0.1, optimizer=rp.optim.SGD())
    assert str(e.value) == "train: momentum, weight_decay belong to the optimizer when one is given; set them on SGD"


def test_messages_name_train():
    model, params, X, y, loss = small_mlp(n=8)
    with pytest.raises(ValueError, match=r"^train: weight_decay must be a finite number >= 0 or None, got -1"):
        rp.train(model, params, X, y, loss, weight_decay=-1.0)
    with pytest.raises(TypeError) as e:
        rp.train(model, params, X, y, loss, optimizer=3)
    assert str(e.value) == ("train: optimizer must be a refprune.optim optimizer (SGD, NaturalGradient, KFAC, "
                            "EKFAC), got int")
    with pytest.raises(TypeError, match=r"^train: mask must be a bool array"):
        rp.train(model, params, X, y, loss, mask=np.ones(flatten_params(params).size))


def test_callback_arguments():
    model, params, X, y, loss = small_mlp(n=8)
    calls = []
    out, history = rp.train(model, params, X, y, loss, epochs=3, batch_size=4,
                            callback=lambda e, p, l: calls.append((e, p, l)))
    assert [c[0] for c in calls] == [1, 2, 3]
    assert [c[2] for c in calls] == history[1:]
    for e, p, l in calls:
        assert l == rp.loss(model, p, X, y, loss)
    assert all(np.array_equal(a, b) for a, b in zip(calls[-1][1], out))


def test_progress_report(capsys):
    model, params, X, y, loss = small_mlp(n=8)
    _, history = rp.train(model, params, X, y, loss, epochs=2, batch_size=4, progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    for k, line in enumerate(lines, 1):
        m = re.fullmatch(rf"train: epoch {k}/2  loss (\S+)  \((\S+) s\)", line)
        assert m, line
        assert float(m.group(1)) == pytest.approx(history[k], abs=1e-6)
        assert 0.0 <= float(m.group(2)) < 60.0


def test_warnings_of_a_normal_epoch_are_issued():
    model, params, X, y, loss = small_mlp(n=8)
    opt = Recorder(warn=True)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        rp.train(model, params, X, y, loss, epochs=1, batch_size=8, optimizer=opt)
    ours = [w for w in seen if str(w.message) == "from the step"]
    assert len(ours) == 1
    w = ours[0]
    assert (w.category, w.filename, w.lineno, w.source) == (UserWarning, "here.py", 7, opt)


def test_overflow_in_a_batch_names_the_batch():
    model = rp.Sequential(rp.Linear(2, 1))
    params = [np.array([[0.5, -0.5]]), np.zeros(1)]
    X, y = np.ones((4, 2)), np.ones((4, 1))
    with pytest.raises(base.DivergenceError) as e:
        rp.train(model, params, X, y, rp.MSELoss(), epochs=1, batch_size=2, optimizer=Recorder(lr=1.0, blow_up=True))
    assert str(e.value).startswith("train: diverged in epoch 1, batch 2 (the network's output is not finite")
    assert str(e.value).endswith("; lower lr (lr=1)")
