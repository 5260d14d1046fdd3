"""The layer protocol shared by every building block of a :class:`Sequential`.

Layers hold no state: parameters are passed in and every forward pass returns a
``cache`` that the derivative methods read (``docs/derivations.md`` §1).  Arrays that
carry derivatives have a *tangent axis*: primal activations are ``(N, *shape)``,
tangents and cotangents ``(N, K, *shape)`` with ``K`` directions per sample, so many
Jacobian-vector products run as one matrix product.

Method summary (``x`` input, ``y`` output, ``J = dy/dx`` per sample):

=====================  =====================================================
``forward``            ``y = layer(params, x)`` and the cache
``jvp``                ``J dx`` for ``dx`` of shape ``(N, K, *in)``
``vjp``                ``J^T dy`` for ``dy`` of shape ``(N, K, *out)``
``vjp_curvature``      the second-order part of the R-operator of ``vjp``:
                       ``d/de [J(x + e dx)^T dy0]`` (zero for layers linear in ``x``)
``vjp_squared``        ``(J o J)^T dy`` (squared entries), for OBD's diagonal
``split_flat``         flat parameter tangents ``(K, n_l)`` as the layer's arrays
=====================  =====================================================
"""

import math

import numpy as np


class Layer:
    """Base class: a parameter-free layer that is linear in its input.

    Subclasses override :meth:`output_shape`, :meth:`forward`, :meth:`jvp` and
    :meth:`vjp`; nonlinear ones also :meth:`vjp_curvature`.
    """

    #: names of the parameter arrays, in PyTorch's order
    param_names = ()

    def param_shapes(self):
        """Shapes of this layer's parameter arrays, in PyTorch's order."""
        return []

    def split_flat(self, V):
        """Rows ``V (K, n_l)`` over this layer's flat parameters (PyTorch's order) as its
        parameter arrays, each ``(K, *shape)``: ``K`` tangents per array."""
        shapes = self.param_shapes()
        if np.ndim(V) != 2 or np.shape(V)[1] != self.n_params:
            raise ValueError(f"{self!r}.split_flat: V must have shape (K, {self.n_params}), got {np.shape(V)}")
        ends = np.cumsum([int(np.prod(s)) for s in shapes])
        # the split after the last array leaves an empty part, which zip drops
        return [part.reshape((len(V),) + tuple(s)) for part, s in zip(np.split(V, ends, axis=1), shapes)]

    def init(self, rng):
        """Draw initial parameters from ``rng`` (a ``numpy.random.Generator``)."""
        return []

    def output_shape(self, in_shape):
        """Per-sample output shape for per-sample input shape ``in_shape``.

        Raises ``ValueError`` naming the layer when the input does not fit it.
        """
        raise NotImplementedError

    def forward(self, params, x):
        """Output ``(N, *out)`` for input ``x (N, *in)``, and the cache the derivative
        methods need: ``(y, cache)``."""
        raise NotImplementedError

    def jvp(self, params, cache, dx):
        """Forward tangents: ``J dx`` for a stack ``dx (N, K, *in)`` of ``K`` input
        directions per sample, ``(N, K, *out)`` (docs/derivations.md §1)."""
        raise NotImplementedError

    def vjp(self, params, cache, dy):
        """Backward cotangents: ``J^T dy`` for a stack ``dy (N, K, *out)``,
        ``(N, K, *in)`` (docs/derivations.md §1)."""
        raise NotImplementedError

    def vjp_squared(self, params, cache, h):
        """``(J o J)^T h``: the transpose of the Jacobian with squared entries, applied to
        ``h (N, K, *out)``.  OBD's diagonal back-propagation (LeCun et al. 1990, eq. 7)
        uses it to drop cross terms.  The default is right for layers whose Jacobian has
        only 0/1 entries (flatten, max pooling)."""
        return self.vjp(params, cache, h)

    def vjp_curvature(self, params, cache, dy0, dx):
        """Second-order term of the backward R-operator; ``None`` means zero.

        ``dy0`` is the first-order cotangent ``(N, 1, *out)``, ``dx`` an input tangent
        ``(N, K, *in)``; the result has the shape of ``dx``.
        """
        return None

    @property
    def n_params(self):
        """Number of parameters of this layer (entries of all its arrays)."""
        # Python integers: np.prod would wrap around in int64 for an absurd layer
        return sum(math.prod(int(d) for d in s) for s in self.param_shapes())

    def __repr__(self):
        return f"{type(self).__name__}()"


def merge_tangent_axis(a):
    """``(N, K, *shape) -> (N*K, *shape)`` (a view when possible)."""
    return a.reshape((a.shape[0] * a.shape[1],) + a.shape[2:])


def split_tangent_axis(a, n):
    """``(N*K, *shape) -> (N, K, *shape)``."""
    return a.reshape((n, a.shape[0] // n) + a.shape[1:])
