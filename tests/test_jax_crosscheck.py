"""Optional comparison with JAX (``jax.hessian``); skips when jax is absent."""

import numpy as np
import pytest

pytest.importorskip("jax")

import refprune as rp  # noqa: E402
from refprune.bridges import jax_hessian  # noqa: E402
from refprune.testing import assert_close  # noqa: E402

from cases import CASES, IDS, make  # noqa: E402

pytestmark = pytest.mark.crosscheck


@pytest.mark.parametrize("arch,lossname", CASES, ids=IDS)
def test_hessian_against_jax(arch, lossname):
    model, params, X, y, loss = make(arch, lossname)
    H = jax_hessian(model, params, X, y, loss)
    assert_close(rp.hessian(model, params, X, y, loss), H, 1e-10, 1e-12 * max(1, np.abs(H).max()), "Hessian")
