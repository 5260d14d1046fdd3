"""``express_kfac`` against the libraries themselves: each library's K-FAC factors equal
refprune's converted by the documented relation (docs/conventions.md §8).  Skips per
library when it is absent."""

import contextlib

import numpy as np
import pytest

import refprune as rp
from refprune.testing import assert_close

from cases import make

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.crosscheck

ARCHS = ["mlp-sigmoid-softplus", "conv-tanh-avgpool", "conv-relu-maxpool-stride"]
LOSSES = ["ce-mean", "ce-sum", "mse-mean", "mse-sum", "bce-mean", "bce-sum"]
# BackPACK 1.7 has BCEWithLogitsLoss for one output only: tests/test_bce.py compares it there
BACKPACK_LOSSES = LOSSES[:4]
#: nngeometry's FIM variant of each loss
NNG_VARIANT = {"ce": "classif_logits", "mse": "regression", "bce": "classif_binary_logits"}


@contextlib.contextmanager
def float64_default():
    # nngeometry regularises with torch.finfo().eps of the *default* dtype (see
    # docs/conventions.md §8); float64 makes that term negligible
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def setup(arch, lossname, n=4):
    model, params, X, y, loss = make(arch, lossname, n=n)
    tm, _ = rp.to_torch(model, params)
    cls = getattr(torch.nn, type(loss).__name__)  # refprune's losses carry torch's names
    return (model, params, X, y, loss), tm, cls(reduction=loss.reduction)


def close(a, b, what):
    a, b = np.asarray(a), np.asarray(b)
    assert_close(a, b, 1e-10, 1e-12 * max(1.0, np.abs(b).max()), what)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("lossname", LOSSES)
def test_curvlinops(arch, lossname):
    curvlinops = pytest.importorskip("curvlinops")
    args, tm, lf = setup(arch, lossname)
    data = [(torch.from_numpy(args[2]), torch.from_numpy(np.asarray(args[3])))]
    for approx in ("expand", "reduce"):
        for sep, bias in ((True, "separate"), (False, "fold")):
            op = curvlinops.KFACLinearOperator(tm, lf, list(tm.parameters()), data, fisher_type="type-2", kfac_approx=approx,
                                               separate_weight_and_bias=sep, check_deterministic=False)
            op.compute_kronecker_factors()
            ours = rp.express_kfac(*args, "curvlinops", approx=approx, bias=bias)
            names = [n for n, m in tm.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
            for name, f in zip(names, ours):
                close(f["gradient_covariance"], op._gradient_covariances[name].numpy(), f"{name} S {approx} {bias}")
                close(f["input_covariance"], op._input_covariances[name].numpy(), f"{name} A {approx} {bias}")


# BackPACK 1.7 has no second-order rule for Softplus, and its AvgPool2d derivative builds a
# float32 tensor that clashes with float64 input
BACKPACK_ARCHS = ["mlp-tanh", "mlp-relu", "conv-relu-maxpool-stride"]


@pytest.mark.parametrize("arch", BACKPACK_ARCHS)
@pytest.mark.parametrize("lossname", BACKPACK_LOSSES)
def test_backpack_kflr(arch, lossname):
    backpack = pytest.importorskip("backpack")
    from backpack.extensions import KFLR

    args, tm, lf = setup(arch, lossname)
    tm, lf = backpack.extend(tm), backpack.extend(lf)
    out = lf(tm(torch.from_numpy(args[2])), torch.from_numpy(np.asarray(args[3])))
    with backpack.backpack(KFLR()):
        out.backward()
    mods = [m for m in tm.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    for m, f in zip(mods, rp.express_kfac(*args, "backpack")):
        for a, b in zip(f["weight"], m.weight.kflr):
            close(a, b.detach().numpy(), f"{m} weight.kflr")
        if m.bias is not None:
            close(f["bias"][0], m.bias.kflr[0].detach().numpy(), f"{m} bias.kflr")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("lossname", LOSSES)
def test_nngeometry_fim_kfac(arch, lossname):
    pytest.importorskip("nngeometry")
    from nngeometry.metrics import FIM
    from nngeometry.object import PMatKFAC
    from torch.utils.data import DataLoader, TensorDataset

    args, tm, _ = setup(arch, lossname)
    X, y = args[2], args[3]
    loader = DataLoader(TensorDataset(torch.from_numpy(X), torch.from_numpy(np.asarray(y))), batch_size=len(X))
    variant = NNG_VARIANT[lossname.split("-")[0]]
    with float64_default():
        F = FIM(model=tm, loader=loader, representation=PMatKFAC, variant=variant)
    for (lid, (A, G)), f in zip(F.data.items(), rp.express_kfac(*args, "nngeometry")):
        close(f["A"], A.numpy(), f"layer {lid} A")
        close(f["G"], G.numpy(), f"layer {lid} G")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("lossname", LOSSES)
@pytest.mark.parametrize("curvature, fisher_type", [("fisher", "fisher_exact"), ("empirical_fisher", "fisher_emp")])
def test_asdl_kron(arch, lossname, curvature, fisher_type):
    asdl = pytest.importorskip("asdl")
    args, tm, lf = setup(arch, lossname)
    X, y = args[2], args[3]
    loss_type = {"ce": "cross_entropy", "mse": "mse", "bce": "bce"}[lossname.split("-")[0]]
    cfg = asdl.FisherConfig(fisher_type=fisher_type, fisher_shapes=["kron"], data_size=len(X), loss_type=loss_type)
    if lossname.startswith("bce") and fisher_type != "fisher_emp":
        # ASDL has no binary cross-entropy outside its empirical Fisher; refprune says so by name
        with pytest.raises(ValueError, match="Invalid loss_type"):
            asdl.get_fisher_maker(tm, cfg)
        with pytest.raises(ValueError, match="ASDL's fisher_exact and fisher_mc support loss_type"):
            rp.express_kfac(*args, "asdl", curvature=curvature)
        return
    fm = asdl.get_fisher_maker(tm, cfg)
    dummy = fm.setup_model_call(tm, torch.from_numpy(X))
    fm.setup_loss_call(lf, dummy, torch.from_numpy(np.asarray(y)))
    fm.forward_and_backward()
    mods = [m for m in tm.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    for m, f in zip(mods, rp.express_kfac(*args, "asdl", curvature=curvature)):
        close(f["A"], m.fisher.kron.A.numpy(), f"{m} A")
        close(f["B"], m.fisher.kron.B.numpy(), f"{m} B")


def test_express_kfac_refuses_bad_options():
    args = make("mlp-tanh", "ce-mean", n=3)
    with pytest.raises(ValueError, match="library must be one of"):
        rp.express_kfac(*args, "kfac-pytorch")
    with pytest.raises(ValueError, match="asdl has one convention"):
        rp.express_kfac(*args, "asdl", approx="reduce")
    with pytest.raises(ValueError, match="nngeometry's FIM is the true Fisher"):
        rp.express_kfac(*args, "nngeometry", curvature="empirical_fisher")
