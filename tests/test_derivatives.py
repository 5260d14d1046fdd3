"""Whole-network derivatives against central differences, over architectures drawn by
hypothesis (every layer type, both losses, both reductions).

Kinks.  ReLU and max pooling are not differentiable everywhere.  Each test requires
``kink_margin > 1e-2`` (every ReLU input and every max-pool top-two gap at least 1e-2
from zero) and uses a fixed step ``h = 1e-6`` along unit-norm directions: the stencil
reaches ``theta +- 2h v``, which moves any pre-activation by at most ``2h |J v|``, far
below the margin for these small nets, so the differences never straddle a kink.  The
fourth-order stencil with this step has truncation error ~h^4 and rounding error
~eps/h ~ 2e-10 relative, inside the tolerances below.
"""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import refprune as rp
from refprune.testing import (
    Objective, assert_close, check_grad, check_hessian, check_hvp, directional_derivative, kink_margin,
)
from refprune.testing.strategies import architectures, convnets, losses, mlps, problems

from cases import CASES, IDS, make

STEP = 1e-6


def smooth_enough(p):
    return kink_margin(p.model, p.params, p.X) > 1e-2


def unit(v):
    return v / np.linalg.norm(v)


@given(problems())
def test_gradient_against_central_differences(p):
    assume(smooth_enough(p))
    obj = Objective(p.model, p.X, p.y, p.loss)
    theta = rp.flatten_params(p.params)
    g = obj.grad(theta)
    for k, v in enumerate(unit(np.random.default_rng(k).standard_normal(theta.size)) for k in range(3)):
        fd = directional_derivative(obj.loss, theta, v, step=STEP)
        assert_close(g @ v, fd, 1e-6, 1e-9 * max(1.0, abs(obj.loss(theta))), f"gradient along direction {k}")


@given(problems())
def test_hvp_against_central_differences_of_the_gradient(p):
    assume(smooth_enough(p))
    obj = Objective(p.model, p.X, p.y, p.loss)
    theta = rp.flatten_params(p.params)
    rng = np.random.default_rng(1)
    for k in range(2):
        v = unit(rng.standard_normal(theta.size))
        fd = directional_derivative(obj.grad, theta, v, step=STEP)
        hv = obj.hvp(theta, v)
        assert_close(hv, fd, 1e-5, 1e-7 * max(1.0, np.abs(fd).max()), f"Hessian-vector product {k}")


@settings(max_examples=8)
@given(problems(max_samples=3))
def test_hessian_columns_against_central_differences(p):
    assume(smooth_enough(p))
    assume(p.model.n_params <= 120)
    obj = Objective(p.model, p.X, p.y, p.loss)
    theta = rp.flatten_params(p.params)
    H = rp.hessian(p.model, p.params, p.X, p.y, p.loss)
    check_hessian(obj.grad, H, theta, rtol=1e-5, atol=1e-7, step=STEP)


@given(problems(architectures=architectures(), losses=losses()))
def test_public_checkers_accept_refprune_derivatives(p):
    """The public checkers with their default steps, on smooth nets only."""
    assume(smooth_enough(p))
    obj = Objective(p.model, p.X, p.y, p.loss)
    theta = rp.flatten_params(p.params)
    assume(kink_margin(p.model, p.params, p.X) > 0.1)
    check_grad(obj.loss, obj.grad, theta, rtol=1e-5, atol=1e-8)
    check_hvp(obj.grad, obj.hvp, theta, directions=2, rtol=1e-4, atol=1e-7)


@given(problems())
def test_per_sample_gradients_sum_to_the_gradient_and_match_single_sample_losses(p):
    G = rp.per_sample_grads(p.model, p.params, p.X, p.y, p.loss)
    g = rp.grad(p.model, p.params, p.X, p.y, p.loss)
    assert G.shape == (p.X.shape[0], p.model.n_params)
    assert_close(G.sum(0), g, 1e-12, 1e-13 * max(1.0, np.abs(g).max()), "sum of per-sample gradients")
    # row n is R * dl_n/dtheta: the gradient of the one-sample problem, rescaled
    n, c = p.X.shape[0], p.model.output_shape(p.X.shape[1:])[0]
    R, R1 = p.loss.scale(n, c), p.loss.scale(1, c)
    for i in range(n):
        gi = rp.grad(p.model, p.params, p.X[i : i + 1], p.y[i : i + 1], p.loss)
        assert_close(G[i], gi * R / R1, 1e-12, 1e-14, f"per-sample gradient {i}")


@given(problems(), st.integers(1, 5))
def test_batched_hvp_equals_one_at_a_time(p, k):
    V = np.random.default_rng(k).standard_normal((k, p.model.n_params))
    HV = rp.hvp(p.model, p.params, p.X, p.y, p.loss, V)
    for i in range(k):
        assert_close(HV[i], rp.hvp(p.model, p.params, p.X, p.y, p.loss, V[i]), 1e-12, 1e-13, f"row {i}")


def test_strategies_cover_every_layer_type():
    """The drawn architectures reach every layer type (else the property tests above
    would silently skip some)."""
    seen = set()

    @settings(max_examples=200, derandomize=True)
    @given(st.one_of(mlps(), convnets()))
    def collect(arch):
        seen.update(type(layer).__name__ for layer in arch.model)

    collect()
    assert seen >= {"Linear", "Conv2d", "ReLU", "Tanh", "Sigmoid", "Softplus", "AvgPool2d", "MaxPool2d", "Flatten"}


