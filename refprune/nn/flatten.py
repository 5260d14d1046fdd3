"""``Flatten``: ``(N, *shape) -> (N, prod(shape))`` in C order, as ``torch.nn.Flatten``."""

import numpy as np

from .base import Layer


class Flatten(Layer):
    def output_shape(self, in_shape):
        return (int(np.prod(in_shape)),)

    def forward(self, params, x):
        return x.reshape(x.shape[0], -1), x.shape[1:]

    def jvp(self, params, cache, dx):
        return dx.reshape(dx.shape[0], dx.shape[1], -1)

    def vjp(self, params, cache, dy):
        return dy.reshape(dy.shape[:2] + tuple(cache))
