"""``Flatten``: ``(N, *shape) -> (N, prod(shape))`` in C order, as ``torch.nn.Flatten``."""

import numpy as np

from .base import Layer


class Flatten(Layer):
    def output_shape(self, in_shape):
        return (int(np.prod(in_shape)),)

    def forward(self, params, x):
        return x.reshape(x.shape[:1] + self.output_shape(x.shape[1:])), x.shape[1:]

    def jvp(self, params, cache, dx):
        return dx.reshape(dx.shape[:2] + self.output_shape(cache))

    def vjp(self, params, cache, dy):
        return dy.reshape(dy.shape[:2] + tuple(cache))
