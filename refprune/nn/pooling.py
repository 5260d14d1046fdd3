"""Pooling over non-overlapping ``k x k`` windows (PyTorch's default ``stride = kernel_size``,
no padding; rows and columns that do not fill a window are dropped, as in PyTorch)."""

import numpy as np

from ..scalars import is_int
from .base import Layer


def _check_kernel(k, name):
    if not is_int(k) or k < 1:
        raise ValueError(f"{name}: kernel_size must be a positive int, got {k!r}")
    return int(k)


class _Pool2d(Layer):
    def __init__(self, kernel_size):
        self.kernel_size = _check_kernel(kernel_size, type(self).__name__)

    def output_shape(self, in_shape):
        in_shape = tuple(in_shape)
        k = self.kernel_size
        if len(in_shape) != 3 or in_shape[1] < k or in_shape[2] < k:
            raise ValueError(f"{self!r} expects per-sample input (C, H, W) with H, W >= {k}, got {in_shape}")
        return (in_shape[0], in_shape[1] // k, in_shape[2] // k)

    def _windows(self, x):
        """``(B, C, H, W) -> (B, C, Ho, Wo, k*k)`` (a copy)."""
        k = self.kernel_size
        b, c, h, w = x.shape
        ho, wo = h // k, w // k
        x = x[:, :, : ho * k, : wo * k].reshape(b, c, ho, k, wo, k)
        return x.transpose(0, 1, 2, 4, 3, 5).reshape(b, c, ho, wo, k * k)

    def _unwindows(self, win, in_shape):
        """Adjoint of :meth:`_windows`: ``(B, C, Ho, Wo, k*k) -> (B, *in_shape)``."""
        k = self.kernel_size
        b, c, ho, wo, _ = win.shape
        out = np.zeros((b,) + tuple(in_shape))
        out[:, :, : ho * k, : wo * k] = (
            win.reshape(b, c, ho, wo, k, k).transpose(0, 1, 2, 4, 3, 5).reshape(b, c, ho * k, wo * k)
        )
        return out

    def __repr__(self):
        return f"{type(self).__name__}({self.kernel_size})"


class AvgPool2d(_Pool2d):
    """Mean over each window; linear, so its R-operator has no curvature term."""

    def forward(self, params, x):
        return self._windows(x).mean(axis=-1), x.shape[1:]

    def jvp(self, params, cache, dx):
        n, k = dx.shape[:2]
        y = self._windows(dx.reshape((n * k,) + dx.shape[2:])).mean(axis=-1)
        return y.reshape((n, k) + y.shape[1:])

    def vjp(self, params, cache, dy):
        n, k = dy.shape[:2]
        kk = self.kernel_size**2
        win = np.broadcast_to(dy.reshape((n * k,) + dy.shape[2:])[..., None] / kk, (n * k,) + dy.shape[2:] + (kk,))
        return self._unwindows(win, cache).reshape((n, k) + cache)


    def vjp_squared(self, params, cache, h):
        # each window entry has Jacobian 1/k^2, squared 1/k^4 = vjp / k^2
        return self.vjp(params, cache, h) / self.kernel_size**2


class MaxPool2d(_Pool2d):
    """Maximum over each window.  Piecewise linear: the derivative routes through the
    arg-max of the primal input (the first one on ties, as in PyTorch), and the
    R-operator has no curvature term away from ties."""

    def forward(self, params, x):
        win = self._windows(x)
        idx = win.argmax(axis=-1)
        y = np.take_along_axis(win, idx[..., None], axis=-1)[..., 0]
        return y, (idx, x.shape[1:])

    def jvp(self, params, cache, dx):
        idx, _ = cache
        n, k = dx.shape[:2]
        win = self._windows(dx.reshape((n * k,) + dx.shape[2:]))
        win = win.reshape((n, k) + win.shape[1:])
        return np.take_along_axis(win, idx[:, None, ..., None], axis=-1)[..., 0]

    def vjp(self, params, cache, dy):
        idx, in_shape = cache
        n, k = dy.shape[:2]
        win = np.zeros(dy.shape + (self.kernel_size**2,))
        np.put_along_axis(win, np.broadcast_to(idx[:, None, ..., None], dy.shape + (1,)), dy[..., None], axis=-1)
        return self._unwindows(win.reshape((n * k,) + win.shape[2:]), in_shape).reshape((n, k) + in_shape)
