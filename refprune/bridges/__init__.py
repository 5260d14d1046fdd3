"""Bridges to PyTorch and JAX: models and parameters in and out, exact round trips.

Neither library is imported until a bridge is called; each says how to install it.
"""

from .jax_bridge import from_jax, jax_hessian, jax_loss_function, to_jax
from .torch_bridge import from_torch, to_torch, torch_hessian, torch_loss

__all__ = ["from_torch", "to_torch", "torch_loss", "torch_hessian", "to_jax", "from_jax", "jax_loss_function",
           "jax_hessian"]
