"""Public testing kit: finite-difference checkers, a ``theta``-function view of a
loss, kink margins, the golden fixtures' loader and (in :mod:`refprune.testing.strategies`, needs hypothesis)
strategies that draw architectures, parameters and data."""

from .finite_differences import (
    CheckResult, assert_close, check_grad, check_hessian, check_hvp, check_jvp, check_vjp, default_step,
    directional_derivative,
)
from .fixtures import Fixture, compare_with_fixture, load_fixtures, loss_from_spec, model_from_spec
from .kinks import kink_margin
from .objective import Objective

__all__ = [
    "CheckResult", "directional_derivative", "default_step", "assert_close", "check_grad", "check_jvp",
    "check_vjp", "check_hvp", "check_hessian", "Objective", "kink_margin", "load_fixtures",
    "compare_with_fixture", "Fixture", "model_from_spec", "loss_from_spec",
]
