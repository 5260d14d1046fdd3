"""``minimize`` certifies a minimum by its own gradient norm and smallest Hessian
eigenvalue, not by SciPy's success flag: a ridge problem whose closed-form minimum SciPy
reaches but reports as a loss of precision, a saddle, a flat direction and a point
SciPy stopped short of."""

import numpy as np
import pytest

import refprune as rp
from refprune import minimizer
from refprune.testing import assert_close


def ridge(scale, n=50, d=5, c=2, seed=0):
    rng = np.random.default_rng(seed)
    X, Y = scale * rng.standard_normal((n, d)), scale * rng.standard_normal((n, c))
    model = rp.Sequential(rp.Linear(d, c))
    return model, model.init(0), X, Y, rp.MSELoss("sum")


def ridge_solution(X, Y, wd):
    """argmin |X_b W^T - Y|^2 + wd/2 |W|^2 (bias included) and the objective's Hessian
    per output: 2 X_b^T X_b + wd I."""
    Xb = np.hstack([X, np.ones((len(X), 1))])
    Hc = 2 * Xb.T @ Xb + wd * np.eye(Xb.shape[1])
    return np.linalg.solve(Hc, 2 * Xb.T @ Y), Hc


def test_a_minimum_scipy_calls_imprecise_is_certified():
    """Inputs of size 1e3: SciPy's trust-exact stops with "a bad approximation caused
    failure to predict improvement" at the closed-form minimum (gradient ~1e-9 on an
    objective ~7e7), so its flag is False; the point is the minimum all the same."""
    wd = 0.3
    model, params, X, Y, loss = ridge(1e3)
    res = rp.minimize(model, params, X, Y, loss, weight_decay=wd)
    assert not res.success  # the premise: SciPy does not certify it
    sol, Hc = ridge_solution(X, Y, wd)
    assert_close(res.params[0], sol[:-1].T, 1e-9, 0, "weights against the closed form")
    assert_close(res.params[1], sol[-1], 1e-9, 0, "bias against the closed form")
    # the Hessian over theta is block diagonal, one block Hc per output (same spectrum)
    ev = np.linalg.eigvalsh(Hc)
    assert res.min_eigenvalue == pytest.approx(ev[0], rel=1e-8)
    assert res.max_eigenvalue == pytest.approx(ev[-1], rel=1e-8)
    assert res.grad_tol == pytest.approx(1e-8 * res.objective)
    assert res.eig_tol == pytest.approx(1e-10 * ev[-1], rel=1e-8)
    assert res.grad_norm <= res.grad_tol and res.min_eigenvalue > res.eig_tol
    assert res.certified_by == "grad_norm and min_eigenvalue" and res.at_minimum


def test_a_well_scaled_ridge_problem_is_certified_with_scipy():
    wd = 0.3
    model, params, X, Y, loss = ridge(1.0)
    res = rp.minimize(model, params, X, Y, loss, weight_decay=wd)
    sol, _ = ridge_solution(X, Y, wd)
    assert res.success and res.at_minimum
    assert_close(res.params[0], sol[:-1].T, 1e-10, 0, "weights against the closed form")


def saddle():
    """f(x) = w2 w1 x with squared error: at w = 0 the gradient vanishes and the Hessian
    is [[0, -2 s], [-2 s, 0]], s = sum x y, with eigenvalues -2|s| and 2|s|."""
    model = rp.Sequential(rp.Linear(1, 1, bias=False), rp.Linear(1, 1, bias=False))
    X, Y = np.array([[1.0], [2.0], [-0.5]]), np.array([[0.5], [1.5], [0.25]])
    return model, [np.zeros((1, 1)), np.zeros((1, 1))], X, Y, rp.MSELoss("sum")


def test_a_saddle_is_not_a_minimum_and_the_curvature_test_says_so():
    model, params, X, Y, loss = saddle()
    res = rp.minimize(model, params, X, Y, loss)
    s = float(X[:, 0] @ Y[:, 0])
    assert res.grad_norm == 0.0 and rp.flatten_params(res.params).tolist() == [0.0, 0.0]
    assert res.min_eigenvalue == pytest.approx(-2 * abs(s), rel=1e-12)
    assert res.max_eigenvalue == pytest.approx(2 * abs(s), rel=1e-12)
    assert res.certified_by == "min_eigenvalue" and not res.at_minimum


def test_a_flat_direction_is_not_certified():
    """A constant zero input column leaves its weight's direction flat (Hessian
    eigenvalue 0): the point minimises the objective but is not a strict minimum."""
    rng = np.random.default_rng(1)
    X = np.hstack([rng.standard_normal((20, 2)), np.zeros((20, 1))])
    Y = rng.standard_normal((20, 1))
    model = rp.Sequential(rp.Linear(3, 1))
    res = rp.minimize(model, model.init(0), X, Y, rp.MSELoss("sum"))
    assert res.grad_norm <= res.grad_tol
    assert abs(res.min_eigenvalue) <= res.eig_tol
    assert res.certified_by == "min_eigenvalue" and not res.at_minimum


def test_a_point_short_of_the_minimum_fails_the_gradient_test():
    model, params, X, Y, loss = ridge(1.0)
    res = rp.minimize(model, [10 * p for p in params], X, Y, loss, weight_decay=0.3, method="trust-ncg", maxiter=1)
    assert res.grad_norm > res.grad_tol
    assert res.certified_by == "grad_norm" and not res.at_minimum


def test_certify_thresholds():
    ev = np.array([2e-10, 1.0])
    assert minimizer.certify(0.0, ev, 5.0) == (5e-8, 1e-10, "grad_norm and min_eigenvalue")
    assert minimizer.certify(0.0, np.array([0.5e-10, 1.0]), 0.1)[2] == "min_eigenvalue"
    assert minimizer.certify(1.1e-8, ev, 0.1)[2] == "grad_norm"  # below |L| = 1 the scale is 1
    assert minimizer.certify(1e-8, ev, 0.1)[:2] == (1e-8, 1e-10)
    assert minimizer.certify(0.0, np.zeros(0), 1.0)[2] == "grad_norm and min_eigenvalue"
