"""``Linear(in_features, out_features)``: ``y = x W^T + b`` with PyTorch's layout."""

import numpy as np

from ..scalars import is_int
from .affine import AffineLayer


class Linear(AffineLayer):
    """Fully connected layer, ``weight (out, in)``, ``bias (out,)``.

    Input ``(N, in_features)``, output ``(N, out_features)``.  In the notation of
    :class:`~refprune.nn.affine.AffineLayer` the features are ``U = x`` with one
    location (``T = 1``).
    """

    def __init__(self, in_features, out_features, bias=True):
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if not is_int(v) or v < 1:
                raise ValueError(f"Linear: {name} must be a positive int, got {v!r}")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.out_units = out_features
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"Linear: bias must be True or False, got {bias!r}")
        self.bias = bool(bias)
        self.weight_shape = (out_features, in_features)

    def output_shape(self, in_shape):
        if tuple(in_shape) != (self.in_features,):
            raise ValueError(
                f"{self!r} expects per-sample input of shape ({self.in_features},), "
                f"got {tuple(in_shape)}"
            )
        return (self.out_features,)

    def features(self, x):
        return x[:, :, None]

    def features_adjoint(self, dU, in_shape):
        return dU[:, :, 0]

    def to_output(self, z, in_shape):
        return z[:, :, 0]

    def __repr__(self):
        return f"Linear({self.in_features}, {self.out_features}, bias={self.bias})"
