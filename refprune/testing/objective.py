"""A refprune loss as plain functions of the flat parameter vector ``theta``, for use
with the finite-difference checkers (or with any other optimiser or checker)."""

from ..derivatives import grad, hvp, loss
from ..params import unflatten_params


class Objective:
    """``theta -> L(theta)`` and its derivatives for fixed model, data and loss.

    >>> import numpy as np, refprune as rp
    >>> from refprune.testing import Objective, check_grad
    >>> model = rp.Sequential(rp.Linear(3, 2))
    >>> obj = Objective(model, np.ones((4, 3)), np.array([0, 1, 1, 0]), rp.CrossEntropyLoss())
    >>> check_grad(obj.loss, obj.grad, rp.flatten_params(model.init(0)))
    """

    def __init__(self, model, X, y, loss_fn):
        self.model, self.X, self.y, self.loss_fn = model, X, y, loss_fn

    def params(self, theta):
        """``theta`` as the model's parameter list."""
        return unflatten_params(self.model, theta)

    def loss(self, theta):
        """``L(theta)``."""
        return loss(self.model, self.params(theta), self.X, self.y, self.loss_fn)

    def grad(self, theta):
        """``dL/dtheta`` at ``theta``."""
        return grad(self.model, self.params(theta), self.X, self.y, self.loss_fn)

    def hvp(self, theta, v):
        """``H(theta) v``."""
        return hvp(self.model, self.params(theta), self.X, self.y, self.loss_fn, v)
