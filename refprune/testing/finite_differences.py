"""Finite-difference checkers for derivatives, public so that other projects can test
their own code the way refprune tests itself.

All checks are *directional*: ``<u, J v>`` is compared with the central difference of
``<u, fun>`` along ``v``, which costs a constant number of evaluations however large
the input (the idea of ``autograd.test_util``).  Inputs are never modified: every
evaluation point is a fresh array.

Step size.  The default stencil is the fourth-order central difference

    f'(x) v ~ [f(x - 2h v) - 8 f(x - h v) + 8 f(x + h v) - f(x + 2h v)] / (12 h)

whose truncation error is ``h^4 f^(5) / 30`` and whose rounding error is about
``eps |f| / h``; balancing the two gives ``h ~ eps^(1/5) ~ 7e-4`` (for inputs and
directions of unit scale), with a total relative error near ``eps^(4/5) ~ 3e-13``
(Fornberg 1988; Press et al., *Numerical Recipes*, §5.7).  ``order=2`` uses the
two-point stencil with ``h ~ eps^(1/3)``, as ``scipy.optimize.approx_derivative``.

That balance assumes unit-scale higher derivatives.  At a trained, saturated point they
can be large, and the truncation error of the default step exceeds a tight tolerance for
a correct gradient.  The checkers therefore (unless given ``step=``) evaluate the stencil
on a ladder of steps ``h0 * 2^k``, ``k = 2, 1, ..., -2``, estimate each estimate's error
from its difference with the next smaller step (Richardson: for an error ``c h^p``,
``|D(h) - D(h/2)| ~ (2^p - 1) |error of D(h/2)|``), and keep the estimate with the
smallest error bound.  That bound is part of the tolerance: a difference within it is
the finite difference's own uncertainty, not the derivative's error.

Every checker returns a :class:`CheckResult` (the largest error found, relative to the
tolerance's scale, the step used and the finite difference's estimated error) and raises
``AssertionError`` with the same numbers when the check fails.  A check that would check
nothing (``directions=0``, no columns) is refused.
"""

from dataclasses import dataclass

import numpy as np

from ..checks import check_array, check_number
from ..curvature.output_factors import check_seed
from ..scalars import is_int, is_number

EPS = np.finfo(np.float64).eps
_STENCILS = {
    2: (EPS ** (1 / 3), (-1.0, 1.0), (-0.5, 0.5)),
    4: (EPS ** (1 / 5), (-2.0, -1.0, 1.0, 2.0), (1 / 12, -8 / 12, 8 / 12, -1 / 12)),
}


def default_step(x, v, order=4):
    """Step ``h`` so that ``h * |v|`` is ``eps^(1/5)`` (or ``eps^(1/3)``) times the
    scale ``max(1, |x|_inf)`` of the input."""
    base = _STENCILS[order][0]
    vnorm = float(np.max(np.abs(v))) or 1.0
    return base * max(1.0, float(np.max(np.abs(x)))) / vnorm


def _stencil(fun, x, v, h, order):
    _, offsets, weights = _STENCILS[order]
    total = None
    for o, w in zip(offsets, weights):
        val = np.asarray(fun(x + (o * h) * v), dtype=np.float64) * w
        total = val if total is None else total + val
    return total / h


