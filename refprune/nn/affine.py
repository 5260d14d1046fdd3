"""Layers affine in their parameters: ``z = W_r U(x) + b`` (Linear and Conv2d).

Both layers are written as a weight matrix ``W_r`` of shape ``(c_out, r)`` times
*features* ``U(x)`` of shape ``(N, r, T)``: for ``Linear`` ``U = x`` with ``T = 1``; for
``Conv2d`` ``U`` is the im2col unfolding with ``T`` output locations and
``r = c_in kh kw``.  Every parameter derivative is then one formula for both layers
(``docs/derivations.md`` §2):

* per-sample gradient ``dL/dW_r = sum_t dz[:, t] U[:, t]^T`` and ``dL/db = sum_t dz[:, t]``;
* the flat parameter order is PyTorch's: ``weight.ravel()`` then ``bias``, and
  ``weight.ravel()`` equals ``W_r.ravel()`` because ``r`` is ordered ``(c_in, kh, kw)``.
"""

import math

import numpy as np

from ..memory import check_fits, describe, nbytes
from .base import Layer, merge_tangent_axis, split_tangent_axis


class AffineLayer(Layer):
    """Shared parameter calculus of :class:`Linear` and :class:`Conv2d`.

    Subclasses provide ``features`` (``(B, *in) -> (B, r, T)``), its adjoint
    ``features_adjoint`` (``(B, r, T), in_shape -> (B, *in)``) and the reshapes
    between ``(B, c_out, T)`` and the layer's output layout.
    """

    param_names = ("weight", "bias")
    out_units = None  # c_out; set by subclasses
    bias = True

    # -- subclass hooks ---------------------------------------------------------
    def features(self, x):
        """The features ``U (N, r, T)`` of ``z = W_r U + b``: the input itself (Linear,
        ``T = 1``) or its im2col patches (Conv2d, ``T`` output locations; docs §2)."""
        raise NotImplementedError

    def features_adjoint(self, dU, in_shape):
        """The adjoint of :meth:`features`: ``dU (N, K, r, T)`` back to input shape
        (the identity for Linear, col2im for Conv2d)."""
        raise NotImplementedError

    def to_output(self, z, in_shape):
        """``(B, c_out, T) -> (B, *out)`` for per-sample input shape ``in_shape``."""
        raise NotImplementedError

    @staticmethod
    def from_output(y):
        """``(B, c_out, *spatial) -> (B, c_out, T)``."""
        return y.reshape(y.shape[0], y.shape[1], -1)

    # -- parameters -----------------------------------------------------------
    def param_shapes(self):
        shapes = [self.weight_shape]
        if self.bias:
            shapes.append((self.out_units,))
        return shapes

    def init(self, rng):
        # PyTorch's default: kaiming_uniform_(a=sqrt(5)) on the weight gives
        # U(-1/sqrt(fan_in), 1/sqrt(fan_in)); the bias uses the same bound.
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"{self!r}.init: rng must be a numpy.random.Generator, got {type(rng).__name__}")
        check_fits(nbytes((self.n_params,)), "init", f"the {self.n_params} float64 parameters of {self!r}")
        fan_in = int(np.prod(self.weight_shape[1:]))
        bound = 1.0 / np.sqrt(fan_in)
        return [rng.uniform(-bound, bound, size=s) for s in self.param_shapes()]

    def _w(self, params):
        return params[0].reshape(self.out_units, -1)

    @property
    def n_weight(self):
        """Number of entries of ``weight`` (the prunable part of the layer)."""
        return math.prod(self.weight_shape)

    #: whether :meth:`features` copies its input (im2col) rather than viewing it
    features_copy = False

    def check_work(self, batch, in_shape, where):
        """Refuse a pass over ``batch`` inputs of per-sample shape ``in_shape`` whose
        arrays would not fit: the outputs ``(batch, c_out, T)``, the features
        ``(batch, r, T)`` (a copy for im2col, and the input-shaped result of ``vjp``) and
        the zero-padded input; their sizes follow from the shapes alone."""
        c = self.out_units
        t = math.prod(self.output_shape(in_shape)) // c
        r = self.n_weight // c
        need = 8 * batch * ((c + r) * t + math.prod(in_shape))
        padding = getattr(self, "padding", (0, 0))
        if padding[0] or padding[1]:
            need += nbytes((batch, in_shape[0], in_shape[1] + 2 * padding[0], in_shape[2] + 2 * padding[1]))
        what = "im2col features" if self.features_copy else "features"
        check_fits(need, lambda: f"{self!r}.{where}", lambda: f"a batch of {batch}: the outputs "
                   f"({describe((batch, c, t))}), {what} ({describe((batch, r, t))}) and input-shaped results")

    # -- forward and its derivatives with respect to the input ------------------
    def forward(self, params, x):
        self.check_work(x.shape[0], x.shape[1:], "forward")
        U = self.features(x)
        z = np.matmul(self._w(params), U)
        if self.bias:
            z += params[1][:, None]
        return self.to_output(z, x.shape[1:]), (U, x.shape[1:])

    def jvp(self, params, cache, dx):
        n = dx.shape[0]
        self.check_work(n * dx.shape[1], dx.shape[2:], "jvp")
        dU = self.features(merge_tangent_axis(dx))
        return split_tangent_axis(self.to_output(np.matmul(self._w(params), dU), cache[1]), n)

    def vjp(self, params, cache, dy):
        n = dy.shape[0]
        self.check_work(n * dy.shape[1], cache[1], "vjp")
        dz = self.from_output(merge_tangent_axis(dy))
        dU = np.matmul(self._w(params).T, dz)
        return split_tangent_axis(self.features_adjoint(dU, cache[1]), n)

    def vjp_squared(self, params, cache, h):
        n = h.shape[0]
        self.check_work(n * h.shape[1], cache[1], "vjp_squared")
        dz = self.from_output(merge_tangent_axis(h))
        dU = np.matmul((self._w(params) ** 2).T, dz)
        return split_tangent_axis(self.features_adjoint(dU, cache[1]), n)

    # -- derivatives involving the parameters -----------------------------------
    def param_jvp(self, params, cache, dparams):
        """Output tangent ``dW_r U + db`` for parameter tangents with a leading ``K``.

        ``dparams`` is ``[dW (K, *weight_shape), db (K, c_out)]``; returns ``(N, K, *out)``.
        """
        U = cache[0]
        k = dparams[0].shape[0]
        dW = dparams[0].reshape(k * self.out_units, -1)
        dz = np.matmul(dW, U).reshape(U.shape[0], k, self.out_units, U.shape[2])
        if self.bias:
            dz += dparams[1][None, :, :, None]
        out = self.to_output(merge_tangent_axis(dz), cache[1])
        return split_tangent_axis(out, U.shape[0])

    def param_jacobian(self, cache, rows=None):
        """Output tangents ``dz/dtheta_k`` for the flat parameter directions ``rows`` (all
        for ``None``): ``param_jvp`` of the identity's rows, written as the copies of the
        features they are (the weight ``(c, r)`` moves only ``z[c, :]``, by ``U[r, :]``; the
        bias ``c`` moves it by one) instead of a product with the identity.  Returns
        ``(N, K, *out)``."""
        U = cache[0]
        n, r, t = U.shape
        rows = np.arange(self.n_params)[slice(None) if rows is None else rows]
        out = np.zeros((n, len(rows), self.out_units, t))
        k = np.arange(len(rows))
        weight = rows < self.n_weight
        out[:, k[weight], rows[weight] // r, :] = U[:, rows[weight] % r, :]
        out[:, k[~weight], rows[~weight] - self.n_weight, :] = 1.0
        return split_tangent_axis(self.to_output(merge_tangent_axis(out), cache[1]), n)

    def param_vjp_tangent(self, params, cache, dparams, dy0):
        """``dW_r^T dy0`` mapped back to the input layout: the parameter part of the
        backward R-operator.  ``dy0`` is ``(N, 1, *out)``; returns ``(N, K, *in)``."""
        n = dy0.shape[0]
        k = dparams[0].shape[0]
        dWt = dparams[0].reshape(k, self.out_units, -1).transpose(0, 2, 1)
        dz0 = self.from_output(dy0[:, 0])  # (N, c_out, T)
        dU = np.matmul(dWt[None], dz0[:, None])  # (N, K, r, T)
        return split_tangent_axis(self.features_adjoint(merge_tangent_axis(dU), cache[1]), n)

    def input_tangent_features(self, dx):
        """Features of an input tangent ``(N, K, *in) -> (N, K, r, T)``."""
        n = dx.shape[0]
        return split_tangent_axis(self.features(merge_tangent_axis(dx)), n)

    def param_contract(self, cache, T, units=None):
        """Batch parameter gradient with trailing axes: ``sum_{n,t} U[n,r,t] T[n,c,t,q]``.

        ``T`` has shape ``(N, *out, q)``, or ``(N, prod(out), q)`` with ``out`` flattened in C
        order; returns ``(n_params, q)`` in flat order.  With
        ``q`` cotangent directions this is the summed gradient for each; with ``T`` the
        derivative of another layer's gradient with respect to this layer's output it is
        a block of the Hessian (``docs/derivations.md`` §4).  ``units=(u0, u1)``: ``T``
        covers only those output units, and the rows returned are theirs
        (:meth:`unit_rows`): their weights, then their biases.
        """
        U = cache[0]
        n, r, t = U.shape
        q = T.shape[-1]
        units_n = self.out_units if units is None else units[1] - units[0]
        Tz = T.reshape(n, units_n, t, q)
        n_w = units_n * r
        out = np.empty((n_w + (units_n if self.bias else 0), q))
        w = out[:n_w].reshape(units_n, r, q)
        if t == 1:
            np.matmul(U[:, :, 0].T, Tz[:, :, 0, :].transpose(1, 0, 2), out=w)
        else:
            Ur = U.transpose(1, 0, 2).reshape(r, n * t)
            Tc = Tz.transpose(1, 0, 2, 3).reshape(units_n, n * t, q)
            np.matmul(Ur, Tc, out=w)
        if self.bias:
            Tz.sum(axis=(0, 2), out=out[n_w:])
        return out

    def param_grad(self, cache, dy):
        """Summed parameter gradients for cotangents ``dy`` of shape ``(N, K, *out)``;
        returns ``(K, n_params)``."""
        return self.param_contract(cache, np.moveaxis(dy, 1, -1)).T

    def param_grad_rows(self, cache, dy, out=None):
        """:meth:`param_grad` for many directions, laid out for them: ``(K, n_params)``
        C-contiguous (or written into ``out``, a ``(K, n_params)`` array or view whose
        rows may be strided), with one reordering copy of ``dy`` (to ``((n, t), (c, K))``)
        for a convolution and none for ``Linear`` (whose ``(n, K, c)`` cotangents already
        have ``n`` outermost: one product per unit over the samples)."""
        U = cache[0]
        n, r, t = U.shape
        k = dy.shape[1]
        dz = self.from_output(merge_tangent_axis(dy)).reshape(n, k, self.out_units, t)
        if out is None:
            out = np.empty((k, self.n_params))
        w = out[:, : self.n_weight].reshape(k, self.out_units, r)  # splits one axis: always a view
        if t == 1:
            # w[k, c, r] = sum_n dz[n, k, c] U[n, r]: (k c x n) @ (n x r)
            lhs = dz[:, :, :, 0].reshape(n, k * self.out_units).T
            w[...] = np.matmul(lhs, U[:, :, 0]).reshape(k, self.out_units, r)
        else:
            # one product (r x n t) @ (n t x c K) rather than c of them: faster with either
            # one or two BLAS threads
            Tc = dz.transpose(0, 3, 2, 1).reshape(n * t, self.out_units * k)
            Ur = U.transpose(1, 0, 2).reshape(r, n * t)
            w[...] = np.matmul(Ur, Tc).reshape(r, self.out_units, k).transpose(2, 1, 0)
        if self.bias:
            dz.sum(axis=(0, 3), out=out[:, self.n_weight :])
        return out

    def param_grad_squared_features(self, cache, h):
        """``sum_{n,t} h[n,c,t] U[n,r,t]^2`` (and ``sum h`` for the bias): OBD's weight
        second derivatives from the pre-activation ones (LeCun et al. 1990, eq. 8, summed
        over the locations that share a convolution weight).  ``h`` is ``(N, 1, *out)``;
        returns ``(n_params,)``."""
        return self.param_grad((cache[0] ** 2, cache[1]), h)[0]

    def param_grad_input_tangent(self, dU, dy0):
        """``sum_{n,t} dy0[n,c,t] dU[n,k,r,t]``: the part of the R-operator of the
        weight gradient that comes from an input tangent (``dU`` its features
        ``(N, K, r, T)``, ``dy0`` the first-order cotangent ``(N, 1, *out)``).
        Returns ``(K, n_params)`` (zero for the bias, which has no input factor)."""
        n, k, r, t = dU.shape
        dz0 = self.from_output(dy0[:, 0])  # (N, c_out, T)
        if t == 1:
            # one product over the samples, without reordering dU: (c x n) @ (n x k r)
            out = np.zeros((k, self.n_params))
            prod = np.matmul(dz0[:, :, 0].T, dU.reshape(n, k * r)).reshape(self.out_units, k, r)
            out[:, : self.n_weight].reshape(k, self.out_units, r)[...] = prod.transpose(1, 0, 2)
            return out
        # one product per sample over its locations, (k r x t) @ (t x c), then the sum over
        # the samples: dU is read in place instead of reordered to (k, r, (n, t)) first
        per_sample = np.matmul(dU.reshape(n, k * r, t), dz0.transpose(0, 2, 1))
        out = np.zeros((k, self.n_params))
        out[:, : self.n_weight] = per_sample.sum(axis=0).reshape(k, r, self.out_units).transpose(0, 2, 1).reshape(k, -1)
        return out

    def per_sample_param_grad(self, cache, dy, dU=None, dy0=None, units=None):
        """Per-sample parameter gradients ``(N, K, n_sel)`` for cotangents ``dy``.

        With ``dU`` (input-tangent features) and ``dy0`` (first-order cotangent) the
        bilinear term ``dy0 x dU`` is added: the result is then the tangent of the
        per-sample gradient (``docs/derivations.md`` §4).  ``units = (u0, u1)`` keeps
        output units ``u0 .. u1-1`` only, in the order ``[weight rows, biases]``.
        """
        U = cache[0]
        n, r, t = U.shape
        u0, u1 = units if units is not None else (0, self.out_units)
        nu = u1 - u0
        k = dy.shape[1]
        dz = self.from_output(merge_tangent_axis(dy)).reshape(n, k, self.out_units, t)[:, :, u0:u1]
        out = np.empty((n, k, nu * r + (nu if self.bias else 0)))
        w = out[:, :, : nu * r].reshape(n, k, nu, r)
        if t == 1:
            np.multiply(dz, U[:, None, None, :, 0], out=w)
        else:
            np.matmul(dz, U.transpose(0, 2, 1)[:, None], out=w)
        if dU is not None:
            dz0 = self.from_output(dy0[:, 0])[:, None, u0:u1]  # (N, 1, nu, T)
            if t == 1:
                w += dz0 * dU[:, :, None, :, 0]
            else:
                w += np.matmul(dz0, dU.transpose(0, 1, 3, 2))
        if self.bias:
            dz.sum(axis=-1, out=out[:, :, nu * r:])
        return out

    def unit_rows(self, units):
        """Flat indices (within the layer) of the parameters of output units ``(u0, u1)``:
        their weights, then their biases."""
        ranges = self.unit_columns(units)
        return np.concatenate([np.arange(a, b) for a, b in ranges])

    def unit_columns(self, units):
        """Flat parameter ranges covered by output units ``(u0, u1)``:
        ``[(start, stop) of the weights, (start, stop) of the biases]``."""
        u0, u1 = units
        r = self.n_weight // self.out_units
        ranges = [(u0 * r, u1 * r)]
        if self.bias:
            ranges.append((self.n_weight + u0, self.n_weight + u1))
        return ranges
