"""The finite-difference checkers against closed forms: the stencils' truncation errors
(Fornberg 1988: ``h^4 f^(5) / 30`` and ``h^2 f''' / 6``), the step ladder's choice and
Richardson bound on a function whose fifth derivative dominates, the adjoint check's
reported error for a transpose wrong by an amount set here, and the checkers' documented
defaults (3 directions drawn from seed 0, ``rtol = 1e-6``, ``atol = 1e-9``)."""

import numpy as np
import pytest

from refprune.testing import CheckResult, check_grad, check_hessian, check_hvp, check_jvp, check_vjp
from refprune.testing.finite_differences import default_step, directional_derivative

EPS = np.finfo(np.float64).eps


# ---------------------------------------------------------------- stencils and steps

def test_fourth_order_stencil_error_is_h4_f5_over_30():
    # f = sum x^5: d/dt f(x + t v) = 5 sum x^4 v; the stencil equals it minus h^4/30 times
    # the fifth directional derivative 120 sum v^5 (the higher ones vanish)
    x, v, h = np.array([0.5, -1.0, 2.0]), np.array([1.0, 0.5, -2.0]), 0.125
    est = directional_derivative(lambda t: np.sum(t**5), x, v, step=h)
    assert est == pytest.approx(5 * np.sum(x**4 * v) - 4 * h**4 * np.sum(v**5), rel=1e-13)


def test_second_order_stencil_error_is_h2_f3_over_6():
    x, v, h = np.array([0.5, -1.0, 2.0]), np.array([1.0, 0.5, -2.0]), 0.125
    est = directional_derivative(lambda t: np.sum(t**3), x, v, step=h, order=2)
    assert est == pytest.approx(3 * np.sum(x**2 * v) + h**2 * np.sum(v**3), rel=1e-13)
    # a vector-valued function: every component
    est = directional_derivative(lambda t: t**3, x, v, step=h, order=2, return_error=True)
    np.testing.assert_allclose(est[0], 3 * x**2 * v + h**2 * v**3, rtol=1e-13)
    assert est[1] == h and np.isnan(est[2])


@pytest.mark.parametrize("order, power", [(4, 1 / 5), (2, 1 / 3)])
def test_default_step(order, power):
    x, v = np.array([3.0, -8.0]), np.array([0.5, -0.25])
    assert default_step(x, v, order) == pytest.approx(EPS**power * 8.0 / 0.5, rel=1e-15)
    assert default_step(np.array([0.25]), np.array([2.0]), order) == pytest.approx(EPS**power / 2.0, rel=1e-15)
    assert default_step(x, np.zeros(2), order) == pytest.approx(EPS**power * 8.0, rel=1e-15)
    assert default_step(x, v) == pytest.approx(EPS**0.2 * 16.0, rel=1e-15)


def test_the_ladder_keeps_the_smallest_step_when_truncation_dominates():
    # f = exp(c x): truncation h^4 c^5 f / 30 exceeds rounding eps f / h by orders of
    # magnitude on the whole ladder, so Richardson's bound falls with h and the finest
    # step, h0 / 4, is kept, its bound its truncation error
    c, x, v = 40.0, np.array([0.0]), np.array([1.0])
    h0 = default_step(x, v)
    est, h, bound = directional_derivative(lambda t: np.exp(c * t[0]), x, v, return_error=True)
    assert h == h0 / 4
    truncation = h**4 * c**5 / 30
    assert est - c == pytest.approx(-truncation, rel=0.02)
    assert bound == pytest.approx(truncation, rel=0.02)
    # without return_error: the estimate of the default step itself
    assert directional_derivative(lambda t: np.exp(c * t[0]), x, v) - c == pytest.approx(-h0**4 * c**5 / 30,
                                                                                          rel=0.02)


def test_the_ladder_of_order_two():
    c, x, v = 40.0, np.array([0.0]), np.array([1.0])
    h0 = default_step(x, v, order=2)
    est, h, bound = directional_derivative(lambda t: np.exp(c * t[0]), x, v, order=2, return_error=True)
    assert h == h0 / 4
    assert est - c == pytest.approx(h**2 * c**3 / 6, rel=0.02)
    assert bound == pytest.approx(h**2 * c**3 / 6, rel=0.02)  # |D(2h) - D(h)| / (2^2 - 1)


