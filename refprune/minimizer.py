"""A second-order minimiser for small nets, to reach a true minimum before pruning.

OBD and OBS assume the network sits at a minimum of its objective, where the gradient
vanishes and the Hessian is positive semi-definite.  SGD only approaches one.
:func:`minimize` hands refprune's exact objective, gradient and Hessian to SciPy's
trust-region methods (``scipy.optimize.minimize``, default ``"trust-exact"``: Moré &
Sorensen's nearly exact subproblem solution, Nocedal & Wright 2006, §4.3), so the
result is a minimum to the precision asked for, certified by the returned gradient norm
and smallest Hessian eigenvalue.
"""

import sys
from dataclasses import dataclass

import numpy as np
import scipy.optimize

from .checks import check_flag, validate
from .curvature import hessian
from .derivatives import grad, loss as loss_value
from .params import flatten_params, unflatten_params

TRUST_REGION = ("trust-exact", "trust-krylov", "trust-ncg", "trust-constr")


@dataclass
class MinimizeResult:
    """``params`` at the end; ``objective`` (loss plus weight decay), ``grad_norm``
    (max-norm of the objective's gradient on the free coordinates),
    ``min_eigenvalue`` (of the objective's Hessian there), SciPy's own result."""

    params: list
    objective: float
    grad_norm: float
    min_eigenvalue: float
    success: bool
    iterations: int
    scipy_result: object

    @property
    def at_minimum(self):
        """A stationary point with positive semi-definite curvature (to 1e-8 relative)."""
        return self.success and self.min_eigenvalue >= -1e-8 * max(1.0, abs(self.objective))


def minimize(model, params, X, y, loss, weight_decay=0.0, mask=None, method="trust-exact", gtol=1e-10,
             maxiter=1000, progress=False):
    """Minimise ``L(theta) + weight_decay/2 |theta|^2`` over the free coordinates of
    ``mask`` (others keep their value, pruned weights zero) with exact second
    derivatives; returns a :class:`MinimizeResult`.

    Cross-entropy on separable data has no finite minimum; ``weight_decay > 0`` gives it
    one (``result.success`` and ``result.at_minimum`` say whether it was reached).
    ``progress=True`` reports every iteration's objective on stderr.
    """
    inp = validate(model, params, X, y, loss)
    if method not in TRUST_REGION:
        raise ValueError(f"minimize: method must be one of SciPy's trust-region methods {TRUST_REGION}, got {method!r}")
    if isinstance(weight_decay, bool) or not np.isfinite(weight_decay) or weight_decay < 0:
        raise ValueError(f"minimize: weight_decay must be a finite number >= 0, got {weight_decay!r}")
    theta0 = flatten_params([p for group in inp.grouped for p in group])
    n = theta0.size
    free = np.ones(n, dtype=bool) if mask is None else np.asarray(mask)
    if free.shape != (n,) or free.dtype != bool:
        raise ValueError(f"minimize: mask must be a bool array of shape ({n},), got {free.dtype} {free.shape}")
    idx = np.flatnonzero(free)
    X, y = inp.X, inp.y

    def full(z):
        t = theta0.copy()
        t[idx] = z
        return t

    def fun(z):
        t = full(z)
        return loss_value(model, unflatten_params(model, t), X, y, loss) + 0.5 * weight_decay * float(t @ t)

    def jac(z):
        t = full(z)
        return (grad(model, unflatten_params(model, t), X, y, loss) + weight_decay * t)[idx]

    def hess(z):
        H = hessian(model, unflatten_params(model, full(z)), X, y, loss)[np.ix_(idx, idx)]
        return H + weight_decay * np.eye(idx.size)

    check_flag(progress, "progress")
    it = [0]

    def report(z, *_):
        it[0] += 1
        print(f"minimize: iteration {it[0]}, objective {fun(z):.10g}", file=sys.stderr)

    res = scipy.optimize.minimize(fun, theta0[idx], jac=jac, hess=hess, method=method,
                                  options=dict(gtol=gtol, maxiter=maxiter), callback=report if progress else None)
    z = res.x
    g = jac(z)
    ev = np.linalg.eigvalsh(hess(z))[0] if idx.size else 0.0
    return MinimizeResult(unflatten_params(model, full(z)), float(fun(z)), float(np.abs(g).max(initial=0.0)),
                          float(ev), bool(res.success), int(res.nit), res)
