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
"""

import numpy as np

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


def directional_derivative(fun, x, v, step=None, order=4):
    """Central-difference estimate of ``d/dt fun(x + t v)`` at ``t = 0``.

    ``fun`` maps an array shaped like ``x`` to a scalar or an array; ``x`` and ``v``
    are not modified.
    """
    if order not in _STENCILS:
        raise ValueError(f"order must be 2 or 4, got {order!r}")
    x = np.array(x, dtype=np.float64)  # private copy
    v = np.asarray(v, dtype=np.float64)
    if v.shape != x.shape:
        raise ValueError(f"direction must have the shape of x {x.shape}, got {v.shape}")
    h = default_step(x, v, order) if step is None else float(step)
    _, offsets, weights = _STENCILS[order]
    total = None
    for o, w in zip(offsets, weights):
        val = np.asarray(fun(x + (o * h) * v), dtype=np.float64) * w
        total = val if total is None else total + val
    return total / h


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


def _directions(shape, count, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape) for _ in range(count)]


def check_grad(fun, grad, x, directions=3, seed=0, rtol=1e-6, atol=1e-9, step=None, order=4):
    """Check ``grad(x) . v`` against the central difference of scalar ``fun`` along
    ``directions`` random ``v``; raises ``AssertionError`` on mismatch."""
    g = np.asarray(grad(np.array(x, dtype=float)))
    scale = max(1.0, float(np.abs(fun(np.array(x, dtype=float)))))
    for k, v in enumerate(_directions(np.shape(x), directions, seed)):
        fd = directional_derivative(fun, x, v, step, order)
        assert_close(np.sum(g * v), fd, rtol, atol * scale, f"gradient along direction {k}")


def check_jvp(fun, jvp, x, directions=3, seed=0, rtol=1e-6, atol=1e-9, step=None, order=4):
    """Check ``jvp(x, v)`` (the Jacobian of ``fun`` times ``v``) against central
    differences of ``fun`` along random ``v``."""
    for k, v in enumerate(_directions(np.shape(x), directions, seed)):
        fd = directional_derivative(fun, x, v, step, order)
        exact = np.asarray(jvp(np.array(x, dtype=float), v))
        scale = max(1.0, float(np.max(np.abs(fd))))
        assert_close(exact, fd, rtol, atol * scale, f"Jacobian-vector product along direction {k}")


def check_vjp(jvp, vjp, x, out_shape, directions=3, seed=0, rtol=1e-12, atol=1e-12):
    """Adjoint identity ``<u, J v> == <J^T u, v>`` for random ``u``, ``v`` (no step size
    involved: an exact algebraic check of a hand-written transpose)."""
    rng = np.random.default_rng(seed)
    for k in range(directions):
        v, u = rng.standard_normal(np.shape(x)), rng.standard_normal(out_shape)
        lhs = float(np.sum(u * jvp(np.array(x, dtype=float), v)))
        rhs = float(np.sum(vjp(np.array(x, dtype=float), u) * v))
        assert_close(lhs, rhs, rtol, atol * max(1.0, abs(rhs)), f"adjoint identity, pair {k}")


def check_hvp(grad, hvp, x, directions=3, seed=0, rtol=1e-6, atol=1e-9, step=None, order=4):
    """Check ``hvp(x, v)`` against central differences of ``grad`` along ``v``."""
    check_jvp(grad, hvp, x, directions, seed, rtol, atol, step, order)


def check_hessian(grad, H, x, columns=None, rtol=1e-6, atol=1e-9, step=None, order=4):
    """Check columns of a dense Hessian ``H`` against central differences of ``grad``
    along unit vectors (``columns``: indices to check, default all: ``O(n)`` gradient
    evaluations)."""
    x = np.asarray(x, dtype=float)
    H = np.asarray(H)
    n = x.size
    if H.shape != (n, n):
        raise AssertionError(f"Hessian must have shape ({n}, {n}), got {H.shape}")
    cols = range(n) if columns is None else columns
    scale = max(1.0, float(np.max(np.abs(H))))
    for i in cols:
        e = np.zeros(n)
        e[i] = 1.0
        fd = directional_derivative(grad, x, e, step, order)
        assert_close(H[:, i], fd, rtol, atol * scale, f"Hessian column {i}")