# ---------------------------------------------------------------- defaults

class Spy:
    """A linear map ``x -> A x`` that records the directions it is asked about."""

    def __init__(self, A):
        self.A, self.seen = A, []

    def fun(self, x):
        return self.A @ x

    def jvp(self, x, v):
        self.seen.append(v.copy())
        return self.A @ v


def _draws(n, count=3, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n) for _ in range(count)]


def test_jvp_and_hvp_draw_three_directions_from_seed_zero():
    A = np.array([[2.0, 1.0], [1.0, 3.0]])
    for check in (check_jvp, check_hvp):
        s = Spy(A)
        res = check(s.fun, s.jvp, np.array([0.5, 1.5]))
        assert res.checked == 3 and len(s.seen) == 3
        for got, want in zip(s.seen, _draws(2)):
            np.testing.assert_array_equal(got, want)
    assert check_hvp(Spy(A).fun, Spy(A).jvp, np.ones(2)).what == "Hessian-vector product"
    assert check_jvp(Spy(A).fun, Spy(A).jvp, np.ones(2)).what == "Jacobian-vector product"


def _wrong_by(rel):
    """A linear map whose Jacobian-vector product is off by ``rel`` relative."""
    A = np.array([[2.0, 1.0], [1.0, 3.0]])
    return (lambda x: A @ x), (lambda x, v: (1 + rel) * (A @ v))


@pytest.mark.parametrize("check", [check_jvp, check_hvp])
def test_default_rtol_is_1e_minus_6(check):
    x = np.array([0.5, 1.5])
    check(*_wrong_by(1e-8), x)  # within 1e-6
    with pytest.raises(AssertionError):
        check(*_wrong_by(1e-4), x)


@pytest.mark.parametrize("check", [check_jvp, check_hvp])
def test_default_atol_is_1e_minus_9(check):
    # a zero map: only atol (times the scale max(1, |jvp|) = 1) bounds an error of 1e-7
    x = np.array([0.5, 1.5])
    with pytest.raises(AssertionError):
        check(lambda t: np.zeros(2), lambda t, v: np.full(2, 1e-7), x)
    check(lambda t: np.zeros(2), lambda t, v: np.full(2, 1e-10), x)


@pytest.mark.parametrize("check", [check_jvp, check_hvp])
def test_order_is_handed_on(check):
    # a cubic map: the fourth-order stencil is exact, the second-order one is off by h^2 v^3
    x = np.array([0.5, -1.0])
    with pytest.raises(AssertionError):
        check(lambda t: t**3, lambda t, v: 3 * t**2 * v, x, step=0.1, order=2)
    check(lambda t: t**3, lambda t, v: 3 * t**2 * v, x, step=0.1, order=4)
    with pytest.raises(ValueError, match=rf"^{check.__name__}: order must be 2 or 4, got 3$"):
        check(lambda t: t**3, lambda t, v: 3 * t**2 * v, x, order=3)


# ---------------------------------------------------------------- the adjoint check

class Adjoint:
    """``jvp(x, v) = J(x) v`` and a ``vjp`` that is ``J(x)^T u`` plus ``d / |v|^2 v`` for
    the ``v`` of the same pair, so that ``<J^T u, v> - <u, J v>`` is ``d`` (set per pair);
    ``J(x) = diag(x) A`` depends on ``x``."""

    def __init__(self, A, d):
        self.A, self.d, self.k, self.pairs = A, d, 0, []

    def J(self, x):
        return x[:, None] * self.A

    def jvp(self, x, v):
        self.v = v.copy()
        return self.J(x) @ v

    def vjp(self, x, u):
        v = self.v
        lhs = float(np.sum(u * (self.J(x) @ v)))
        extra = self.d[self.k] / float(v @ v) * v
        self.k += 1
        out = self.J(x).T @ u + extra
        self.pairs.append((lhs, float(np.sum(out * v))))
        return out


def _expected_error(pairs, rtol, atol):
    return max(abs(lhs - rhs) / (atol * max(1.0, abs(rhs)) + rtol * abs(rhs)) for lhs, rhs in pairs)


