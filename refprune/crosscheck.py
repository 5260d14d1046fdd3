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


def _jax():
    try:
        import jax
    except ImportError as err:
        raise ImportError(
            "this cross-check needs JAX: pip install 'refprune[crosscheck]' (or pip install jax jaxlib)"
        ) from err
    jax.config.update("jax_enable_x64", True)
    return jax


def jax_loss_function(model, X, y, loss):
    """``theta -> L(theta)`` written with ``jax.numpy`` and ``jax.lax`` from the model's
    layer descriptions (no refprune code on the path), for ``jax.hessian``."""
    jax = _jax()
    jnp, lax = jax.numpy, jax.lax
    shapes = model.param_shapes()
    sizes = [int(np.prod(s)) for s in shapes]
    Xj = jnp.asarray(np.asarray(X, dtype=np.float64))
    yj = jnp.asarray(np.asarray(y))

    def apply(layer, ps, x):
        if isinstance(layer, nn.Linear):
            out = x @ ps[0].T
            return out + ps[1] if layer.bias else out
        if isinstance(layer, nn.Conv2d):
            out = lax.conv_general_dilated(x, ps[0], layer.stride, [(p, p) for p in layer.padding],
                                           dimension_numbers=("NCHW", "OIHW", "NCHW"))
            return out + ps[1][None, :, None, None] if layer.bias else out
        if isinstance(layer, nn.ReLU):
            return jnp.maximum(x, 0.0)
        if isinstance(layer, nn.Tanh):
            return jnp.tanh(x)
        if isinstance(layer, nn.Sigmoid):
            return jax.nn.sigmoid(x)
        if isinstance(layer, nn.Softplus):
            return jnp.logaddexp(0.0, x)
        if isinstance(layer, nn.Flatten):
            return x.reshape(x.shape[0], -1)
        if isinstance(layer, (nn.AvgPool2d, nn.MaxPool2d)):
            k = layer.kernel_size
            n, c, h, w = x.shape
            win = x[:, :, : h // k * k, : w // k * k].reshape(n, c, h // k, k, w // k, k)
            return win.mean(axis=(3, 5)) if isinstance(layer, nn.AvgPool2d) else win.max(axis=(3, 5))
        raise TypeError(f"no JAX equivalent known for {layer!r}")

    def L(theta):
        flat = jnp.split(theta, np.cumsum(sizes)[:-1])
        ps = [t.reshape(s) for t, s in zip(flat, shapes)]
        x, i = Xj, 0
        for layer in model:
            k = len(layer.param_shapes())
            x = apply(layer, ps[i : i + k], x)
            i += k
        n, c = x.shape
        if isinstance(loss, nn.CrossEntropyLoss):
            per = -jnp.take_along_axis(jax.nn.log_softmax(x, axis=1), yj[:, None], axis=1)[:, 0]
        else:
            per = jnp.sum((x - yj) ** 2, axis=1)
        return loss.scale(n, c) * jnp.sum(per)

    return L


def jax_hessian(model, params, X, y, loss):
    """The Hessian by ``jax.jit(jax.hessian)`` over the flat parameter vector."""
    jax = _jax()
    L = jax_loss_function(model, X, y, loss)
    theta = np.concatenate([np.ravel(p) for p in params]).astype(np.float64)
    return np.asarray(jax.jit(jax.hessian(L))(theta))
