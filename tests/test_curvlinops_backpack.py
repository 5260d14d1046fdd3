"""Optional comparisons with curvlinops (K-FAC, EKFAC, GGN) and BackPACK (DiagHessian,
DiagGGN); each skips when the library is absent.

Conventions: curvlinops with ``separate_weight_and_bias=False`` folds the bias as
refprune does, scales conv K-FAC as the KFC paper (expand: ``A`` averaged over ``N T``)
and uses ``Lambda = 2I`` for MSE, so no rescaling is needed.  BackPACK's diagonals use
PyTorch's loss scaling, also ours.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import refprune as rp  # noqa: E402
from refprune.bridges import to_torch  # noqa: E402
from refprune.testing import assert_close  # noqa: E402

from cases import make  # noqa: E402

pytestmark = pytest.mark.crosscheck

ARCHS = ["mlp-tanh", "mlp-sigmoid-softplus", "conv-tanh-avgpool", "conv-relu-maxpool-stride"]
LOSSES = ["ce-mean", "mse-mean", "mse-sum"]
# curvlinops has BCEWithLogitsLoss for any number of outputs; BackPACK 1.7 for one output only
# (tests/test_bce.py compares that)
CURVLINOPS_LOSSES = LOSSES + ["bce-mean", "bce-sum"]


def torch_setup(model, params, X, y, loss):
    tm, tp = to_torch(model, params)
    cls = getattr(torch.nn, type(loss).__name__)  # refprune's losses carry torch's names
    return tm, tp, cls(reduction=loss.reduction), [(torch.from_numpy(X), torch.from_numpy(np.asarray(y)))]


def dense(op, n):
    return (op @ torch.eye(n, dtype=torch.float64)).detach().numpy()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("lossname", CURVLINOPS_LOSSES)
def test_against_curvlinops(arch, lossname):
    curvlinops = pytest.importorskip("curvlinops")
    model, params, X, y, loss = make(arch, lossname, n=4)
    tm, tp, lf, data = torch_setup(model, params, X, y, loss)
    n = model.n_params
    kw = dict(separate_weight_and_bias=False, check_deterministic=False)
    G = dense(curvlinops.GGNLinearOperator(tm, lf, tp, data, check_deterministic=False), n)
    assert_close(rp.ggn(model, params, X, y, loss), G, 1e-10, 1e-12, "GGN")
    for approx in ("expand", "reduce"):
        K = dense(curvlinops.KFACLinearOperator(tm, lf, tp, data, fisher_type="type-2", kfac_approx=approx, **kw), n)
        assert_close(rp.kfac(model, params, X, y, loss, approx=approx).to_dense(), K, 1e-10, 1e-12,
                     f"K-FAC type-2 {approx}")
    E = dense(curvlinops.EKFACLinearOperator(tm, lf, tp, data, fisher_type="type-2", **kw), n)
    assert_close(rp.ekfac(model, params, X, y, loss).to_dense(), E, 1e-10, 1e-12, "EKFAC type-2")
    K = dense(curvlinops.KFACLinearOperator(tm, lf, tp, data, fisher_type="empirical", **kw), n)
    assert_close(rp.kfac(model, params, X, y, loss, curvature="empirical_fisher").to_dense(), K, 1e-10, 1e-12,
                 "K-FAC empirical")


# BackPACK 1.7 has no DiagHessian rule for Softplus, and its AvgPool2d derivative builds
# a float32 tensor that clashes with float64 input; the cases below avoid both.
BACKPACK_ARCHS = ["mlp-tanh", "mlp-relu", "conv-relu-maxpool-stride"]


@pytest.mark.parametrize("arch", BACKPACK_ARCHS)
@pytest.mark.parametrize("lossname", LOSSES)
def test_against_backpack_diagonals(arch, lossname):
    backpack = pytest.importorskip("backpack")
    from backpack.extensions import DiagGGNExact, DiagHessian

    model, params, X, y, loss = make(arch, lossname, n=4)
    tm, tp, lf, data = torch_setup(model, params, X, y, loss)
    tm, lf = backpack.extend(tm), backpack.extend(lf)
    out = lf(tm(data[0][0]), data[0][1])
    with backpack.backpack(DiagHessian(), DiagGGNExact()):
        out.backward()
    diag_h = np.concatenate([p.diag_h.detach().numpy().ravel() for p in tp])
    diag_ggn = np.concatenate([p.diag_ggn_exact.detach().numpy().ravel() for p in tp])
    assert_close(rp.hessian_diagonal(model, params, X, y, loss), diag_h, 1e-10, 1e-12, "DiagHessian")
    assert_close(rp.ggn_diagonal(model, params, X, y, loss), diag_ggn, 1e-10, 1e-12, "DiagGGNExact")