def test_adjoint_reports_its_worst_pair_relative_to_its_tolerance():
    x = np.array([2.0, -3.0])
    adj = Adjoint(np.array([[1.0, 2.0], [-1.0, 0.25]]), d=[1e-14, 3e-14, 2e-14])
    res = check_vjp(adj.jvp, adj.vjp, x, 2)
    assert isinstance(res, CheckResult) and res.what == "adjoint identity" and res.checked == 3
    assert np.isnan(res.step) and res.fd_error == 0.0
    assert res.error == pytest.approx(_expected_error(adj.pairs, 1e-12, 1e-12), rel=1e-6)
    assert 0 < res.error < 1


def test_adjoint_default_draws_and_tolerances():
    # seed 0 by default: the same pairs as seed=0, other pairs with seed=1
    runs = []
    for kwargs in ({}, {"seed": 0}, {"seed": 1}):
        adj = Adjoint(np.array([[1.0, 2.0], [-1.0, 0.25]]), d=[0.0] * 4)
        check_vjp(adj.jvp, adj.vjp, np.array([2.0, -3.0]), (2,), **kwargs)
        runs.append(adj.pairs)
        assert len(adj.pairs) == 3
    assert runs[0] == runs[1] and runs[0] != runs[2]


@pytest.mark.parametrize("scale, d, passes", [
    # |rhs| > 2: the bound is atol |rhs| (rtol 0), passed at half of it
    (100.0, 0.5, True),
    # |rhs| < 1: the bound is atol, failed at 1.5 atol
    (1e-4, 1.5, False),
    (1e-4, 0.5, True),
])
def test_adjoint_bound_is_atol_times_max_1_rhs(scale, d, passes):
    atol = 1e-6
    probe = Adjoint(scale * np.array([[1.0, 2.0], [-1.0, 0.25]]), d=[0.0])
    check_vjp(probe.jvp, probe.vjp, np.array([2.0, -3.0]), 2, directions=1, rtol=0.0, atol=atol)
    rhs = probe.pairs[0][1]
    assert (abs(rhs) > 2) == (scale > 1) and (abs(rhs) < 1) == (scale < 1)
    adj = Adjoint(probe.A, d=[d * atol * max(1.0, abs(rhs))])
    if passes:
        res = check_vjp(adj.jvp, adj.vjp, np.array([2.0, -3.0]), 2, directions=1, rtol=0.0, atol=atol)
        assert res.error == pytest.approx(_expected_error(adj.pairs, 0.0, atol), rel=1e-6)
        assert res.error == pytest.approx(d, rel=1e-3)
    else:
        with pytest.raises(AssertionError, match=r"^adjoint identity, pair 0: mismatch"):
            check_vjp(adj.jvp, adj.vjp, np.array([2.0, -3.0]), 2, directions=1, rtol=0.0, atol=atol)


def test_adjoint_rtol_counts_relative_to_rhs():
    probe = Adjoint(np.array([[30.0, 20.0], [-10.0, 25.0]]), d=[0.0])
    check_vjp(probe.jvp, probe.vjp, np.array([2.0, -3.0]), 2, directions=1)
    rhs = probe.pairs[0][1]
    adj = Adjoint(probe.A, d=[0.25 * 1e-3 * abs(rhs)])
    res = check_vjp(adj.jvp, adj.vjp, np.array([2.0, -3.0]), 2, directions=1, rtol=1e-3, atol=0.0)
    assert res.error == pytest.approx(_expected_error(adj.pairs, 1e-3, 0.0), rel=1e-6)
    assert res.error == pytest.approx(0.25, rel=1e-3)


def test_adjoint_failure_names_the_pair():
    adj = Adjoint(np.array([[1.0, 2.0], [-1.0, 0.25]]), d=[0.0, 1e-3, 0.0])
    with pytest.raises(AssertionError, match=r"^adjoint identity, pair 1: mismatch at index \(\)"):
        check_vjp(adj.jvp, adj.vjp, np.array([2.0, -3.0]), 2)


@pytest.mark.parametrize("out_shape", [(0,), [2, 0], 0])
def test_adjoint_accepts_empty_outputs(out_shape):
    shape = (out_shape,) if isinstance(out_shape, int) else tuple(out_shape)
    res = check_vjp(lambda x, v: np.zeros(shape), lambda x, u: np.zeros(2), np.ones(2), out_shape)
    assert res.error == 0.0 and res.checked == 3