def directional_derivative(fun, x, v, step=None, order=4, return_error=False):
    """Central-difference estimate of ``d/dt fun(x + t v)`` at ``t = 0``.

    ``fun`` maps an array shaped like ``x`` to a scalar or an array; ``x`` and ``v``
    are not modified.  With ``return_error=True`` returns ``(estimate, step, error
    bound)``, the step chosen on a ladder around :func:`default_step` by Richardson's
    error estimate (module docstring) unless ``step`` is given (then the bound is
    ``nan``).
    """
    _check_step_order(step, order, "directional_derivative")
    x = _input(x, "directional_derivative")  # private copy
    v = check_array(v, "directional_derivative: v")
    if v.shape != x.shape:
        raise ValueError(f"directional_derivative: direction must have the shape of x {x.shape}, got {v.shape}")
    if step is not None:
        d = _stencil(fun, x, v, float(step), order)
        return (d, float(step), float("nan")) if return_error else d
    if not return_error:
        return _stencil(fun, x, v, default_step(x, v, order), order)
    h0 = default_step(x, v, order)
    hs = [h0 * 2.0**k for k in (2, 1, 0, -1, -2)]
    ests = [_stencil(fun, x, v, h, order) for h in hs]
    best = None
    for i in range(1, len(hs)):
        # error of the finer estimate, from its difference with the coarser one
        bound = float(np.max(np.abs(ests[i - 1] - ests[i]))) / (2.0**order - 1)
        if best is None or bound < best[2]:
            best = (ests[i], hs[i], bound)
    return best


@dataclass
class CheckResult:
    """What a check measured: ``error`` is the largest ``|exact - fd|`` divided by the
    scale the tolerance uses, ``step`` the step of the worst case, ``fd_error`` the
    finite difference's own estimated error there (same scale), ``checked`` how many
    directions or columns were compared."""

    what: str
    error: float
    step: float
    fd_error: float
    checked: int

    def __str__(self):
        return (f"{self.what}: largest relative error {self.error:.3e} over {self.checked} checks "
                f"(step {self.step:.3e}, finite-difference error ~{self.fd_error:.1e})")


def _compare(exact, fd, fd_err, rtol, atol, what):
    """The per-check error relative to ``atol + rtol |fd|`` and whether it passes, the
    finite difference's own error bound widening the tolerance."""
    exact, fd = np.asarray(exact, dtype=float), np.asarray(fd, dtype=float)
    if exact.shape != fd.shape:
        raise AssertionError(f"{what}: shape {exact.shape} != finite difference {fd.shape}")
    slack = 0.0 if not np.isfinite(fd_err) else 10.0 * fd_err
    bound = atol + rtol * np.abs(fd) + slack
    err = np.abs(exact - fd)
    scale = atol + rtol * np.abs(fd)
    return float(np.max(err / scale)), bool(np.all(err <= bound)), float(np.max(err)), float(np.max(bound))


def _check_count(name, k):
    if not is_int(k) or k < 1:
        raise ValueError(f"{name} must be a positive int (a check of 0 checks nothing), got {k!r}")
    return int(k)


def _check_step_order(step, order, where):
    """``order`` 2 or 4 and ``step`` ``None`` or a positive finite number, refused by name."""
    if isinstance(order, bool) or order not in _STENCILS:
        raise ValueError(f"{where}: order must be 2 or 4, got {order!r}")
    if step is not None:
        if not is_number(step):
            raise TypeError(f"{where}: step must be a positive finite number or None, got {step!r}")
        if not np.isfinite(step) or step <= 0:
            raise ValueError(f"{where}: step must be a positive finite number, got {step!r}")


def _check_options(where, directions, seed, rtol, atol, step=None, order=4):
    """Every option of a checker, checked before any evaluation; returns ``directions``."""
    _check_step_order(step, order, where)
    check_number(rtol, f"{where}: rtol")
    check_number(atol, f"{where}: atol")
    if rtol == 0 and atol == 0:  # the error is measured in units of atol + rtol |fd|: 0/0 otherwise
        raise ValueError(f"{where}: rtol and atol are both 0; give at least one a positive value (the error is "
                         "measured in units of atol + rtol |finite difference|)")
    check_seed(seed, where)
    return None if directions is None else _check_count(f"{where}: directions", directions)


def assert_close(actual, expected, rtol, atol, what):
    """``|actual - expected| <= atol + rtol |expected|`` elementwise, with a message that
    names ``what`` and the worst entry."""
    actual, expected = np.asarray(actual, dtype=float), np.asarray(expected, dtype=float)
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {actual.shape} != expected {expected.shape}")
    err = np.abs(actual - expected)
    bound = atol + rtol * np.abs(expected)
    if not np.all(err <= bound):
        i = np.unravel_index(np.argmax(err - bound), err.shape) if err.ndim else ()
        raise AssertionError(
            f"{what}: mismatch at index {tuple(int(k) for k in i)}: {actual[i]!r} vs expected "
            f"{expected[i]!r} (|diff| {err[i]:.3e} > {bound[i]:.3e}; max |diff| {err.max():.3e})"
        )


