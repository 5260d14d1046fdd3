"""Bridges to JAX (needs ``jax``): a refprune network as a pure function and a pytree.

* :func:`to_jax`: ``(apply, tree)`` with ``apply(tree, x)`` the network's output, written
  with ``jax.numpy`` and ``jax.lax`` from the layer descriptions alone (no refprune code
  on the path), and ``tree`` a dict keyed like PyTorch's state dict (``"0.weight"``,
  ``"0.bias"``, ...), in PyTorch's shapes;
* :func:`from_jax`: such a dict back to refprune's ``params`` (exact: values are copied);
* :func:`jax_loss_function`, :func:`jax_hessian`: the loss of ``docs/conventions.md`` §2
  as a function of the flat ``theta``, and its Hessian by ``jax.hessian``.
"""

import numpy as np

from .. import nn
from ..checks import check_params, real_array, validate


def _jax():
    try:
        import jax
    except ImportError as err:
        raise ImportError("this bridge needs JAX: pip install jax jaxlib (or pip install 'refprune[jax]')") from err
    jax.config.update("jax_enable_x64", True)
    return jax


def param_names(model):
    """PyTorch state-dict names of the model's parameter arrays, in order."""
    names = []
    for i, layer in enumerate(model):
        if isinstance(layer, nn.AffineLayer):
            names.append(f"{i}.weight")
            if layer.bias:
                names.append(f"{i}.bias")
    return names


def _apply_layer(jax, layer, ps, x):
    jnp, lax = jax.numpy, jax.lax
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


def jax_apply(model):
    """The pure function ``apply(tree, x)`` of the network (see :func:`to_jax`)."""
    jax = _jax()

    def apply(tree, x):
        for i, layer in enumerate(model):
            ps = [tree[f"{i}.weight"]] + ([tree[f"{i}.bias"]] if layer.bias else []) \
                if isinstance(layer, nn.AffineLayer) else []
            x = _apply_layer(jax, layer, ps, x)
        return x

    return apply


def to_jax(model, params):
    """``(apply, tree)``: a pure ``apply(tree, x)`` and the parameters as a dict of
    ``jax.numpy`` arrays keyed ``"<layer index>.weight"`` / ``".bias"``."""
    jnp = _jax().numpy
    params = check_params(model, params)
    return jax_apply(model), {k: jnp.asarray(p) for k, p in zip(param_names(model), params)}


def from_jax(tree, model):
    """refprune ``params`` from a dict keyed as :func:`to_jax` makes it (any array type)."""
    if not isinstance(tree, dict):
        raise TypeError(f"from_jax: expected a dict of arrays keyed like {param_names(model)}, got "
                        f"{type(tree).__name__}")
    names = param_names(model)
    missing, extra = [k for k in names if k not in tree], [k for k in tree if k not in names]
    if missing or extra:
        raise ValueError(f"from_jax: keys do not match the model: missing {missing}, unexpected {extra}")
    return check_params(model, [_real(tree[k], k) for k in names])


def _real(value, name):
    """A float64 copy of ``value`` (:func:`refprune.checks.real_array`): complex, boolean
    and non-numeric entries are refused by name."""
    return real_array(value, f"from_jax: entry {name!r}", hint="; give a real pytree")


def jax_loss_function(model, X, y, loss):
    """``theta -> L(theta)`` (flat parameter vector, ``docs/conventions.md`` §2) written
    with ``jax.numpy`` from the model's layer descriptions, for ``jax.hessian``."""
    jax = _jax()
    jnp = jax.numpy
    inp = validate(model, model.init(), X, y, loss)  # complex or non-finite data is refused, never cast
    shapes = model.param_shapes()
    sizes = [int(np.prod(s)) for s in shapes]
    names = param_names(model)
    apply = jax_apply(model)
    Xj = jnp.asarray(inp.X)
    yj = jnp.asarray(inp.y)

    def L(theta):
        flat = jnp.split(theta, np.cumsum(sizes)[:-1])
        x = apply({k: t.reshape(s) for k, t, s in zip(names, flat, shapes)}, Xj)
        n, c = x.shape
        # the sum over samples and outputs, scaled as docs/conventions.md §2 says
        if isinstance(loss, nn.CrossEntropyLoss):
            total = -jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(x, axis=1), yj[:, None], axis=1))
        elif isinstance(loss, nn.BCEWithLogitsLoss):
            # -log sigmoid(x) = softplus(-x), -log(1 - sigmoid(x)) = softplus(x) (docs/derivations.md §3)
            total = jnp.sum(yj * jax.nn.softplus(-x) + (1.0 - yj) * jax.nn.softplus(x))
        else:
            total = jnp.sum((x - yj) ** 2)
        return loss.scale(n, c) * total

    return L


def jax_hessian(model, params, X, y, loss):
    """The Hessian by ``jax.jit(jax.hessian)`` over the flat parameter vector."""
    jax = _jax()
    params = check_params(model, params)  # complex parameters are refused, never cast
    L = jax_loss_function(model, X, y, loss)
    theta = np.concatenate([np.ravel(p) for p in params])
    return np.asarray(jax.jit(jax.hessian(L))(theta))