@pytest.mark.parametrize("out_shape", [3.5, (2.5,), (-1,), (2, True)])
def test_adjoint_refuses_out_shapes_that_are_not_counts(out_shape):
    with pytest.raises(ValueError, match=r"^check_vjp: out_shape must be a tuple of non-negative ints, got "):
        check_vjp(lambda x, v: v, lambda x, u: u, np.ones(2), out_shape)


def test_adjoint_names_its_input():
    with pytest.raises(ValueError, match=r"^check_vjp: x contains 1 NaN"):
        check_vjp(lambda x, v: v, lambda x, u: u, np.array([1.0, np.nan]), 2)


def test_checker_results_of_gradient_and_hessian():
    A = np.array([[2.0, 1.0], [1.0, 3.0]])
    x = np.array([0.5, 1.5])
    res = check_grad(lambda t: 0.5 * t @ A @ t, lambda t: A @ t, x)
    assert res.what == "gradient" and res.checked == 3 and res.error < 1e-3
    res = check_hessian(lambda t: A @ t, A, x)
    assert res.what == "Hessian column" and res.checked == 2
    # a column wrong by 1e-3: the error relative to atol + rtol |fd| is about 1e-3 / (1e-6 * 3)
    B = A.copy()
    B[1, 1] += 1e-3
    with pytest.raises(AssertionError, match=r"^Hessian column along direction 1: "):
        check_hessian(lambda t: A @ t, B, x)


@pytest.mark.parametrize("check", [check_jvp, check_hvp])
def test_atol_scale_is_max_1_and_the_largest_product(check):
    x = np.array([0.5, 1.5])
    # a zero map: the scale is 1, so an error of 1.5 atol fails
    with pytest.raises(AssertionError):
        check(lambda t: np.zeros(2), lambda t, v: np.full(2, 1.5e-9), x, rtol=0.0)
    # a map of size 1e3: the scale is the largest |product|, so 1e-7 passes against atol 1e-9
    A = 1e3 * np.array([[2.0, 1.0], [1.0, 3.0]])
    check(lambda t: A @ t, lambda t, v: A @ v + 1e-7, x, rtol=0.0)


@pytest.mark.parametrize("check", [check_jvp, check_hvp])
def test_the_input_is_named_by_the_checker(check):
    with pytest.raises(ValueError, match=rf"^{check.__name__}: x contains 1 NaN"):
        check(lambda t: t, lambda t, v: v, np.array([1.0, np.nan]))


# ---------------------------------------------------------------- check_grad

def _quadratic():
    A = np.array([[2.0, 1.0], [1.0, 3.0]])
    return (lambda t: 0.5 * t @ A @ t), (lambda t: A @ t)


def test_gradient_one_direction_is_a_check():
    f, g = _quadratic()
    assert check_grad(f, g, np.array([0.5, 1.5]), directions=1).checked == 1


def test_gradient_directions_follow_the_seed():
    f, g = _quadratic()
    wrong = lambda t: g(t) * np.array([1.0, 1.001])  # noqa: E731 (an error that depends on the direction)
    errs = {}
    for seed in (None, 0, 1, 5, "5 again"):
        kwargs = {} if seed is None else {"seed": 5 if seed == "5 again" else seed}
        errs[seed] = check_grad(f, wrong, np.array([0.5, 1.5]), rtol=1e-2, **kwargs).error
    assert errs[None] == errs[0] and errs[0] != errs[1] and errs[5] == errs["5 again"]


def test_gradient_step_and_order_are_handed_on():
    # a cubic: the fourth-order stencil is exact, the second-order one with h = 0.1 is not
    f, g, x = (lambda t: np.sum(t**3)), (lambda t: 3 * t**2), np.array([0.5, -1.0])
    check_grad(f, g, x, step=0.1, order=4, rtol=1e-9)
    with pytest.raises(AssertionError, match=r"^gradient along direction 0: "):
        check_grad(f, g, x, step=0.1, order=2, rtol=1e-9)
    with pytest.raises(ValueError, match=r"^check_grad: order must be 2 or 4, got 3$"):
        check_grad(f, g, x, order=3)


