"""The update every refprune optimizer shares, and SGD (``docs/optimizers.md`` §1).

One step on a mini-batch, with ``g`` its gradient and ``P`` the optimizer's
preconditioner acting on the free (unpruned) coordinates::

    d   = P g                                  (SGD: P = I)
    d   = nu d,  nu = min(1, sqrt(c / (lr^2 d.g)))    (KL clipping, if kl_clip = c)
    d   = (d + weight_decay theta) * mask
    buf = momentum buf + d
    theta = theta - lr buf

With ``P = I`` and no clipping this is PyTorch's ``torch.optim.SGD`` (``dampening = 0``,
``nesterov = False``).  KL clipping is Ba, Grosse & Martens (2017, "Distributed
second-order optimization using Kronecker-factored approximations", §5): ``lr^2 d.g =
lr^2 g^T P g`` estimates twice the KL divergence the step makes under the
preconditioner's Fisher, and the step is scaled down so that it does not exceed ``c``.
Weight decay is added after preconditioning, as in the K-FAC implementations of the
EigenDamage experiments (it is not part of the loss whose curvature ``P`` inverts).

``buf`` starts at zero and the update is masked, so frozen (masked) coordinates keep
their value exactly, whatever it is (pruned weights: zero).

Every step checks its result: parameters that are not finite raise
:class:`DivergenceError` naming the step, the learning rate and the largest update, and
the optimizer's state (momentum buffer, curvature averages, step count) is left as it was
before the step; the caller's arrays are never written to.
"""

import copy

import numpy as np
import scipy.linalg

from .. import options
from ..checks import validate
from ..derivatives import validated_grad
from ..params import flatten_params, unflatten_params


class DivergenceError(FloatingPointError):
    """An update made parameters that are not finite (lower the learning rate)."""


class Optimizer:
    """Base class: ``step(model, params, X, y, loss, mask=None)`` returns the new
    parameters after one update on the batch ``(X, y)``; subclasses define
    :meth:`precondition`.  State (momentum buffer, curvature statistics, step count
    ``steps``) persists between steps; :meth:`reset` clears it.  Options are checked
    through :data:`refprune.options.TABLE`; a step whose result is not finite raises
    :class:`DivergenceError` and leaves the state unchanged."""

    name = "optimizer"

    def __init__(self, lr=0.1, momentum=0.0, weight_decay=0.0, kl_clip=None):
        # the table's rows for these four (SGD's for an optimizer defined elsewhere)
        table = self.name if self.name in options.TABLE else "SGD"
        v = options.convert(table, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, kl_clip=kl_clip),
                            where=self.name)
        self.lr, self.momentum, self.weight_decay, self.kl_clip = v["lr"], v["momentum"], v["weight_decay"], \
            v["kl_clip"]
        self.reset()

    def reset(self):
        """Forget the momentum buffer and any curvature statistics; ``steps = 0``."""
        self.steps = 0
        self.buf = None
        self.last_nu = 1.0

    def gradient(self, inp):
        """The batch gradient (optimizers that gather curvature statistics override
        this to compute both in the same passes)."""
        return validated_grad(inp)

    def precondition(self, inp, theta, g, free):
        """``P g`` on the free coordinates (zero elsewhere); ``inp`` is the validated
        batch, ``free`` a bool ``(n,)`` or ``None`` for all free."""
        raise NotImplementedError

    def step(self, model, params, X, y, loss, mask=None):
        """One update on the batch ``(X, y)``; returns the new parameter list.

        ``mask`` (bool ``(n,)``, flat parameter order) marks the free coordinates; the
        others keep their value.  The arguments are not modified.
        """
        inp = validate(model, params, X, y, loss)
        theta = flatten_params([p for group in inp.grouped for p in group])
        free = check_mask(mask, theta.size, self.name)
        return unflatten_params(model, self.step_flat(inp, theta, free))

    def step_flat(self, inp, theta, free):
        """:meth:`step` on a validated batch and a flat ``theta``; returns the new ``theta``.
        Raises :class:`DivergenceError` when the new parameters are not finite; a step
        that raises leaves the optimizer's state as it was before it."""
        # every attribute one level deep: a step replaces its arrays and averages rather than
        # writing into them, so this restores the state without copying curvature matrices
        before = {k: copy.copy(v) for k, v in self.__dict__.items()}
        try:
            return self._update(inp, theta, free)
        except Exception:  # a failed step (divergence, a singular block) leaves the state as it was
            self.__dict__.clear()
            self.__dict__.update(before)
            raise

    def _update(self, inp, theta, free):
        if self.buf is None or self.buf.shape != theta.shape:
            self.buf = np.zeros_like(theta)
        self.steps += 1
        g = self.gradient(inp)
        if free is not None:
            g = g * free
        d = self.precondition(inp, theta, g, free)
        # overflow is reported below with the step and the learning rate, not as NumPy's warning
        with np.errstate(over="ignore", invalid="ignore"):
            if self.kl_clip is not None:
                d = d * self._kl_factor(d, g)
            d = d + self.weight_decay * theta
            if free is not None:
                d = d * free
            self.buf = self.momentum * self.buf + d
            new = theta - self.lr * self.buf
        if not np.all(np.isfinite(new)):
            self._diverged(theta, new)
        return new

    def _diverged(self, theta, new):
        bad = int(new.size - np.count_nonzero(np.isfinite(new)))
        step = np.where(np.isnan(self.buf), np.inf, np.abs(self.buf))
        q = int(np.argmax(step))  # lr is one number: the largest step component makes the largest update
        with np.errstate(over="ignore"):
            largest = self.lr * step[q]
        hint = "lower lr" + (" or raise damping" if hasattr(self, "damping") else "")
        raise DivergenceError(
            f"{self.name}: step {self.steps} diverged: lr={self.lr:g} times the step |buf| = {step[q]:.3e} gives "
            f"the largest update, {largest:.3e} (coordinate {q}, at {theta[q]:.3e}); {bad} of {new.size} "
            f"parameters would be NaN or inf; {hint}")

    def _kl_factor(self, d, g):
        # Ba et al. (2017), §5: nu = min(1, sqrt(c / (lr^2 d.g)))
        vg = self.lr ** 2 * float(d @ g)
        self.last_nu = 1.0 if vg <= self.kl_clip else float(np.sqrt(self.kl_clip / vg))
        return self.last_nu