def _input(x, where):
    """The point ``x`` as a finite float64 array (a private copy), checked up front."""
    return np.array(check_array(x, f"{where}: x"), dtype=np.float64)


def _output(value, where, call, shape, expected):
    """``value`` (what ``call`` returned) as a float64 array of ``shape``, else a
    ``ValueError`` naming the checker, the call, the shape given and the one expected."""
    try:
        out = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{where}: {call} must return a numeric array, got {type(value).__name__}") from None
    if out.shape != tuple(shape):
        raise ValueError(f"{where}: {call} must return an array of shape {tuple(shape)} ({expected}), got {out.shape}")
    return out


def _directions(shape, count, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape) for _ in range(count)]


def check_grad(fun, grad, x, directions=3, seed=0, rtol=1e-6, atol=1e-9, step=None, order=4):
    """Check ``grad(x) @ v`` against the central difference of scalar ``fun`` along
    ``directions`` random ``v``; returns a :class:`CheckResult`, raises
    ``AssertionError`` on mismatch."""
    directions = _check_options("check_grad", directions, seed, rtol, atol, step, order)
    x = _input(x, "check_grad")
    g = _output(grad(x.copy()), "check_grad", "grad(x)", x.shape, "the shape of x")
    scale = max(1.0, float(np.abs(_output(fun(x.copy()), "check_grad", "fun(x)", (), "a scalar"))))
    return _run_checks("gradient", [(lambda v: np.sum(g * v), v) for v in _directions(np.shape(x), directions, seed)],
                       fun, x, rtol, atol * scale, step, order)


def _run_checks(what, pairs, fun, x, rtol, atol, step, order):
    worst = CheckResult(what, 0.0, float("nan"), float("nan"), 0)
    for k, (exact_of, v) in enumerate(pairs):
        fd, h, fd_err = directional_derivative(fun, x, v, step, order, return_error=True)
        exact = exact_of(v)
        rel, ok, diff, bound = _compare(exact, fd, fd_err, rtol, atol, f"{what} along direction {k}")
        if rel >= worst.error or worst.checked == 0:
            worst = CheckResult(what, rel, h, float(fd_err / max(atol, 1e-300)) if np.isfinite(fd_err) else fd_err,
                                worst.checked)
        worst.checked = k + 1
        if not ok:
            raise AssertionError(f"{what} along direction {k}: |exact - finite difference| {diff:.3e} exceeds "
                                 f"{bound:.3e} (relative error {rel:.3e}; step {h:.3e}, finite-difference error "
                                 f"~{fd_err:.1e})")
    return worst


def check_jvp(fun, jvp, x, directions=3, seed=0, rtol=1e-6, atol=1e-9, step=None, order=4, where="check_jvp",
              names=("fun", "jvp")):
    """Check ``jvp(x, v)`` (the Jacobian of ``fun`` times ``v``) against central
    differences of ``fun`` along random ``v``; returns a :class:`CheckResult`.  ``fun(x)``
    and every ``jvp(x, v)`` must have the same shape (checked first)."""
    directions = _check_options(where, directions, seed, rtol, atol, step, order)
    x = _input(x, where)
    out_shape = np.shape(fun(x.copy()))
    if 0 in out_shape:
        raise ValueError(f"{where}: {names[0]}(x) is empty (shape {out_shape}); there is nothing to check")
    vs = _directions(x.shape, directions, seed)
    jv = [_output(jvp(x.copy(), v), where, f"{names[1]}(x, v)", out_shape, f"the shape of {names[0]}(x)")
          for v in vs]
    scale = max(1.0, max(float(np.max(np.abs(j), initial=0.0)) for j in jv))
    return _run_checks("Jacobian-vector product", [(lambda v, j=j: j, v) for v, j in zip(vs, jv)], fun, x, rtol,
                       atol * scale, step, order)