def test_gradient_atol_scale_is_max_1_and_the_loss():
    x = np.array([0.5, 1.5])
    # a zero loss: the scale is 1, so an error of 1.5 atol fails
    with pytest.raises(AssertionError):
        check_grad(lambda t: 0.0, lambda t: np.full(2, 1.5e-9), x, rtol=0.0)
    # a loss of 1e6: atol counts 1e6 times, so a gradient error of 1e-5 passes against atol 1e-9
    c = np.array([1e-4, -1e-4]) / 4
    res = check_grad(lambda t: 1e6 + c @ t, lambda t: c + 1e-5, x, rtol=0.0)
    assert res.error < 1


@pytest.mark.parametrize("step, error, words", [(-0.1, ValueError, "step must be a positive finite number, got -0.1"),
                                                ("0.1", TypeError, "step must be a positive finite number or None")])
def test_gradient_step_is_checked(step, error, words):
    f, g = _quadratic()
    with pytest.raises(error, match=rf"^check_grad: {words}"):
        check_grad(f, g, np.array([0.5, 1.5]), step=step)


# ---------------------------------------------------------------- check_hessian

def _linear_gradient():
    A = np.array([[2.0, 1.0], [1.0, 3.0]])
    return A, (lambda t: A @ t)


@pytest.mark.parametrize("columns, checked", [(1, 1), ([1], 1), ((0,), 1), (np.array([1, 0]), 2), ([0, 1], 2)])
def test_hessian_columns_given_as_int_list_tuple_or_array(columns, checked):
    A, g = _linear_gradient()
    assert check_hessian(g, A, np.array([0.5, 1.5]), columns=columns).checked == checked
    # the column checked is the one asked for: a wrong other column goes unnoticed
    B = A.copy()
    B[:, 1 - np.atleast_1d(columns)[0]] += 1.0
    if checked == 1:
        check_hessian(g, B, np.array([0.5, 1.5]), columns=columns)


@pytest.mark.parametrize("columns, shown", [([2], "2"), ([-1], "-1"), ([0.5], "0.5"), ([True], "True")])
def test_hessian_refuses_columns_outside_the_range(columns, shown):
    A, g = _linear_gradient()
    with pytest.raises(ValueError, match=rf"^check_hessian: columns must be ints in \[0, 2\), got {shown}$"):
        check_hessian(g, A, np.array([0.5, 1.5]), columns=columns)


def test_hessian_messages():
    A, g = _linear_gradient()
    x = np.array([0.5, 1.5])
    with pytest.raises(ValueError, match=r"^check_hessian: no columns to check \(a check of nothing\)$"):
        check_hessian(g, A, x, columns=[])
    with pytest.raises(ValueError, match=r"^check_hessian: x contains 1 NaN"):
        check_hessian(g, A, np.array([np.nan, 1.0]))
    with pytest.raises(ValueError, match=r"^check_hessian: H contains 1 NaN"):
        check_hessian(g, np.array([[1.0, np.nan], [0.0, 1.0]]), x)
    with pytest.raises(ValueError, match=r"^check_hessian: grad\(x\) must return an array of shape \(2,\) \(the shape "
                                         r"of x\), got \(3,\)$"):
        check_hessian(lambda t: np.ones(3), A, x)
    with pytest.raises(ValueError, match=r"^check_hessian: step must be a positive finite number, got -0.1$"):
        check_hessian(g, A, x, step=-0.1)


def test_hessian_step_and_atol_scale():
    # grad = t^3: the second-order stencil with h = 0.1 is off by h^2 = 0.01 in each column
    g, H, x = (lambda t: t**3), (lambda t: np.diag(3 * t**2)), np.array([0.5, -1.0])
    with pytest.raises(AssertionError, match=r"^Hessian column along direction 0: "):
        check_hessian(g, H(x), x, step=0.1, order=2)
    check_hessian(g, H(x), x, step=0.1, order=4, rtol=1e-12)
    # a zero Hessian: the scale is 1, so a column error of 1.5 atol fails (rtol plays no part)
    with pytest.raises(AssertionError):
        check_hessian(lambda t: 1.5e-9 * t, np.zeros((2, 2)), x, rtol=0.0)
    # entries of 1e6: atol counts 1e6 times, so an error of 1e-5 passes against atol 1e-9
    A = 1e6 * np.array([[2.0, 1.0], [1.0, 3.0]])
    check_hessian(lambda t: A @ t, A + 1e-5, x, rtol=0.0)


