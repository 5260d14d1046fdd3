"""``Conv2d``: 2-d cross-correlation by im2col, PyTorch's layout and semantics.

``im2col`` unfolds an input ``(B, C, H, W)`` into features ``(B, C kh kw, Ho Wo)`` so that
the convolution is one matrix product with ``weight.reshape(c_out, -1)``
(Chellapilla et al. 2006; Grosse & Martens 2016, §2 for the same unfolding in KFC).
``col2im`` is its adjoint, a scatter-add over the ``kh kw`` kernel offsets.
"""

import numpy as np

from ..scalars import is_int
from .affine import AffineLayer
from .base import merge_tangent_axis, split_tangent_axis


def _pair(v, name):
    """``v`` as ``(int, int)``: one int is the same on both axes (PyTorch's convention)."""
    if is_int(v):
        return (int(v), int(v))
    if not (isinstance(v, (tuple, list)) and len(v) == 2 and all(is_int(i) for i in v)):
        raise ValueError(f"Conv2d: {name} must be an int or a pair of ints, got {v!r}")
    return (int(v[0]), int(v[1]))


def conv_output_size(size, kernel, stride, padding):
    """Output length ``(n + 2 padding - kernel) // stride + 1`` of one spatial axis
    (PyTorch's, dilation 1)."""
    return (size + 2 * padding - kernel) // stride + 1


def im2col(x, kernel, stride, padding):
    """``(B, C, H, W) -> (B, C*kh*kw, Ho*Wo)``, rows ordered ``(c, i, j)`` like
    ``weight.reshape(c_out, -1)``."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    b, c, h, w = x.shape
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    # the h - kh + 1 window positions taken every sh-th are exactly ho of them
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]  # (B, C, Ho, Wo, kh, kw)
    return win.transpose(0, 1, 4, 5, 2, 3).reshape(b, c * kh * kw, ho * wo)


def col2im(cols, in_shape, kernel, stride, padding):
    """Adjoint of :func:`im2col`: ``(B, C*kh*kw, Ho*Wo) -> (B, *in_shape)``."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    c, h, w = in_shape
    b = cols.shape[0]
    hp, wp = h + 2 * ph, w + 2 * pw
    ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    cols = cols.reshape(b, c, kh, kw, ho, wo)
    out = np.zeros((b, c, hp, wp))
    # A loop over the kh*kw kernel offsets only; each step is a strided add of the
    # whole batch.
    for i in range(kh):
        for j in range(kw):
            out[:, :, i : i + (ho - 1) * sh + 1 : sh, j : j + (wo - 1) * sw + 1 : sw] += cols[:, :, i, j]
    return out[:, :, ph : ph + h, pw : pw + w]


class Conv2d(AffineLayer):
    """2-d convolution, ``weight (c_out, c_in, kh, kw)``, ``bias (c_out,)``.

    Input ``(N, c_in, H, W)``; output ``(N, c_out, Ho, Wo)`` with
    ``Ho = (H + 2 ph - kh) // sh + 1``; zero padding, no dilation or groups.
    """

    features_copy = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not is_int(v) or v < 1:
                raise ValueError(f"Conv2d: {name} must be a positive int, got {v!r}")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.out_units = self.out_channels
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise ValueError(
                f"Conv2d: need kernel_size >= 1, stride >= 1, padding >= 0; got "
                f"{self.kernel_size}, {self.stride}, {self.padding}"
            )
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"Conv2d: bias must be True or False, got {bias!r}")
        self.bias = bool(bias)
        self.weight_shape = (self.out_channels, self.in_channels) + self.kernel_size

    def output_shape(self, in_shape):
        in_shape = tuple(in_shape)
        if len(in_shape) != 3 or in_shape[0] != self.in_channels:
            raise ValueError(
                f"{self!r} expects per-sample input (C={self.in_channels}, H, W), got {in_shape}"
            )
        ho, wo = (
            conv_output_size(s, k, st, p)
            for s, k, st, p in zip(in_shape[1:], self.kernel_size, self.stride, self.padding)
        )
        if ho < 1 or wo < 1:
            raise ValueError(f"{self!r}: input {in_shape} is smaller than the kernel")
        return (self.out_channels, ho, wo)

    def features(self, x):
        return im2col(x, self.kernel_size, self.stride, self.padding)

    def features_adjoint(self, dU, in_shape):
        return col2im(dU, in_shape, self.kernel_size, self.stride, self.padding)

    def to_output(self, z, in_shape):
        _, ho, wo = self.output_shape(in_shape)
        return z.reshape(z.shape[0], z.shape[1], ho, wo)

    # -- input tangents that live in one input channel each (docs/derivations.md §12) --------
    # The parameter-Jacobian seed of a convolution before this one moves one channel of its
    # output per direction, and elementwise layers keep it there: the im2col features of
    # such a tangent are zero outside the kh kw rows of that channel.

    def channel_features(self, v):
        """The features of one-channel input tangents ``v (B, H, W)``: ``(B, kh kw, T)``,
        the rows ``(c, kh, kw)`` of :meth:`features` for the channel ``c`` they live in."""
        return im2col(v[:, None], self.kernel_size, self.stride, self.padding)

    def channel_jvp(self, params, F, channels, in_shape):
        """Output tangents ``(N, K, *out)`` of input tangents that live in channel
        ``channels[k]`` of direction ``k``, from their :meth:`channel_features`
        ``F (N, K, kh kw, T)``: ``sum_q W[:, channels[k], q] F[n, k, q, t]`` (the other
        ``c_in - 1`` channels' products are zero)."""
        n, k, q, _ = F.shape
        Wk = params[0].reshape(self.out_channels, self.in_channels, q)[:, channels].transpose(1, 0, 2)
        z = np.matmul(Wk, F)  # (N, K, c_out, T): one (c_out x kh kw) @ (kh kw x T) per sample and direction
        return split_tangent_axis(self.to_output(merge_tangent_axis(z), in_shape), n)

    def channel_input_tangent(self, F, channels, dy0):
        """:meth:`param_grad_input_tangent` of the same tangents, ``(K, n_params)``: nonzero
        only at the weights ``(c', channels[k], kh, kw)`` of direction ``k``."""
        n, k, q, t = F.shape
        dz0 = self.from_output(dy0[:, 0])  # (N, c_out, T)
        # one product per sample over its locations, then the sum over the samples, as
        # param_grad_input_tangent does (F read in place, not reordered)
        per_sample = np.matmul(F.reshape(n, k * q, t), dz0.transpose(0, 2, 1))  # (N, K q, c_out)
        out = np.zeros((k, self.n_params))
        w = out[:, : self.n_weight].reshape(k, self.out_channels, self.in_channels, q)
        w[np.arange(k), :, channels, :] = per_sample.sum(axis=0).reshape(k, q, self.out_channels).transpose(0, 2, 1)
        return out

    def __repr__(self):
        return (
            f"Conv2d({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, bias={self.bias})"
        )