def check_vjp(jvp, vjp, x, out_shape, directions=3, seed=0, rtol=1e-12, atol=1e-12):
    """Adjoint identity ``<u, J v> == <J^T u, v>`` for random ``u``, ``v`` (no step size
    involved: an exact algebraic check of a hand-written transpose); returns a
    :class:`CheckResult` (``step`` is ``nan``)."""
    directions = _check_options("check_vjp", directions, seed, rtol, atol)
    x = _input(x, "check_vjp")
    if is_int(out_shape):
        out_shape = (out_shape,)
    if not (isinstance(out_shape, (tuple, list)) and all(is_int(d) and d >= 0 for d in out_shape)):
        raise ValueError(f"check_vjp: out_shape must be a tuple of non-negative ints, got {out_shape!r}")
    out_shape = tuple(int(d) for d in out_shape)
    rng = np.random.default_rng(seed)
    worst = 0.0
    for k in range(directions):
        v, u = rng.standard_normal(x.shape), rng.standard_normal(out_shape)
        Jv = _output(jvp(x.copy(), v), "check_vjp", "jvp(x, v)", out_shape, "out_shape")
        JTu = _output(vjp(x.copy(), u), "check_vjp", "vjp(x, u)", x.shape, "the shape of x")
        lhs = float(np.sum(u * Jv))
        rhs = float(np.sum(JTu * v))
        scale = atol * max(1.0, abs(rhs)) + rtol * abs(rhs)
        worst = max(worst, abs(lhs - rhs) / scale)
        assert_close(lhs, rhs, rtol, atol * max(1.0, abs(rhs)), f"adjoint identity, pair {k}")
    return CheckResult("adjoint identity", worst, float("nan"), 0.0, directions)


def check_hvp(grad, hvp, x, directions=3, seed=0, rtol=1e-6, atol=1e-9, step=None, order=4):
    """Check ``hvp(x, v)`` against central differences of ``grad`` along ``v``."""
    res = check_jvp(grad, hvp, x, directions, seed, rtol, atol, step, order, where="check_hvp",
                    names=("grad", "hvp"))
    res.what = "Hessian-vector product"
    return res


def check_hessian(grad, H, x, columns=None, rtol=1e-6, atol=1e-9, step=None, order=4):
    """Check columns of a dense Hessian ``H`` against central differences of ``grad``
    along unit vectors (``columns``: indices to check, default all: ``O(n)`` gradient
    evaluations); returns a :class:`CheckResult`."""
    _check_options("check_hessian", None, 0, rtol, atol, step, order)
    x = _input(x, "check_hessian")
    if x.ndim != 1:
        raise ValueError(f"check_hessian: x must be a vector (n,), got shape {x.shape}")
    n = x.size
    H = check_array(H, "check_hessian: H")
    if H.shape != (n, n):
        raise ValueError(f"check_hessian: H must have shape ({n}, {n}) for x of shape ({n},), got {H.shape}")
    if columns is None:
        cols = list(range(n))
    else:
        cols = list(np.atleast_1d(columns)) if not isinstance(columns, (list, tuple)) else list(columns)
        bad = [c for c in cols if not is_int(c) or not 0 <= c < n]
        if bad:
            raise ValueError(f"check_hessian: columns must be ints in [0, {n}), got {bad[0]!r}")
        cols = [int(c) for c in cols]
    if not cols:
        raise ValueError("check_hessian: no columns to check (a check of nothing)")
    _output(grad(x.copy()), "check_hessian", "grad(x)", x.shape, "the shape of x")
    scale = max(1.0, float(np.max(np.abs(H))))
    pairs = []
    for i in cols:
        e = np.zeros(n)
        e[i] = 1.0
        pairs.append(((lambda i: lambda v: H[:, i])(i), e))
    return _run_checks("Hessian column", pairs, grad, x, rtol, atol * scale, step, order)