class SGD(Optimizer):
    """Mini-batch SGD with heavy-ball momentum (``P = I``)."""

    name = "SGD"

    def __init__(self, lr=0.1, momentum=0.9, weight_decay=0.0, kl_clip=None):
        super().__init__(lr, momentum, weight_decay, kl_clip)

    def precondition(self, inp, theta, g, free):
        """The gradient itself."""
        return g


def check_mask(mask, n, where):
    """A bool ``(n,)`` mask of free coordinates, or ``None`` when all are free."""
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.dtype != bool:
        raise TypeError(f"{where}: mask must be a bool array (True = free), got dtype {m.dtype}")
    if m.shape != (n,):
        raise ValueError(f"{where}: mask must have shape ({n},), got {m.shape}")
    return None if m.all() else m.copy()


class MovingAverage:
    """``x_u = eps_u x_{u-1} + (1 - eps_u) X_u`` with ``eps_u = min(decay, 1 - 1/u)`` after ``u`` updates
    (Martens & Grosse 2015, §5), so the first estimate is the first batch's and
    ``decay = 0`` keeps only the latest batch."""

    def __init__(self, decay, where, name="ema_decay"):
        v = options.convert("EKFAC", {name: decay}, where=where)  # the table's rows of both decays
        self.decay = v[name]
        self.reset()

    def reset(self):
        """Start again: the next update becomes the estimate."""
        self.updates, self.value = 0, None

    def update(self, batch):
        """Fold in the list of arrays ``batch``; returns the averages."""
        self.updates += 1
        eps = min(self.decay, 1.0 - 1.0 / self.updates)
        if self.value is None or eps == 0:
            self.value = [np.array(b, dtype=np.float64) for b in batch]
        else:
            self.value = [eps * v + (1 - eps) * b for v, b in zip(self.value, batch)]
        return self.value


#: free coordinates above which a masked block is solved by conjugate gradients
#: instead of a Cholesky factorisation of its dense restriction
DENSE_LIMIT = 4096


def restricted_solve(matvec, dense, g, free, what):
    """Solve ``M_ff d_f = g_f`` for the symmetric positive definite ``M`` restricted
    to the free coordinates ``f``; ``d`` is zero elsewhere.

    ``dense()`` gives ``M`` (used up to :data:`DENSE_LIMIT` free coordinates, Cholesky);
    above it ``matvec(v)`` (``v (m,)``) drives conjugate gradients to a relative
    residual of ``1e-12``.
    """
    d = np.zeros_like(g)
    f = np.flatnonzero(free)
    if f.size == 0:
        return d
    if f.size <= DENSE_LIMIT:
        M = dense()[np.ix_(f, f)]
        try:
            d[f] = scipy.linalg.cho_solve(scipy.linalg.cho_factor(M), g[f])
        except np.linalg.LinAlgError:
            ev = np.linalg.eigvalsh(M)[0]
            raise np.linalg.LinAlgError(
                f"{what} restricted to the free coordinates is not positive definite (smallest eigenvalue "
                f"{ev:.3e}); use a larger damping") from None
        return d

    def restricted(v):
        full = np.zeros_like(g)
        full[f] = v
        return matvec(full)[f]

    d[f] = conjugate_gradients(restricted, g[f], what)
    return d


def conjugate_gradients(matvec, b, what, rtol=1e-12):
    """``x`` with ``|matvec(x) - b| <= rtol |b|`` for a symmetric positive definite
    operator (Hestenes & Stiefel 1952); raises ``LinAlgError`` on a non-positive
    curvature direction or after ``10 len(b)`` iterations."""
    x = np.zeros_like(b)
    r = b.copy()
    p = r.copy()
    rr = float(r @ r)
    stop = (rtol * np.sqrt(rr)) ** 2
    for _ in range(10 * len(b)):
        if rr <= stop:
            return x
        Ap = matvec(p)
        pAp = float(p @ Ap)
        if not pAp > 0:
            raise np.linalg.LinAlgError(f"{what} restricted to the free coordinates is not positive definite "
                                        f"(p^T M p = {pAp:.3e}); use a larger damping")
        alpha = rr / pAp
        x += alpha * p
        r -= alpha * Ap
        rr_new = float(r @ r)
        p = r + (rr_new / rr) * p
        rr = rr_new
    if rr <= stop:
        return x
    raise np.linalg.LinAlgError(f"{what}: conjugate gradients did not converge in {10 * len(b)} iterations "
                                f"(relative residual {np.sqrt(rr / float(b @ b)):.1e}); use a larger damping")
