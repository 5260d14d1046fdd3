"""refprune: ground-truth second-order quantities for neural-network pruning.

Hand-derived gradients, Hessian-vector products, exact Hessians, GGN and Fisher
matrices for a small PyTorch-compatible network stack, in NumPy (float64).
Conventions: ``CONVENTIONS.md`` of the project and ``docs/derivations.md``.
"""

# network stack
from .nn import (
    AvgPool2d, Conv2d, CrossEntropyLoss, Flatten, Linear, MaxPool2d, MSELoss, ReLU,
    Sequential, Sigmoid, Softplus, Tanh,
)
# parameters
from .params import flatten_params, unflatten_params
# first and second derivatives
from .derivatives import grad, hvp, loss, per_sample_grads
# exact curvature matrices
from .curvature import CurvatureTooLargeError, fisher, ggn, hessian, residual

__version__ = "0.1.0"

__all__ = [
    # network stack
    "Sequential", "Linear", "Conv2d", "ReLU", "Tanh", "Sigmoid", "Softplus", "AvgPool2d",
    "MaxPool2d", "Flatten", "CrossEntropyLoss", "MSELoss",
    # parameters
    "flatten_params", "unflatten_params",
    # first and second derivatives
    "loss", "grad", "per_sample_grads", "hvp",
    # exact curvature matrices
    "hessian", "ggn", "residual", "fisher", "CurvatureTooLargeError",
]
