"""The losses' reductions and Monte Carlo draws against their written definitions.

- ``reduction="sum"``: ``L = sum_n l_n`` (PyTorch's definition, ``docs/conventions.md`` §2),
  computed here from the log-softmax by hand.
- The draws of ``curvature="mc_fisher"`` follow the recipe of ``docs/conventions.md`` §3
  bit for bit: the test draws with that recipe, written out element by element, and the
  Monte Carlo Fisher from ``seed=`` must equal the one from those draws given as
  ``targets=`` (exactly for labels and 0/1 targets; to rounding for values, which hold
  the outputs computed here by hand).
- The inverse-CDF and Bernoulli draws at their boundaries (``u`` exactly 0 against a
  probability of exactly 0), with a generator that returns chosen values."""

import numpy as np
import pytest

import refprune as rp


def _linear_problem(C, N=5, seed=0):
    model = rp.Sequential(rp.Linear(3, C))
    params = model.init(seed=seed)
    X = np.random.default_rng(seed + 1).standard_normal((N, 3))
    f = X @ params[0].T + params[1]  # the outputs, by hand
    return model, params, X, f


def test_cross_entropy_sum_is_the_sum_of_the_sample_losses():
    model, params, X, f = _linear_problem(4, N=6)
    y = np.array([0, 3, 1, 2, 2, 0])
    shifted = f - f.max(axis=1, keepdims=True)
    nll = np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(6), y]
    assert rp.loss(model, params, X, y, rp.CrossEntropyLoss("sum")) == pytest.approx(nll.sum(), rel=1e-14)
    assert rp.loss(model, params, X, y, rp.CrossEntropyLoss()) == pytest.approx(nll.mean(), rel=1e-14)
    # and its curvature carries no 1/N: the sum's Hessian is N times the mean's
    H_sum = rp.hessian(model, params, X, y, rp.CrossEntropyLoss("sum"))
    H_mean = rp.hessian(model, params, X, y, rp.CrossEntropyLoss())
    assert np.allclose(H_sum, 6 * H_mean, rtol=1e-13, atol=1e-15)


def _labels_by_the_recipe(f, samples, seed):
    rng = np.random.default_rng(seed)
    u = rng.random((samples, f.shape[0], 1))
    out = np.zeros((samples, f.shape[0]), dtype=np.int64)
    for n, row in enumerate(f):
        e = np.exp(row - row.max())
        cdf = np.cumsum(e / e.sum())
        for s in range(samples):
            out[s, n] = sum(1 for k in range(len(row) - 1) if cdf[k] <= u[s, n, 0])
    return out


@pytest.mark.parametrize("loss_name", ["ce", "mse", "bce"])
def test_the_monte_carlo_draws_follow_the_documented_recipe(loss_name):
    C, samples, seed = 3, 4, 11
    model, params, X, f = _linear_problem(C)
    rng = np.random.default_rng(seed)
    if loss_name == "ce":
        loss, y = rp.CrossEntropyLoss(), np.array([0, 1, 2, 1, 0])
        targets = _labels_by_the_recipe(f, samples, seed)
    elif loss_name == "mse":
        loss, y = rp.MSELoss(), np.zeros((5, C))
        targets = f[None] + np.sqrt(0.5) * rng.standard_normal((samples, 5, C))
    else:
        loss, y = rp.BCEWithLogitsLoss(), np.zeros((5, C))
        u = rng.random((samples, 5, C))
        targets = np.where(u < 1.0 / (1.0 + np.exp(-f))[None], 1.0, 0.0)
    drawn = rp.block_diagonal(model, params, X, y, loss, curvature="mc_fisher", samples=samples, seed=seed)
    given = rp.block_diagonal(model, params, X, y, loss, curvature="mc_fisher", targets=targets)
    if loss_name == "mse":
        # the targets hold f, computed here by hand: equal to the network's outputs to rounding
        assert np.allclose(drawn.to_dense(), given.to_dense(), rtol=1e-12, atol=1e-14)
    else:  # labels and 0/1 targets: the same draws exactly
        assert np.array_equal(drawn.to_dense(), given.to_dense())
    # and the draws matter: other draws give another estimate
    other = rp.block_diagonal(model, params, X, y, loss, curvature="mc_fisher", samples=samples, seed=seed + 1)
    assert not np.array_equal(drawn.to_dense(), other.to_dense())


