"""Optional comparison with PyTorch (``torch.func``); skips when torch is absent."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import refprune as rp  # noqa: E402
from refprune.bridges import to_torch, torch_hessian, torch_loss  # noqa: E402
from refprune.testing import assert_close  # noqa: E402

from cases import CASES, IDS, make  # noqa: E402

pytestmark = pytest.mark.crosscheck


@pytest.mark.parametrize("arch,lossname", CASES, ids=IDS)
def test_against_torch(arch, lossname):
    model, params, X, y, loss = make(arch, lossname)
    tmodel, tparams = to_torch(model, params)
    # parameter layout: parameters_to_vector equals flatten_params
    assert_close(torch.nn.utils.parameters_to_vector(tparams).detach().numpy(), rp.flatten_params(params), 0, 0,
                 "parameters_to_vector")
    Xt = torch.from_numpy(X)
    out = tmodel(Xt)
    assert_close(model(params, X), out.detach().numpy(), 1e-13, 1e-13, "network output")
    value = torch_loss(loss)(out, torch.from_numpy(np.asarray(y)))
    assert_close(rp.loss(model, params, X, y, loss), value.item(), 1e-13, 1e-15, "loss")
    g = torch.autograd.grad(value, tparams)
    assert_close(rp.grad(model, params, X, y, loss), np.concatenate([t.numpy().ravel() for t in g]), 1e-11,
                 1e-13, "gradient")
    H = torch_hessian(model, params, X, y, loss)
    assert_close(rp.hessian(model, params, X, y, loss), H, 1e-10, 1e-12 * max(1, np.abs(H).max()), "Hessian")
