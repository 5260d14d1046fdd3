"""Distance to the non-differentiable points of ReLU and max pooling.

Finite differences across a kink measure a one-sided mixture, not a derivative.  A test
that checks derivatives of a network with ``ReLU`` or ``MaxPool2d`` should require a
margin well above the largest change a finite-difference step can make (for a step
``h`` along ``v`` the pre-activations move by at most about ``2 h |J_z v|``).

A max-pool window whose largest entries tie *at zero right after a ReLU* is harmless:
those entries come from negative pre-activations, have zero derivative, and stay zero
under any step smaller than the ReLU margin, so such windows are not counted (the ReLU
margin covers them).  ``explain=True`` says where the margin comes from.
"""

import numpy as np

from ..checks import check_array, check_flag, check_params
from ..nn import MaxPool2d, ReLU


def kink_margin(model, params, X, explain=False):
    """Smallest distance of the forward pass from a kink: ``min |z|`` over every ReLU
    input and the gap between the largest and second largest entry of every max-pool
    window (windows tied at the zeros of a preceding ReLU excepted, module docstring);
    ``inf`` if the model has neither.  ``explain=True`` returns ``(margin, sentence)``."""
    check_flag(explain, "kink_margin: explain")
    grouped = model.group_params(check_params(model, params))
    x = check_array(X, "kink_margin: X")
    if x.ndim < 2:
        raise ValueError(f"kink_margin: X must have shape (N, ...), got {x.shape}")
    try:
        model.output_shape(x.shape[1:])
    except ValueError as err:
        raise ValueError(f"kink_margin: X of shape {x.shape} does not fit the model: {err}") from None
    margin, where = np.inf, "no ReLU or max pooling: no kinks"
    after_relu = False
    for j, (layer, p) in enumerate(zip(model, grouped)):
        if isinstance(layer, ReLU) and x.size:
            m = float(np.min(np.abs(x)))
            if m < margin:
                margin, where = m, f"layer {j} (ReLU): smallest |input| {m:.3e}"
        elif isinstance(layer, MaxPool2d):
            win = np.sort(layer._windows(x))  # along the last axis, each window's values
            if win.shape[-1] > 1 and win.size:
                gap = win[..., -1] - win[..., -2]
                harmless = (win[..., -1] == 0.0) if after_relu else np.zeros(gap.shape, dtype=bool)
                live = gap[~harmless]
                if live.size and float(live.min()) < margin:
                    margin = float(live.min())
                    where = f"layer {j} (MaxPool2d): smallest gap between a window's two largest entries {margin:.3e}"
                if harmless.any():
                    where += (f"; {int(harmless.sum())} max-pool window(s) tied at the zeros of the preceding ReLU "
                              "are harmless (zero derivative) and not counted")
        if not isinstance(layer, MaxPool2d):
            after_relu = isinstance(layer, ReLU)
        x, _ = layer.forward(p, x)
    return (margin, where) if explain else margin
