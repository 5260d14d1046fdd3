"""A second-order minimiser for small nets, to reach a true minimum before pruning.

OBD and OBS assume the network sits at a minimum of its objective, where the gradient
vanishes and the Hessian is positive semi-definite.  SGD only approaches one.
:func:`minimize` hands refprune's exact objective, gradient and Hessian to SciPy's
trust-region methods (``scipy.optimize.minimize``, default ``"trust-exact"``: Moré &
Sorensen's nearly exact subproblem solution, Nocedal & Wright 2006, §4.3).

**Certificate.**  Whether the result is a minimum is decided by refprune's own
second-order test at the returned point, not by SciPy's success flag (SciPy reports a
"loss of precision" at points whose gradient is already at rounding level):

* stationary: ``grad_norm = max |g_i| <= grad_tol = GRAD_RTOL max(1, |L|)``,
  ``GRAD_RTOL = 1e-8`` (whatever ``gtol`` SciPy was given).  A float64 gradient is exact only to rounding, about ``eps``
  times the magnitudes that cancel in it, which for a loss of size ``|L|`` leaves
  ``1e-12`` to ``1e-10``; ``1e-8`` relative to the loss stays two orders above that floor,
  and the quadratic model puts such a point within ``grad_norm^2 / (2 lambda_min)`` of the
  minimum's objective, far below any change pruning measures.
* strict local minimum: ``min_eigenvalue > eig_tol = EIG_RTOL max|lambda|`` of the exact
  Hessian on the free coordinates, ``EIG_RTOL = 1e-10``.  Computed eigenvalues carry
  absolute errors of about ``n eps max|lambda|`` (``1e-13`` relative for ``n`` in the
  hundreds), so an eigenvalue above ``1e-10 max|lambda|`` is positive beyond rounding;
  a smaller one (a flat direction, a saddle) cannot be told from zero or negative, and
  the point is not certified.

``result.certified_by`` names the test that decided: ``"grad_norm and min_eigenvalue"``
when both pass (``at_minimum`` is true), otherwise the first that failed.
"""

import sys
from dataclasses import dataclass

import numpy as np
import scipy.optimize

from . import options
from .checks import validate
from .curvature import hessian
from .derivatives import grad, loss as loss_value
from .options import TRUST_REGION  # noqa: F401 (the choices of method=)
from .params import flatten_params, unflatten_params

#: the gradient test: ``grad_norm <= GRAD_RTOL max(1, |objective|)``
GRAD_RTOL = 1e-8
#: the curvature test: ``min_eigenvalue > EIG_RTOL max|eigenvalue|``
EIG_RTOL = 1e-10
#: ``certified_by`` of a certified minimum
BOTH = "grad_norm and min_eigenvalue"


@dataclass
class MinimizeResult:
    """``params`` at the end; ``objective`` (loss plus weight decay), ``grad_norm``
    (max-norm of the objective's gradient on the free coordinates), ``min_eigenvalue``
    and ``max_eigenvalue`` (of the objective's exact Hessian there), the tolerances
    ``grad_tol`` and ``eig_tol`` of the certificate (module docstring), ``certified_by``
    (which test decided), SciPy's ``success`` flag and its own result."""

    params: list
    objective: float
    grad_norm: float
    min_eigenvalue: float
    success: bool
    iterations: int
    scipy_result: object
    max_eigenvalue: float = float("nan")
    grad_tol: float = float("nan")
    eig_tol: float = float("nan")
    certified_by: str = ""

    @property
    def at_minimum(self):
        """A strict local minimum by refprune's own test: gradient within ``grad_tol`` and
        smallest Hessian eigenvalue above ``eig_tol`` (SciPy's flag is not consulted)."""
        return self.certified_by == BOTH


def certify(grad_norm, eigenvalues, objective):
    """``(grad_tol, eig_tol, certified_by)`` for a point with gradient max-norm
    ``grad_norm``, Hessian eigenvalues ``eigenvalues`` (ascending) and ``objective``."""
    grad_tol = GRAD_RTOL * max(1.0, abs(objective))
    if eigenvalues.size == 0:
        return grad_tol, 0.0, BOTH  # nothing free: the point is the minimiser over an empty set
    eig_tol = EIG_RTOL * float(np.abs(eigenvalues).max())
    if not grad_norm <= grad_tol:
        return grad_tol, eig_tol, "grad_norm"
    if not eigenvalues[0] > eig_tol:
        return grad_tol, eig_tol, "min_eigenvalue"
    return grad_tol, eig_tol, BOTH


def minimize(model, params, X, y, loss, weight_decay=0.0, mask=None, method="trust-exact", gtol=1e-10,
             maxiter=1000, progress=False):
    """Minimise ``L(theta) + weight_decay/2 |theta|^2`` over the free coordinates of
    ``mask`` (others keep their value, pruned weights zero) with exact second
    derivatives; returns a :class:`MinimizeResult`.

    Cross-entropy on separable data has no finite minimum; ``weight_decay > 0`` gives it
    one.  ``result.at_minimum`` says whether the end point is certified a strict local
    minimum by its own gradient norm and smallest Hessian eigenvalue (module docstring;
    ``result.certified_by`` names the deciding test); SciPy's ``result.success`` is kept
    for reference only.  Options are checked through :data:`refprune.options.TABLE`
    (``gtol > 0``, ``maxiter >= 1``, ``weight_decay >= 0``).
    ``progress=True`` reports every iteration's objective on stderr.  With no free
    coordinate SciPy is not called: the point is returned, certified, after 0 iterations.
    """
    v = options.convert("minimize", dict(weight_decay=weight_decay, mask=mask, method=method, gtol=gtol,
                                         maxiter=maxiter, progress=progress))
    weight_decay, gtol, maxiter, progress = v["weight_decay"], v["gtol"], v["maxiter"], v["progress"]
    inp = validate(model, params, X, y, loss)
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

    it = [0]

    def report(z, *_):
        it[0] += 1
        print(f"minimize: iteration {it[0]}, objective {fun(z):.10g}", file=sys.stderr)

    if idx.size == 0:
        # nothing free: the point is the minimiser over an empty set (SciPy's methods fail on it)
        res = scipy.optimize.OptimizeResult(x=theta0[idx], fun=fun(theta0[idx]), success=True, status=0, nit=0,
                                            message="no free coordinates: nothing to minimise")
    else:
        res = scipy.optimize.minimize(fun, theta0[idx], jac=jac, hess=hess, method=method,
                                      options=dict(gtol=gtol, maxiter=maxiter), callback=report if progress else None)
    z = res.x
    g = jac(z)
    ev = np.linalg.eigvalsh(hess(z)) if idx.size else np.zeros(0)
    f, gn = float(fun(z)), float(np.abs(g).max(initial=0.0))
    grad_tol, eig_tol, by = certify(gn, ev, f)
    return MinimizeResult(unflatten_params(model, full(z)), f, gn, float(ev[0]) if ev.size else 0.0,
                          bool(res.success), int(res.nit), res, float(ev[-1]) if ev.size else 0.0, grad_tol, eig_tol,
                          by)