class _Fixed:
    """A generator whose ``random`` returns a chosen value everywhere."""

    def __init__(self, value):
        self.value = value

    def random(self, shape):
        return np.full(shape, self.value)


def test_a_class_of_probability_zero_is_never_drawn_even_for_u_zero():
    # exp(-1000) is 0.0 in float64: class 0 has probability exactly 0, cdf = [0, 1/2, 1]
    f = np.array([[-1000.0, 0.0, 0.0]])
    assert rp.CrossEntropyLoss().sample(f, _Fixed(0.0), 2).tolist() == [[1], [1]]
    # u on a threshold belongs to the class above it: [cdf_k-1, cdf_k)
    assert rp.CrossEntropyLoss().sample(f, _Fixed(0.5), 1).tolist() == [[2]]
    assert rp.CrossEntropyLoss().sample(f, _Fixed(0.25), 1).tolist() == [[1]]


def test_a_bernoulli_of_probability_zero_never_gives_one():
    f = np.array([[-1000.0, 1000.0]])  # sigmoid: exactly 0.0 and 1.0
    got = rp.BCEWithLogitsLoss().sample(f, _Fixed(0.0), 1)
    assert got.dtype == np.float64 and got.tolist() == [[[0.0, 1.0]]]


def test_a_gaussian_draw_is_the_mean_plus_the_scaled_normal():
    """The recipe's sign matters to a user replaying the draws, though not to the Monte
    Carlo Fisher: its gradients are (f - y) J, whose outer products do not see the sign of
    the noise, so only ``sample`` itself can tell ``f + s z`` from ``f - s z``."""
    f = np.array([[0.5, -2.0], [3.0, 0.25]])
    z = np.random.default_rng(4).standard_normal((3, 2, 2))
    got = rp.MSELoss().sample(f, np.random.default_rng(4), 3)
    assert np.array_equal(got, f[None] + np.sqrt(0.5) * z)  # variance 1/2: docs/conventions.md §3


def test_the_draws_name_themselves_when_their_caller_gives_no_name():
    """``draw_targets`` and ``loss_curvature_matvec`` name the public function in a refusal
    when it passes ``where``; called without it (the conformance zoo, the block tasks) they
    name themselves."""
    from refprune import derivatives
    from refprune.checks import validate
    from refprune.curvature.output_factors import draw_targets

    model = rp.Sequential(rp.Linear(2, 3))
    params = model.init(0)
    X = np.zeros((4, 2))
    inp = validate(model, params, X, np.array([0, 1, 2, 0]), rp.CrossEntropyLoss())
    with pytest.raises(ValueError) as err:
        draw_targets(inp, model(params, X), 0, 0)
    assert str(err.value).startswith("draw_targets: samples must be ")
    with pytest.raises(ValueError) as err:
        derivatives.loss_curvature_matvec(inp, "hessian", targets=np.zeros((1, 4), dtype=np.int64))
    assert str(err.value) == "loss_curvature_matvec: targets= is for curvature='mc_fisher', got curvature='hessian'"


def test_the_monte_carlo_curvature_runs_no_forward_pass_it_does_not_need(monkeypatch):
    """``loss_curvature_matvec(..., "mc_fisher")`` runs the network only to draw targets:
    not when the caller's targets are given, nor when the outputs ``f_all`` are."""
    from refprune import derivatives
    from refprune.checks import validate

    model = rp.Sequential(rp.Linear(2, 3))
    params = model.init(0)
    X = np.random.default_rng(0).standard_normal((4, 2))
    inp = validate(model, params, X, np.array([0, 1, 2, 0]), rp.CrossEntropyLoss())
    f_all = model(params, X)
    calls = []
    real = derivatives.forward
    monkeypatch.setattr(derivatives, "forward", lambda inp: calls.append(1) or real(inp))
    derivatives.loss_curvature_matvec(inp, "mc_fisher", targets=np.array([[0, 1, 2, 0]]))
    derivatives.loss_curvature_matvec(inp, "mc_fisher", samples=2, seed=0, f_all=f_all)
    assert calls == []
    derivatives.loss_curvature_matvec(inp, "mc_fisher", samples=2, seed=0)
    assert calls == [1]
