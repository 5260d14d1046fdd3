"""refprune: ground-truth second-order quantities for neural-network pruning.

Hand-derived gradients, Hessian-vector products, exact Hessians, GGN and Fisher
matrices for a small PyTorch-compatible network stack, in NumPy (float64).
Conventions: ``docs/conventions.md``; derivations: ``docs/derivations.md``.

The package holds no tests of its own: PYTEST_DONT_REWRITE keeps pytest, which loads
refprune's plugin (``refprune.testing.pytest_plugin``) at start-up, from rewriting its
modules' asserts, and from warning when refprune was imported before pytest started.
"""

# network stack
from .nn import (
    AvgPool2d, BCEWithLogitsLoss, Conv2d, CrossEntropyLoss, Flatten, Linear, MaxPool2d, MSELoss, ReLU,
    Sequential, Sigmoid, Softplus, Tanh,
)
# parameters
from .params import flatten_params, unflatten_params
# names of the curvature matrices
from .vocabulary import CURVATURES
# arrays refused before they are allocated
from .memory import ArrayTooLargeError
# first and second derivatives
from .derivatives import grad, hvp, loss, per_sample_grads
# curvature: exact matrices, diagonals, one operator interface, Kronecker approximations
from .curvature import (
    EKFAC, KFAC, BlockDiagonal, CurvatureOperator, CurvatureTooLargeError, Dense, Diagonal, ExactCurvature,
    IncompleteResultError, KroneckerBlock, block_diagonal, curvature_diagonal, ekfac, fisher, fisher_diagonal, ggn,
    ggn_diagonal, hessian, hessian_diagonal, kfac, load_matrix, obd_diagonal, residual,
)
# per-layer Kronecker blocks and the flat theta order, both ways
from .curvature.layout import block_layouts, blocks_to_flat, flat_to_blocks
# other libraries' K-FAC scalings
from .library_conventions import LIBRARIES, express_kfac
# bridges to PyTorch and JAX (imported on first call)
from .bridges import from_jax, from_torch, to_jax, to_torch
# the options of pruning, training and minimising, in one table
from . import options
# training and pruning
from . import optim
from .optim import DivergenceError
from .training import train
from .pruning import (
    OBS, OBSTrace, PruneResult, PruningWarning, SingularCurvatureError, obs_trace, prunable_mask, prune, remove_units,
    saliencies,
)
from .minimizer import minimize

__version__ = "0.1.0"

__all__ = [
    # network stack
    "Sequential", "Linear", "Conv2d", "ReLU", "Tanh", "Sigmoid", "Softplus", "AvgPool2d",
    "MaxPool2d", "Flatten", "CrossEntropyLoss", "MSELoss", "BCEWithLogitsLoss",
    # parameters
    "flatten_params", "unflatten_params",
    # names of the curvature matrices
    "CURVATURES",
    # first and second derivatives
    "loss", "grad", "per_sample_grads", "hvp",
    # exact curvature matrices
    "hessian", "ggn", "residual", "fisher", "CurvatureTooLargeError", "ArrayTooLargeError",
    # a matrix written to a store, read back only if complete and intact
    "load_matrix", "IncompleteResultError",
    # diagonal approximations
    "hessian_diagonal", "ggn_diagonal", "fisher_diagonal", "curvature_diagonal", "obd_diagonal",
    # one interface for every curvature matrix
    "CurvatureOperator", "ExactCurvature", "BlockDiagonal", "Diagonal", "Dense", "block_diagonal",
    # Kronecker-factored approximations
    "kfac", "KFAC", "KroneckerBlock", "ekfac", "EKFAC",
    # per-layer Kronecker blocks and the flat theta order
    "blocks_to_flat", "flat_to_blocks", "block_layouts",
    # other libraries' K-FAC scalings
    "express_kfac", "LIBRARIES",
    # bridges to PyTorch and JAX
    "from_torch", "to_torch", "to_jax", "from_jax",
    # the options table; training and pruning
    "options", "optim", "DivergenceError", "train", "minimize", "prune", "PruneResult", "PruningWarning",
    "obs_trace", "OBSTrace", "saliencies", "OBS", "SingularCurvatureError", "prunable_mask", "remove_units",
]
