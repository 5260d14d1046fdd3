"""Masks over ``theta``: ``True`` = kept, ``False`` = pruned (exactly zero).

By default only weights are prunable; biases are kept (``docs/conventions.md`` §7).
"""

import numpy as np

from ..nn import AffineLayer


def affine_layers(model):
    """``[(j, layer, start, weight_stop, stop)]`` for every Linear/Conv2d in ``theta``."""
    offsets = model.param_offsets()
    return [(j, layer, int(offsets[j]), int(offsets[j]) + layer.n_weight, int(offsets[j + 1]))
            for j, layer in enumerate(model) if isinstance(layer, AffineLayer)]


def prunable_mask(model, include_bias=False):
    """``(n,)`` bool: the coordinates a pruning method may remove."""
    m = np.zeros(model.n_params, dtype=bool)
    for _, _, start, wstop, stop in affine_layers(model):
        m[start : stop if include_bias else wstop] = True
    return m


def check_mask(model, mask):
    """A user mask as a fresh bool array of shape ``(n,)``."""
    if mask is None:
        return np.ones(model.n_params, dtype=bool)
    m = np.asarray(mask)
    if m.shape != (model.n_params,) or m.dtype != bool:
        raise ValueError(f"mask must be a bool array of shape ({model.n_params},), got {m.dtype} {m.shape}")
    return m.copy()


def check_not_emptied(model, mask, prunable):
    """Raise if a layer had prunable weights and has none left."""
    for j, layer, start, wstop, stop in affine_layers(model):
        sl = slice(start, stop)
        if prunable[sl].any() and not (mask[sl] & prunable[sl]).any():
            raise ValueError(
                f"pruning would remove every weight of layer {j} ({layer!r}); lower the sparsity "
                "or prune layer by layer (scope='layer')"
            )


def sparsity_of(mask, prunable):
    """Fraction of prunable coordinates that are pruned."""
    total = int(prunable.sum())
    return float((prunable & ~mask).sum() / total) if total else 0.0