# ---------------------------------------------------------------- the tolerance and its slack

def _exp_column():
    """``grad = exp(40 t)`` at 0: the ladder's estimate and its Richardson bound ``b``
    along the unit vector (check_hessian's own direction)."""
    g, x = (lambda t: np.exp(40.0 * t)), np.array([0.0])
    est, _, b = directional_derivative(g, x, np.array([1.0]), return_error=True)
    assert b > 0
    return g, x, float(est[0]), b


def test_ten_times_the_finite_difference_error_widens_the_bound():
    g, x, est, b = _exp_column()
    check_hessian(g, np.array([[est + 9.5 * b]]), x, rtol=0.0, atol=1e-300)
    with pytest.raises(AssertionError):
        check_hessian(g, np.array([[est + 10.5 * b]]), x, rtol=0.0, atol=1e-300)


def test_the_reported_error_is_relative_to_atol_plus_rtol_fd():
    g, x, est, b = _exp_column()
    H = est + 9.5 * b
    rtol, atol = 1e-10, 1e-12
    res = check_hessian(g, np.array([[H]]), x, rtol=rtol, atol=atol)
    # atol is scaled by max(1, max |H|) = H (about 40)
    assert res.error == pytest.approx(9.5 * b / (atol * H + rtol * abs(est)), rel=1e-6)
    assert res.step == default_step(x, np.array([1.0])) / 4  # the ladder's finest step for this function
    assert res.fd_error == pytest.approx(b / (atol * H), rel=1e-12)


def test_a_shape_that_changes_away_from_x_is_named():
    x = np.array([0.5, 1.5])

    def f(t):
        return 0.0 if np.array_equal(t, x) else np.zeros(2)

    with pytest.raises(AssertionError, match=r"^gradient along direction 0: shape \(\) != finite difference \(2,\)$"):
        check_grad(f, lambda t: np.zeros(2), x)


def test_an_error_equal_to_the_bound_passes():
    # grad = t, order 2, h = 0.5 at 0: the difference is exactly 1; a column 1 - 2^-10 with
    # atol 2^-10 and rtol 0 sits exactly on the bound (max(1, |H|) = 1), which passes
    res = check_hessian(lambda t: t, np.array([[1.0 - 2.0**-10]]), np.array([0.0]), rtol=0.0, atol=2.0**-10,
                        step=0.5, order=2)
    assert res.error == 1.0


@pytest.mark.parametrize("wrong", [0, 1])
def test_the_worst_column_is_reported(wrong):
    A = np.array([[2.0, 1.0], [1.0, 3.0]])
    H = A.copy()
    H[:, wrong] += np.array([3e-7, 0.0]) if wrong == 0 else np.array([0.0, 6e-7])
    H[:, 1 - wrong] += np.array([1e-7, 0.0])
    res = check_hessian(lambda t: A @ t, H, np.array([0.5, 1.5]), rtol=1e-6, atol=1e-12, step=0.25, order=2)
    # exact differences along unit vectors of a linear map: the error is |dH| / (atol |H|max + rtol |A|)
    scale = 1e-12 * H.max()
    expected = max(3e-7 / (scale + 1e-6 * 2.0), 6e-7 / (scale + 1e-6 * 3.0)) if wrong else 3e-7 / (scale + 2e-6)
    assert res.error == pytest.approx(expected, rel=1e-6) and res.checked == 2


def test_values_numpy_converts_to_float64_are_accepted():
    # decimal.Decimal: float64 after conversion, but not with float arithmetic before it
    from decimal import Decimal

    f = lambda t: Decimal(repr(0.5 * float(t @ t)))  # noqa: E731
    g = lambda t: [Decimal(repr(float(s))) for s in t]  # noqa: E731
    assert check_grad(f, g, np.array([0.5, 1.5]), rtol=1e-8).checked == 3


def test_a_value_that_is_not_numeric_is_named():
    with pytest.raises(TypeError, match=r"^check_grad: fun\(x\) must return a numeric array, got dict$"):
        check_grad(lambda t: {"loss": 1.0}, lambda t: t, np.array([0.5, 1.5]))


