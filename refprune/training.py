"""A small trainer: mini-batch steps of any :mod:`refprune.optim` optimizer, respecting
masks.

The default optimizer is SGD with momentum (PyTorch's ``torch.optim.SGD`` with
``dampening = 0``, ``nesterov = False``)::

    g = (grad + weight_decay * theta) * mask
    buf = momentum * buf + g
    theta = theta - lr * buf

With ``buf`` starting at zero, masked coordinates receive exactly zero updates, so
pruned weights that are zero stay exactly zero.  The batch order is drawn from
``numpy.random.default_rng(seed)``: the same seed gives bit-identical results.
"""

import sys
import time
import warnings

import numpy as np

from . import options
from .checks import validate
from .derivatives import loss as loss_value
from .optim import SGD, Optimizer
from .optim.base import DivergenceError, check_mask
from .params import flatten_params, unflatten_params


def train(model, params, X, y, loss, epochs=10, batch_size=32, lr=None, momentum=None, weight_decay=None,
          mask=None, seed=0, progress=False, optimizer=None, callback=None):
    """Train and return ``(params, history)``; ``history`` lists the full-batch loss after
    every epoch (and before the first, at index 0).

    Parameters
    ----------
    optimizer : refprune.optim.Optimizer, optional
        The update rule (reset before training starts); default
        ``SGD(lr=0.1, momentum=0.9, weight_decay=0)``, whose three settings ``lr``,
        ``momentum`` and ``weight_decay`` may be given here instead.
    mask : bool ``(n,)``, optional
        Trainable coordinates; the others keep their value (pruned weights: zero).
    callback : callable, optional
        ``callback(epoch, params, loss)`` after every epoch (``epoch`` from 1).
    """
    v = options.convert("train", dict(epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum,
                                      weight_decay=weight_decay, mask=mask, seed=seed, progress=progress,
                                      optimizer=optimizer, callback=callback))
    inp = validate(model, params, X, y, loss)
    epochs, batch_size, progress = v["epochs"], v["batch_size"], v["progress"]
    sgd = dict(lr=v["lr"], momentum=v["momentum"], weight_decay=v["weight_decay"])
    if optimizer is None:
        defaults = dict(lr=0.1, momentum=0.9, weight_decay=0.0)
        optimizer = SGD(**{k: defaults[k] if x is None else x for k, x in sgd.items()})
    elif not isinstance(optimizer, Optimizer):
        raise TypeError(f"train: optimizer must be a refprune.optim optimizer (SGD, NaturalGradient, KFAC, EKFAC), "
                        f"got {type(optimizer).__name__}")
    elif any(v is not None for v in sgd.values()):
        given = ", ".join(k for k, v in sgd.items() if v is not None)
        raise TypeError(f"train: {given} belong to the optimizer when one is given; set them on {optimizer.name}")
    theta = flatten_params([p for group in inp.grouped for p in group])
    free = check_mask(mask, theta.size, "train")
    X, y = inp.X, inp.y
    rng = np.random.default_rng(seed)
    optimizer.reset()
    history = [loss_value(model, params, X, y, loss)]
    for epoch in range(epochs):
        order = rng.permutation(len(X))
        start = time.perf_counter()
        # NumPy's overflow warnings of a diverging epoch belong to the error that reports it;
        # an epoch that ends normally issues them as usual
        with warnings.catch_warnings(record=True) as held:
            try:
                for batch_no, i in enumerate(range(0, len(X), batch_size), 1):
                    idx = order[i : i + batch_size]
                    batch = validate(model, unflatten_params(model, theta), X[idx], y[idx], loss)
                    theta = optimizer.step_flat(batch, theta, free)
                batch_no = None  # the epoch's loss from here on
                p = unflatten_params(model, theta)
                history.append(loss_value(model, p, X, y, loss))
            except DivergenceError as err:
                raise DivergenceError(f"train: epoch {epoch + 1}, batch {batch_no}: {err}") from None
            except FloatingPointError as err:
                # finite parameters so large that the forward pass overflows
                at = f"batch {batch_no}" if batch_no is not None else "computing the epoch's loss"
                raise DivergenceError(f"train: diverged in epoch {epoch + 1}, {at} ({err}); lower lr "
                                      f"(lr={optimizer.lr:g})") from None
        for w in held:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
        if progress:
            print(f"train: epoch {epoch + 1}/{epochs}  loss {history[-1]:.6f}  "
                  f"({time.perf_counter() - start:.2f} s)", file=sys.stderr)
        if callback is not None:
            callback(epoch + 1, p, history[-1])
    return unflatten_params(model, theta), history
