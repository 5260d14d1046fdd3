"""Optional bridges to PyTorch for cross-checking (needs the ``crosscheck`` extra).

:func:`to_torch` builds the ``torch.nn.Sequential`` equivalent to a refprune model, in
float64, with the same parameters: ``torch.nn.utils.parameters_to_vector`` of it equals
``refprune.flatten_params(params)`` (``CONVENTIONS.md``).
"""

import numpy as np

from . import nn


def _torch():
    try:
        import torch
    except ImportError as err:
        raise ImportError(
            "refprune.crosscheck needs PyTorch: pip install 'refprune[crosscheck]' "
            "(or pip install torch)"
        ) from err
    return torch


def to_torch_layer(layer):
    """The ``torch.nn`` module for one refprune layer (float64, uninitialised values)."""
    torch = _torch()
    tnn = torch.nn
    if isinstance(layer, nn.Linear):
        return tnn.Linear(layer.in_features, layer.out_features, bias=layer.bias, dtype=torch.float64)
    if isinstance(layer, nn.Conv2d):
        return tnn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                          padding=layer.padding, bias=layer.bias, dtype=torch.float64)
    simple = {nn.ReLU: tnn.ReLU, nn.Tanh: tnn.Tanh, nn.Sigmoid: tnn.Sigmoid, nn.Flatten: tnn.Flatten}
    if type(layer) in simple:
        return simple[type(layer)]()
    if isinstance(layer, nn.Softplus):
        # refprune's softplus has no linear cut-off; a huge threshold removes PyTorch's
        return tnn.Softplus(threshold=1e6)
    if isinstance(layer, nn.AvgPool2d):
        return tnn.AvgPool2d(layer.kernel_size)
    if isinstance(layer, nn.MaxPool2d):
        return tnn.MaxPool2d(layer.kernel_size)
    raise TypeError(f"no PyTorch equivalent known for {layer!r}")


def to_torch(model, params):
    """``(torch.nn.Sequential, list of torch parameters)`` equal to ``(model, params)``."""
    torch = _torch()
    tmodel = torch.nn.Sequential(*[to_torch_layer(layer) for layer in model])
    tparams = list(tmodel.parameters())
    if len(tparams) != len(params):
        raise ValueError(f"model has {len(tparams)} parameter arrays, got {len(params)}")
    with torch.no_grad():
        for t, p in zip(tparams, params):
            t.copy_(torch.from_numpy(np.asarray(p, dtype=np.float64)))
    return tmodel, tparams


def torch_loss(loss):
    """The PyTorch loss function with the same semantics as a refprune loss."""
    torch = _torch()
    if isinstance(loss, nn.CrossEntropyLoss):
        return lambda out, y: torch.nn.functional.cross_entropy(out, y, reduction=loss.reduction)
    return lambda out, y: torch.nn.functional.mse_loss(out, y, reduction=loss.reduction)


def torch_hessian(model, params, X, y, loss):
    """The Hessian by ``torch.func.hessian`` over the flat parameter vector, ``(n, n)``."""
    torch = _torch()
    tmodel, _ = to_torch(model, params)
    names = [k for k, _ in tmodel.named_parameters()]
    shapes = [tuple(p.shape) for p in params]
    sizes = [int(np.prod(s)) for s in shapes]
    Xt = torch.from_numpy(np.asarray(X, dtype=np.float64))
    yt = torch.from_numpy(np.asarray(y))
    lf = torch_loss(loss)

    def f(theta):
        ps = [t.reshape(s) for t, s in zip(torch.split(theta, sizes), shapes)]
        return lf(torch.func.functional_call(tmodel, dict(zip(names, ps)), (Xt,)), yt)

    theta = torch.from_numpy(np.concatenate([np.ravel(p) for p in params]).astype(np.float64))
    return torch.func.hessian(f)(theta).numpy()