def test_directional_derivative_names_itself():
    with pytest.raises(ValueError, match=r"^directional_derivative: step must be a positive finite number, got 0$"):
        directional_derivative(np.sum, np.ones(2), np.ones(2), step=0)
    with pytest.raises(ValueError, match=r"^directional_derivative: x contains 1 NaN"):
        directional_derivative(np.sum, np.array([1.0, np.nan]), np.ones(2))


def test_on_a_tie_the_ladder_keeps_the_coarser_step():
    # a constant: every estimate is exactly 0, so every bound is 0; rounding error grows as
    # the step shrinks (eps |f| / h, module docstring), so of equal bounds the coarsest
    # estimate that has one, h0 * 2, is the one to keep
    x, v = np.array([0.5, 1.5]), np.array([1.0, -2.0])
    est, h, bound = directional_derivative(lambda t: 3.0, x, v, return_error=True)
    assert (est, h, bound) == (0.0, 2 * default_step(x, v), 0.0)


def test_order_two_without_a_ladder_uses_its_own_step():
    # f = sum x^3 at the order-2 default step h ~ eps^(1/3): truncation h^2 sum v^3 ~ 1e-10,
    # where the order-4 step eps^(1/5) would give ~1e-6
    x, v = np.array([0.5, -1.0, 2.0]), np.array([1.0, 0.5, -2.0])
    est = directional_derivative(lambda t: np.sum(t**3), x, v, order=2)
    assert abs(est - 3 * np.sum(x**2 * v)) < 1e-8


def test_directional_derivative_names_its_direction():
    with pytest.raises(ValueError, match=r"^directional_derivative: v contains 1 NaN"):
        directional_derivative(np.sum, np.ones(2), np.array([np.nan, 1.0]))


# ---------------------------------------------------------------- assert_close

def test_assert_close_names_the_entry_furthest_beyond_its_bound():
    from refprune.testing import assert_close

    # errors 0.5 and 0.9, bounds 0.05 and 1.09: only entry 0 fails, although entry 1's error is larger
    with pytest.raises(AssertionError, match=r"^v: mismatch at index \(0,\): .*0\.0.* vs expected .*0\.5.* "
                                             r"\(\|diff\| 5\.000e-01 > 5\.000e-02; max \|diff\| 9\.000e-01\)$"):
        assert_close([0.0, 10.9], [0.5, 10.0], 0.1, 0.0, "v")
    with pytest.raises(AssertionError, match=r"^m: mismatch at index \(1, 0\): .*3\.0.* vs expected .*3\.5.* "
                                             r"\(\|diff\| 5\.000e-01 > 3\.500e-01; max \|diff\| 5\.000e-01\)$"):
        assert_close(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[1.0, 2.0], [3.5, 4.0]]), 0.1, 0.0, "m")
    with pytest.raises(AssertionError, match=r"^s: mismatch at index \(\): .*1\.0.* vs expected .*2\.0.* "
                                             r"\(\|diff\| 1\.000e\+00 > 2\.000e-01; max \|diff\| 1\.000e\+00\)$"):
        assert_close(1.0, 2.0, 0.1, 0.0, "s")
    with pytest.raises(AssertionError, match=r"^v: shape \(2,\) != expected \(3,\)$"):
        assert_close(np.ones(2), np.ones(3), 0.1, 0.0, "v")


def test_assert_close_converts_to_float64_first():
    from decimal import Decimal

    from refprune.testing import assert_close

    assert_close([Decimal("1.5")], [1.5], 0.0, 0.0, "v")
    assert_close([1.5], [Decimal("1.5")], 0.0, 0.0, "v")


def test_the_ladder_evaluates_the_documented_steps():
    # module docstring: steps h0 * 2^k, k = 2, 1, ..., -2, each with the stencil's offsets
    seen = []
    x, v = np.array([0.0]), np.array([1.0])
    directional_derivative(lambda t: seen.append(float(t[0])) or float(t[0]) ** 2, x, v, return_error=True)
    h0 = default_step(x, v)
    want = sorted(o * (h0 * 2.0**k) for k in (2, 1, 0, -1, -2) for o in (-2.0, -1.0, 1.0, 2.0))
    assert sorted(seen) == want
