"""Optional comparison with JAX (``jax.hessian``); skips when jax is absent."""

import numpy as np
import pytest

pytest.importorskip("jax")

import refprune as rp  # noqa: E402
from refprune.bridges import jax_hessian  # noqa: E402
from refprune.testing import assert_close  # noqa: E402

from cases import CASES, make  # noqa: E402

pytestmark = pytest.mark.crosscheck


# each case jit-compiles a Hessian (about 2 s): binary cross-entropy with "mean" only, since
# "sum" differs by the constant R alone and tests/test_torch_crosscheck.py covers both
JAX_CASES = [(a, l) for a, l in CASES if l != "bce-sum"]


@pytest.mark.parametrize("arch,lossname", JAX_CASES, ids=[f"{a}/{l}" for a, l in JAX_CASES])
def test_hessian_against_jax(arch, lossname):
    model, params, X, y, loss = make(arch, lossname)
    H = jax_hessian(model, params, X, y, loss)
    assert_close(rp.hessian(model, params, X, y, loss), H, 1e-10, 1e-12 * max(1, np.abs(H).max()), "Hessian")
