"""Optimizers for :func:`refprune.train` or for stepping by hand
(``docs/optimizers.md``).

=====================  ===========================================================
class                  preconditioner ``P`` in ``d = P g``
=====================  ===========================================================
``SGD``                ``I`` (heavy-ball momentum)
``NaturalGradient``    ``(F + lam I)^-1`` with the exact curvature ``F`` of the batch
``KFAC``               K-FAC's damped ``(S kron A)^-1`` per layer
``EKFAC``              ``U_SA diag(kappa + lam)^-1 U_SA^T`` in K-FAC's eigenbasis
=====================  ===========================================================

Every optimizer has ``step(model, params, X, y, loss, mask=None)`` and ``reset()``,
and shares momentum, weight decay and KL clipping (:mod:`refprune.optim.base`).
"""

from .base import SGD, DivergenceError, Optimizer
from .kronecker import EKFAC, KFAC
from .natural import NaturalGradient

__all__ = ["Optimizer", "SGD", "NaturalGradient", "KFAC", "EKFAC", "DivergenceError"]