@pytest.mark.parametrize("arch,lossname", CASES, ids=IDS)
def test_hessian_of_named_cases_against_central_differences(arch, lossname):
    model, params, X, y, loss = make(arch, lossname)
    assert kink_margin(model, params, X) > 1e-2, "case must stay away from kinks"
    obj = Objective(model, X, y, loss)
    H = rp.hessian(model, params, X, y, loss)
    check_hessian(obj.grad, H, rp.flatten_params(params), rtol=1e-5, atol=1e-7, step=STEP)


def test_checkers_report_error_and_step_and_survive_a_saturated_point():
    """f = sum log cosh(a x) with a = 40 near 0.04: fifth derivatives ~ a^5 make the
    default step's truncation error larger than rtol = 1e-9; the step ladder keeps a
    correct gradient passing, and a gradient wrong by 1e-6 still fails."""
    from refprune.testing import CheckResult, default_step

    a = 40.0
    x = np.linspace(-0.05, 0.05, 7)

    def f(t):
        return float(np.sum(np.log(np.cosh(a * t))))

    def g(t):
        return a * np.tanh(a * t)

    v = np.random.default_rng(0).standard_normal(x.shape)
    fixed = directional_derivative(f, x, v, step=default_step(x, v))
    assert abs(fixed - g(x) @ v) > 1e-9 * abs(g(x) @ v)  # the fixed default step is not good enough here
    res = check_grad(f, g, x, rtol=1e-9, atol=0.0)
    assert isinstance(res, CheckResult) and res.checked == 3 and res.error < 1 and np.isfinite(res.step)
    with pytest.raises(AssertionError, match="relative error .* step .* finite-difference error"):
        check_grad(f, lambda t: g(t) * (1 + 1e-6), x, rtol=1e-9, atol=0.0)


def test_checkers_refuse_checking_nothing():
    f, g = (lambda t: float(np.sum(t**2))), (lambda t: 2 * t)
    with pytest.raises(ValueError, match="checks nothing"):
        check_grad(f, g, np.ones(3), directions=0)
    with pytest.raises(ValueError, match="no columns to check"):
        check_hessian(g, 2 * np.eye(3), np.ones(3), columns=[])
    assert check_hessian(g, 2 * np.eye(3), np.ones(3)).checked == 3


def test_kink_margin_explains_and_ignores_harmless_relu_ties():
    model = rp.Sequential(rp.Conv2d(1, 1, 1, bias=False), rp.ReLU(), rp.MaxPool2d(2), rp.Flatten())
    X = np.array([[[[-1.0, -2.0], [-3.0, -0.5]]], [[[1.0, -2.0], [0.25, -1.0]]]])
    params = [np.ones((1, 1, 1, 1))]
    m, why = kink_margin(model, params, X, explain=True)
    # first window: all negative -> zeros after ReLU, a harmless tie; second: gap 1 - 0.25
    assert m == pytest.approx(0.25) and "ReLU" in why and "harmless" in why
    plain = rp.Sequential(rp.Tanh())
    assert kink_margin(plain, [], X, explain=True) == (np.inf, "no ReLU or max pooling: no kinks")


def test_overflowing_output_is_named_with_its_count_and_the_largest_input():
    # tanh-free, so nothing saturates: the output itself overflows (not only the loss)
    m = rp.Sequential(rp.Linear(2, 2))
    params = [np.array([[1e300, 0.0], [0.0, 1.0]]), np.zeros(2)]
    X, y = np.array([[1e10, 0.0], [1.0, 2.0], [3e9, 1.0]]), np.zeros((3, 2))
    with np.errstate(over="ignore"), pytest.raises(FloatingPointError) as err:
        rp.grad(m, params, X, y, rp.MSELoss())
    # rows 0 and 2 overflow in their first output: 2 of the 6 entries
    assert "output is not finite (2 of 6 entries overflowed" in str(err.value)
    assert "largest |X| 1e+10)" in str(err.value)


def test_a_model_without_parameters_has_an_empty_gradient():
    m = rp.Sequential(rp.Tanh())
    X = np.linspace(-1, 1, 6).reshape(3, 2)
    g = rp.grad(m, [], X, np.zeros((3, 2)), rp.MSELoss())
    assert g.shape == (0,) and g.dtype == np.float64
    assert rp.hvp(m, [], X, np.zeros((3, 2)), rp.MSELoss(), np.zeros(0)).shape == (0,)


def test_unknown_output_curvature_is_named():
    from refprune import derivatives
    from refprune.checks import validate

    m = rp.Sequential(rp.Linear(2, 2))
    inp = validate(m, m.init(0), np.ones((3, 2)), np.zeros((3, 2)), rp.MSELoss())
    with pytest.raises(ValueError, match="unknown output curvature 'bogus'"):
        derivatives.loss_curvature_matvec(inp, "bogus")


def test_hvp_directions_go_one_at_a_time_under_a_one_float_budget(monkeypatch):
    from refprune import derivatives

    m, p, X, y, l = make("mlp-tanh", "ce-mean")
    V = np.random.default_rng(0).standard_normal((3, m.n_params))
    whole = rp.hvp(m, p, X, y, l, V)
    sizes, real = [], derivatives.curvature_products

    def products(inp, caches, douts, f, Vc, phi, second_order=True):
        sizes.append(len(Vc))
        return real(inp, caches, douts, f, Vc, phi, second_order)

    monkeypatch.setattr(derivatives, "CHUNK_FLOATS", 1)
    monkeypatch.setattr(derivatives, "curvature_products", products)
    chunked = rp.hvp(m, p, X, y, l, V)
    assert sizes == [1, 1, 1]
    assert np.abs(chunked - whole).max() <= 1e-13 * np.abs(whole).max()
