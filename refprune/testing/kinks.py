"""Distance to the non-differentiable points of ReLU and max pooling.

Finite differences across a kink measure a one-sided mixture, not a derivative.  A test
that checks derivatives of a network with ``ReLU`` or ``MaxPool2d`` should require a
margin well above the largest change a finite-difference step can make (for a step
``h`` along ``v`` the pre-activations move by at most about ``2 h |J_z v|``).
"""

import numpy as np

from ..checks import check_params
from ..nn import MaxPool2d, ReLU


def kink_margin(model, params, X):
    """Smallest distance of the forward pass from a kink: ``min |z|`` over every ReLU
    input and the gap between the largest and second largest entry of every max-pool
    window; ``inf`` if the model has neither."""
    grouped = model.group_params(check_params(model, params))
    x = np.asarray(X, dtype=np.float64)
    margin = np.inf
    for layer, p in zip(model, grouped):
        if isinstance(layer, ReLU) and x.size:
            margin = min(margin, float(np.min(np.abs(x))))
        elif isinstance(layer, MaxPool2d):
            win = np.sort(layer._windows(x), axis=-1)
            if win.shape[-1] > 1 and win.size:
                margin = min(margin, float(np.min(win[..., -1] - win[..., -2])))
        x, _ = layer.forward(p, x)
    return margin
