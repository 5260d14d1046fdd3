"""``Sequential``: a chain of layers and its flat parameter layout."""

import numpy as np

from ..memory import check_fits, nbytes
from ..scalars import is_int
from .base import Layer


class Sequential:
    """A feed-forward chain ``f = layer_L(…(layer_1(x)))``.

    Parameters are not stored: :meth:`init` returns them as a list of float64 arrays in
    PyTorch's order (layer by layer, ``weight`` then ``bias``), the order of
    ``model.parameters()`` in the equivalent ``torch.nn.Sequential``.
    """

    def __init__(self, *layers):
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: item {i} is not a refprune layer: {layer!r}")
        self.layers = tuple(layers)

    def __len__(self):
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __getitem__(self, i):
        return self.layers[i]

    def __repr__(self):
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"Sequential(\n  {inner}\n)"

    # -- parameters -----------------------------------------------------------
    def param_shapes(self):
        """Shapes of all parameter arrays, in flat order."""
        return [s for layer in self.layers for s in layer.param_shapes()]

    @property
    def n_params(self):
        """Number of parameters ``n`` (the length of ``theta``)."""
        return int(sum(layer.n_params for layer in self.layers))

    def init(self, seed=0):
        """PyTorch-default initial parameters drawn from ``numpy.random.default_rng(seed)``."""
        if not is_int(seed) or seed < 0:
            raise ValueError(f"init: seed must be a non-negative int, got {seed!r}")
        n = self.n_params
        check_fits(nbytes((n,)), "init", f"the {n} float64 parameters of the model")
        rng = np.random.default_rng(seed)
        return [p for layer in self.layers for p in layer.init(rng)]

    def param_offsets(self):
        """Start of each layer's parameters in ``theta`` (length ``len(self) + 1``)."""
        sizes = [layer.n_params for layer in self.layers]
        return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def group_params(self, params):
        """Split the flat list of arrays into one list per layer."""
        out, i = [], 0
        for layer in self.layers:
            k = len(layer.param_shapes())
            out.append(list(params[i : i + k]))
            i += k
        return out

    def output_shape(self, in_shape):
        """Per-sample output shape; raises ``ValueError`` naming the layer that does not fit."""
        shape = tuple(in_shape)
        for i, layer in enumerate(self.layers):
            try:
                shape = layer.output_shape(shape)
            except ValueError as err:
                raise ValueError(f"layer {i} of the model: {err}") from None
        return shape

    # -- evaluation -----------------------------------------------------------
    def forward_with_caches(self, grouped, x):
        """Forward pass returning the output and every layer's cache."""
        caches = []
        for layer, p in zip(self.layers, grouped):
            x, cache = layer.forward(p, x)
            caches.append(cache)
        return x, caches

    def __call__(self, params, x):
        """Network output ``f(x)`` for a flat list of parameter arrays (no input checks)."""
        return self.forward_with_caches(self.group_params(params), x)[0]
