"""The flat parameter vector ``theta`` (``docs/conventions.md`` §1: PyTorch's
``parameters_to_vector`` order: layer by layer, ``weight.ravel()`` then ``bias``)."""

import numpy as np

from .nn import Sequential


def flatten_params(params):
    """Concatenate a list of parameter arrays into ``theta`` of shape ``(n,)`` (a copy)."""
    if not isinstance(params, (list, tuple)):
        raise TypeError(f"flatten_params: params must be a list of arrays, got {type(params).__name__}")
    if not params:
        return np.zeros(0)
    return np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in params])


def unflatten_params(model, theta):
    """Split ``theta`` into arrays with ``model``'s parameter shapes (copies)."""
    if not isinstance(model, Sequential):
        raise TypeError(f"unflatten_params: model must be a refprune Sequential, got {type(model).__name__}")
    theta = np.asarray(theta, dtype=np.float64)
    if theta.shape != (model.n_params,):
        raise ValueError(f"unflatten_params: theta must have shape ({model.n_params},) for this model, "
                         f"got {theta.shape}")
    out, i = [], 0
    for shape in model.param_shapes():
        size = int(np.prod(shape))
        out.append(theta[i : i + size].reshape(shape).copy())
        i += size
    return out
