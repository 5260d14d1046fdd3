"""A small trainer: mini-batch SGD with momentum and weight decay, respecting masks.

Update (PyTorch's ``torch.optim.SGD`` with ``dampening = 0``, ``nesterov = False``)::

    g = (grad + weight_decay * theta) * mask
    buf = momentum * buf + g
    theta = theta - lr * buf

With ``buf`` starting at zero, masked coordinates receive exactly zero updates, so
pruned weights that are zero stay exactly zero.  The batch order is drawn from
``numpy.random.default_rng(seed)``: the same seed gives bit-identical results.
"""

import sys

import numpy as np

from .checks import check_number, validate
from .derivatives import grad, loss as loss_value
from .params import flatten_params, unflatten_params


def train(model, params, X, y, loss, epochs=10, batch_size=32, lr=0.1, momentum=0.9, weight_decay=0.0,
          mask=None, seed=0, progress=False):
    """Train and return ``(params, history)``; ``history`` lists the full-batch loss after
    every epoch (and before the first, at index 0).

    ``mask`` (bool ``(n,)``) marks trainable coordinates; the others keep their value
    (pruned weights: zero).
    """
    inp = validate(model, params, X, y, loss)
    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < (0 if name == "epochs" else 1):
            raise ValueError(f"train: {name} must be a {'non-negative' if name == 'epochs' else 'positive'} int, got {v!r}")
    for name, v in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
        check_number(v, f"train: {name}")
    theta = flatten_params([p for group in inp.grouped for p in group])
    m = np.ones(theta.size) if mask is None else np.asarray(mask, dtype=bool).astype(np.float64)
    if m.shape != theta.shape:
        raise ValueError(f"train: mask must have shape {theta.shape}, got {m.shape}")
    X, y = inp.X, inp.y
    rng = np.random.default_rng(seed)
    buf = np.zeros_like(theta)
    history = [loss_value(model, params, X, y, loss)]
    for epoch in range(epochs):
        order = rng.permutation(len(X))
        for i in range(0, len(X), batch_size):
            idx = order[i : i + batch_size]
            try:
                g = grad(model, unflatten_params(model, theta), X[idx], y[idx], loss)
            except FloatingPointError as err:
                raise FloatingPointError(f"train: diverged in epoch {epoch + 1} ({err}); lower lr") from None
            g = (g + weight_decay * theta) * m
            buf = momentum * buf + g
            theta = theta - lr * buf
        p = unflatten_params(model, theta)
        try:
            history.append(loss_value(model, p, X, y, loss))
        except FloatingPointError as err:
            raise FloatingPointError(f"train: diverged in epoch {epoch + 1} ({err}); lower lr") from None
        if not np.isfinite(history[-1]):
            raise FloatingPointError(f"train: loss became {history[-1]} in epoch {epoch + 1}; lower lr")
        if progress:
            print(f"train: epoch {epoch + 1}/{epochs}  loss {history[-1]:.6f}", file=sys.stderr)
    return unflatten_params(model, theta), history
