"""Elementwise activations ``a = phi(z)`` with first and second derivatives.

For an elementwise map the per-sample Jacobian is ``diag(phi'(z))``, so

* ``jvp``: ``phi'(z) * dz``; ``vjp``: ``phi'(z) * da``;
* backward R-operator (Pearlmutter 1994, eq. for ``R{dE/dx}``): the derivative of
  ``phi'(z) * da0`` along ``dz`` adds ``phi''(z) * dz * da0`` (``vjp_curvature``).
"""

import numpy as np
from scipy.special import expit

from .base import Layer


class Elementwise(Layer):
    """Base for activations: subclasses give ``phi``, ``phi'`` and ``phi''``."""

    #: ``phi''`` is zero wherever it is defined (its ``derivatives`` return ``None`` for it),
    #: so the activation adds no second-order term (docs/derivations.md §12)
    zero_second_derivative = False

    def output_shape(self, in_shape):
        return tuple(in_shape)

    def forward(self, params, x):
        a, d1, d2 = self.derivatives(x)
        return a, (d1, d2)

    def jvp(self, params, cache, dx):
        return cache[0][:, None] * dx

    def vjp(self, params, cache, dy):
        return cache[0][:, None] * dy

    def vjp_squared(self, params, cache, h):
        return (cache[0] ** 2)[:, None] * h

    def vjp_curvature(self, params, cache, dy0, dx):
        if cache[1] is None:
            return None
        return (cache[1] * dy0[:, 0])[:, None] * dx

    def derivatives(self, z):
        """Return ``(phi(z), phi'(z), phi''(z))``; ``phi''`` is ``None`` when zero."""
        raise NotImplementedError


class ReLU(Elementwise):
    """``max(z, 0)``; ``phi'`` is taken as 0 at ``z = 0`` (PyTorch's choice), ``phi'' = 0``
    away from the kink."""

    zero_second_derivative = True

    def derivatives(self, z):
        return np.maximum(z, 0.0), (z > 0).astype(np.float64), None  # relu'(0) = 0, as in PyTorch


class Tanh(Elementwise):
    """``tanh z``; ``phi' = 1 - a^2``, ``phi'' = -2 a (1 - a^2)``."""

    def derivatives(self, z):
        a = np.tanh(z)
        d1 = 1.0 - a * a
        return a, d1, -2.0 * a * d1


class Sigmoid(Elementwise):
    """``s = 1 / (1 + e^-z)``; ``phi' = s (1 - s)``, ``phi'' = s (1 - s)(1 - 2 s)``."""

    def derivatives(self, z):
        s = expit(z)  # the logistic function, without overflow for any z
        d1 = s * (1.0 - s)
        return s, d1, d1 * (1.0 - 2.0 * s)


class Softplus(Elementwise):
    """``log(1 + e^z)`` (PyTorch's ``beta = 1``, computed without the linear cut-off at
    ``threshold = 20``, which changes values by less than ``e^-20``);
    ``phi' = sigmoid(z)``, ``phi'' = s (1 - s)``."""

    def derivatives(self, z):
        s = expit(z)  # the logistic function, without overflow for any z
        return np.logaddexp(0.0, z), s, s * (1.0 - s)
