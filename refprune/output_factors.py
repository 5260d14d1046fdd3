"""Factorisations ``Phi_n = Q_n Q_n^T`` of the output-space curvature, by Fisher type.

Every curvature matrix that refprune approximates is ``R sum_n J_n^T Phi_n J_n``
(``docs/derivations.md`` §4).  Writing ``Phi_n`` as a sum of outer products of a few
output-space columns ``Q_n[:, k]`` lets those columns be back-propagated like gradients
(Martens & Grosse 2015, §5; Dangel et al. 2020, "BackPACK", §2.2):

=============  ===========================================  =====================
type           columns ``Q_n[:, k]``                        count per sample
=============  ===========================================  =====================
``type-2``     a square root of ``Lambda_n`` (GGN)          ``C``
``mc``         ``g(y_s) / sqrt(S)``, ``y_s ~ p(.|f_n)``     ``S`` (``samples``)
``empirical``  ``g(y_n)`` at the observed target             ``1``
=============  ===========================================  =====================

Square roots: cross-entropy ``Lambda = diag(p) - p p^T = A A^T`` with columns
``A[:, k] = sqrt(p_k) (e_k - p)``; squared error ``Lambda = 2 I``, ``A = sqrt(2) I``.
"""

import numpy as np

from .nn import CrossEntropyLoss

FISHER_TYPES = ("type-2", "mc", "empirical")


def hessian_sqrt(loss, f):
    """Columns of a square root of ``Lambda_n``: ``(N, C, C)`` with ``[n, k, :]`` the
    ``k``-th column, so that ``Lambda_n = sum_k Q[n, k] Q[n, k]^T``."""
    n, c = f.shape
    if isinstance(loss, CrossEntropyLoss):
        z = f - f.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        return np.sqrt(p)[:, :, None] * (np.eye(c)[None] - p[:, None, :])
    return np.broadcast_to(np.sqrt(2.0) * np.eye(c), (n, c, c)).copy()


def draw_targets(inp, f_all, samples, seed):
    """``samples`` targets per data point from the model's likelihood, drawn from
    ``numpy.random.default_rng(seed)`` for the whole batch at once (so every function
    using the same ``samples`` and ``seed`` sees the same draws)."""
    if not isinstance(samples, (int, np.integer)) or isinstance(samples, bool) or samples < 1:
        raise ValueError(f"samples must be a positive int, got {samples!r}")
    return inp.loss.sample(f_all, np.random.default_rng(seed), int(samples))


class OutputFactor:
    """The columns ``Q_n`` of one Fisher type for a batch, evaluated chunk by chunk.

    ``columns(f, idx)`` returns ``(len(idx), K, C)`` for network outputs ``f`` of the
    samples ``idx`` (a slice of the batch).
    """

    def __init__(self, inp, fisher, samples=1, seed=0, f_all=None):
        if fisher not in FISHER_TYPES:
            raise ValueError(f"fisher must be one of {FISHER_TYPES}, got {fisher!r}")
        self.inp, self.fisher = inp, fisher
        if fisher == "mc":
            if f_all is None:
                f_all = inp.model.forward_with_caches(inp.grouped, inp.X)[0]
            self.targets = draw_targets(inp, f_all, samples, seed)

    def columns(self, f, idx):
        loss = self.inp.loss
        if self.fisher == "type-2":
            return hessian_sqrt(loss, f)
        if self.fisher == "empirical":
            return loss.grad(f, self.inp.y[idx])[:, None, :]
        S = len(self.targets)
        return np.stack([loss.grad(f, t[idx]) for t in self.targets], axis=1) / np.sqrt(S)
