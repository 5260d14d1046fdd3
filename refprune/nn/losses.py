"""Losses with PyTorch's semantics (``docs/derivations.md`` §3, ``docs/conventions.md`` §2).

``L = R sum_n l_n`` with the per-sample loss ``l_n`` summed over outputs:

* :class:`CrossEntropyLoss`: ``l_n = -log softmax(f_n)[y_n]``; ``R = 1/N`` ("mean") or 1.
* :class:`MSELoss`: ``l_n = sum_c (f_nc - y_nc)^2``; ``R = 1/(N C)`` ("mean") or 1.
* :class:`BCEWithLogitsLoss`: ``l_n = sum_c -[y log sigma(f) + (1 - y) log(1 - sigma(f))]``
  on logits; ``R = 1/(N C)`` ("mean") or 1.

Each loss also gives the per-sample loss Hessian ``Lambda_n = d^2 l_n / df_n^2`` as a
matrix product, the Fisher's ``E_y[g g^T]`` for its likelihood, and samples from that
likelihood.
"""

import numpy as np

from ..nested import as_array

_REDUCTIONS = ("mean", "sum")


class Loss:
    """A loss ``L = R sum_n l_n`` with PyTorch's reduction (``"mean"`` or ``"sum"``);
    subclasses give ``l_n``, its derivatives, its likelihood's Fisher and samples.

    The reduction is the first (and only) positional argument: ``MSELoss("sum")``.
    PyTorch's first positional arguments are others (``size_average`` for ``MSELoss``,
    ``weight`` for ``CrossEntropyLoss``), so ``torch.nn.MSELoss(reduction="sum")`` is
    ``MSELoss(reduction="sum")`` here (docs/conventions.md §2)."""

    def __init__(self, reduction="mean"):
        if reduction not in _REDUCTIONS:
            raise ValueError(f"{type(self).__name__}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction

    def __repr__(self):
        return f"{type(self).__name__}(reduction={self.reduction!r})"

    def check_targets(self, y, n, c):
        """The targets ``y`` for ``n`` samples and ``c`` outputs, checked and converted
        (labels ``(n,)`` as int64, regression targets ``(n, c)`` as float64)."""
        raise NotImplementedError

    def scale(self, n, c):
        """``R``: ``L = R sum_n l_n`` (docs/conventions.md §2)."""
        raise NotImplementedError

    def _float_targets(self, y, n, c, shape_words="", nan_hint=""):
        """Targets of shape ``(n, c)``, numeric and finite, as float64 (the squared-error
        and binary cross-entropy losses); every refusal names this loss."""
        name = type(self).__name__
        y = as_array(y, f"{name}: targets", "y")
        if y.shape != (n, c):
            raise ValueError(f"{name}: targets must have {shape_words}shape ({n}, {c}), got {y.shape}")
        if y.dtype.kind not in ("f", "i", "u", "b"):
            raise ValueError(f"{name}: targets must be numeric, got dtype {y.dtype}")
        y = np.asarray(y, dtype=np.float64)
        if not np.all(np.isfinite(y)):
            raise ValueError(f"{name}: targets contain NaN or inf{nan_hint}")
        return y

    def per_sample(self, f, y):
        """``l_n`` for outputs ``f (N, C)``, ``(N,)``."""
        raise NotImplementedError

    def grad(self, f, y):
        """``dl_n/df_n``, ``(N, C)``."""
        raise NotImplementedError

    def hessian_matvec(self, f, y, V):
        """``Lambda_n V_n`` for a stack ``V (N, K, C)``."""
        raise NotImplementedError

    def fisher_matvec(self, f, V):
        """``E_{y ~ p(.|f_n)}[g g^T] V_n`` for a stack ``V (N, K, C)``."""
        raise NotImplementedError

    def sample(self, f, rng, samples):
        """``samples`` targets per data point from the likelihood at outputs ``f``."""
        raise NotImplementedError


def log_softmax(f):
    """``log softmax(f)`` along the last axis, with the maximum subtracted first so
    that no exponential overflows."""
    m = f.max(axis=-1, keepdims=True)
    s = f - m
    return s - np.log(np.exp(s).sum(axis=-1, keepdims=True))


class CrossEntropyLoss(Loss):
    """Softmax cross-entropy on integer labels ``y`` of shape ``(N,)`` in ``[0, C)``.

    Likelihood: categorical with ``yhat = softmax(f)``.  Then
    ``grad = yhat - e_y`` and ``Lambda = diag(yhat) - yhat yhat^T``.
    """

    def check_targets(self, y, n, c):
        y = as_array(y, "CrossEntropyLoss: labels", "y")
        if y.shape != (n,):
            raise ValueError(f"CrossEntropyLoss: labels must have shape ({n},), got {y.shape}")
        if y.dtype.kind == "f":
            if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
                raise ValueError("CrossEntropyLoss: labels must be integers, got non-integer values")
        elif y.dtype.kind not in ("i", "u"):
            raise ValueError(f"CrossEntropyLoss: labels must be integers, got dtype {y.dtype}")
        if n and (y.min() < 0 or y.max() >= c):
            raise ValueError(f"CrossEntropyLoss: labels must lie in [0, {c}), got range [{y.min()}, {y.max()}]")
        return y.astype(np.int64)

    def scale(self, n, c):
        return 1.0 / n if self.reduction == "mean" else 1.0

    def per_sample(self, f, y):
        return -log_softmax(f)[np.arange(len(y)), y]

    def grad(self, f, y):
        g = np.exp(log_softmax(f))
        g[np.arange(len(y)), y] -= 1.0
        return g

    def hessian_matvec(self, f, y, V):
        """``Lambda_n V_n`` for ``V`` of shape ``(N, K, C)``, with the softmax Hessian
        ``Lambda_n = diag(p) - p p^T`` (docs/derivations.md §3) applied as a ``C x C``
        matrix: one batched product instead of four elementwise passes over ``V`` and a
        sum along its short last axis (9 times faster for ``K = 296``, ``C = 10``;
        docs §12).  ``Lambda[i, j] = p_i ([i = j] - p_j)`` is exactly symmetric."""
        p = np.exp(log_softmax(f))
        lam = p[:, :, None] * (np.eye(p.shape[1]) - p[:, None, :])
        return np.matmul(V, lam)

    def fisher_matvec(self, f, V):
        """``E_{y ~ p}[g(y) g(y)^T] V`` evaluated as the sum over all ``C`` labels of
        ``p_y (p - e_y)(p - e_y)^T`` (no closed form used, so ``F = GGN`` is a test)."""
        p = np.exp(log_softmax(f))
        c = p.shape[1]
        G = p[:, None, :] - np.eye(c)[None]  # (N, y, C): g(y) = p - e_y
        E = np.einsum("nyc,ny,nyd->ncd", G, p, G)
        return np.matmul(V, E)  # E symmetric

    def sample(self, f, rng, samples):
        """``samples`` labels per sample from ``softmax(f)``: ``(samples, N)`` ints."""
        cdf = np.cumsum(np.exp(log_softmax(f)), axis=1)
        u = rng.random((samples, f.shape[0], 1))
        # the label is the number of the first C-1 thresholds at or below u, so that class k
        # owns [cdf[k-1], cdf[k]) as u owns [0, 1): a class of probability 0 (an empty
        # interval) is never drawn, not even for u exactly 0.  The last class takes the rest
        # even when rounding leaves cdf[-1] a little below 1 (docs/conventions.md §3)
        return (u >= cdf[None, :, :-1]).sum(axis=-1)


class MSELoss(Loss):
    """Squared error on targets ``y`` of shape ``(N, C)``, no factor 1/2 (PyTorch).

    ``MSELoss("sum")`` or ``MSELoss(reduction="sum")``: the reduction is the first
    positional argument, where ``torch.nn.MSELoss``'s is ``size_average`` (docs/conventions.md §2).

    Likelihood: Gaussian with variance ``1/2`` per output, so that
    ``-log p(y | f) = (f - y)^2 + const``.  ``grad = 2 (f - y)``, ``Lambda = 2 I``.
    """

    #: variance of the Gaussian likelihood that makes ``l_n`` its negative log-density
    variance = 0.5

    def check_targets(self, y, n, c):
        return self._float_targets(y, n, c)

    def scale(self, n, c):
        return 1.0 / (n * c) if self.reduction == "mean" else 1.0

    def per_sample(self, f, y):
        return np.sum((f - y) ** 2, axis=1)

    def grad(self, f, y):
        return 2.0 * (f - y)

    def hessian_matvec(self, f, y, V):
        return 2.0 * V

    def fisher_matvec(self, f, V):
        """``E[g g^T] = 4 Cov(y) = 4 * variance * I`` for ``g = 2 (f - y)``."""
        return (4.0 * self.variance) * V

    def sample(self, f, rng, samples):
        """Targets ``(samples, N, C)`` from ``N(f, variance I)``."""
        return f[None] + np.sqrt(self.variance) * rng.standard_normal((samples,) + f.shape)


def softplus(x):
    """``log(1 + exp(x))`` as ``max(x, 0) + log1p(exp(-|x|))``: no exponential overflows,
    and the small values (``x`` very negative) keep their relative precision."""
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


def sigmoid(x):
    """``1 / (1 + exp(-x))`` from ``exp(-|x|)``, which never overflows; ``sigmoid(-x)``
    is ``1 - sigmoid(x)`` without the cancellation of the subtraction."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0, e) / (1.0 + e)


class BCEWithLogitsLoss(Loss):
    """Binary cross-entropy on logits, per output, with targets ``y`` of shape ``(N, C)``
    in ``[0, 1]`` (soft labels allowed, as in PyTorch) (``docs/derivations.md`` §3).

    ``l_n = sum_c y softplus(-f) + (1 - y) softplus(f)``, since
    ``-log sigma(f) = softplus(-f)`` and ``-log(1 - sigma(f)) = softplus(f)``: two
    non-negative terms, so no cancellation for large ``|f|``.  Likelihood: independent
    Bernoulli outputs with ``p = sigma(f)``; ``grad = p - y``,
    ``Lambda = diag(p (1 - p))``.  PyTorch's ``weight`` and ``pos_weight`` are not
    modelled (``docs/conventions.md`` §2).
    """

    def check_targets(self, y, n, c):
        y = self._float_targets(y, n, c, "the outputs' ", "; they must be probabilities in [0, 1]")
        if y.size and (y.min() < 0.0 or y.max() > 1.0):
            raise ValueError(f"BCEWithLogitsLoss: targets must lie in [0, 1], got range [{y.min()}, {y.max()}]")
        return y

    def scale(self, n, c):
        # PyTorch's "mean" averages over all N C elements, as MSELoss does
        return 1.0 / (n * c) if self.reduction == "mean" else 1.0

    def per_sample(self, f, y):
        return np.sum(y * softplus(-f) + (1.0 - y) * softplus(f), axis=1)

    def grad(self, f, y):
        return sigmoid(f) - y

    def hessian_matvec(self, f, y, V):
        """``Lambda_n V_n = p (1 - p) * V`` (diagonal), ``1 - p`` as ``sigmoid(-f)``."""
        return (sigmoid(f) * sigmoid(-f))[:, None, :] * V

    def fisher_matvec(self, f, V):
        """``E_{y ~ Bernoulli(p)}[g g^T] V`` from the two values of each output, with
        ``g = p - y`` independent across outputs: the second moments
        ``s = p (p - 1)^2 + (1 - p) p^2`` on the diagonal (no closed form used, so
        ``F = GGN`` is a test).  Off the diagonal ``E[g_c g_d] = E[g_c] E[g_d]`` with
        ``E[g_c] = p (-q) + q p``, which is zero in floating point too (``p q`` and ``q p``
        are the same rounded product), so the off-diagonal terms are left out rather than
        computed as zeros."""
        p, q = sigmoid(f), sigmoid(-f)  # q = 1 - p
        s = p * q**2 + q * p**2  # E[g_c^2]: y = 1 gives g = -q, y = 0 gives g = p
        return s[:, None, :] * V

    def sample(self, f, rng, samples):
        """Targets ``(samples, N, C)`` of 0.0 and 1.0 from ``Bernoulli(sigmoid(f))``."""
        u = rng.random((samples,) + f.shape)
        return (u < sigmoid(f)[None]).astype(np.float64)
