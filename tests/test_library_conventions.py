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
        rp.express_kfac(*args, "kfac-tensorflow")
    with pytest.raises(ValueError, match="asdl has one convention"):
        rp.express_kfac(*args, "asdl", approx="reduce")
    with pytest.raises(ValueError, match="kfac-pytorch has one convention; approx= applies to curvlinops and acktr"):
        rp.express_kfac(*args, "kfac-pytorch", approx="reduce")
    with pytest.raises(ValueError, match="acktr keeps the bias apart"):
        rp.express_kfac(*args, "acktr", bias="separate")
    with pytest.raises(ValueError, match="nngeometry's FIM is the true Fisher"):
        rp.express_kfac(*args, "nngeometry", curvature="empirical_fisher")


# ---- KFAC-Pytorch, EigenDamage-Pytorch and ACKTR: their factor computations re-implemented
# with torch hooks (F.unfold for the patches, the loss back-propagated by autograd), one
# batch; the lines they follow are cited in docs/conventions.md §8


def batch_averaged_factors(tm, lf, X, targets, split_bias=False, fast_cnn=False):
    """Per Linear/Conv2d module of ``tm``, the statistics those libraries store after
    back-propagating ``lf(tm(X), targets)``: KFAC-Pytorch's ``ComputeCovA``/``ComputeCovG``
    with ``batch_averaged=True`` (bias folded as a constant 1 appended to the inputs), or
    with ``split_bias`` ACKTR's ``compute_cov_a``/``compute_cov_g`` of the layer and of its
    ``AddBias`` (``fast_cnn`` averages the patches and sums the gradients over locations)."""
    F = torch.nn.functional
    mods = [m for m in tm.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    saved, out = {}, {}

    def save_input(m, inp):
        saved[m] = inp[0].detach()

    def save_grad(m, grad_in, grad_out):
        a, g = saved[m], grad_out[0].detach()
        n = a.shape[0]
        if isinstance(m, torch.nn.Conv2d):
            patches = F.unfold(a, m.kernel_size, padding=m.padding, stride=m.stride)  # (N, k, T)
            t = patches.shape[-1]
            g_loc = g.flatten(2)  # (N, c, T)
            if fast_cnn:
                a_rows, g_rows = patches.mean(-1), g_loc.sum(-1)
            else:
                a_rows = patches.transpose(1, 2).reshape(n * t, -1) / t
                g_rows = g_loc.transpose(1, 2).reshape(n * t, -1) * t
        else:
            a_rows, g_rows = a, g
        if m.bias is not None and not split_bias:
            ones = torch.ones(a_rows.shape[0], 1, dtype=a.dtype)
            a_rows = torch.cat([a_rows, ones / (t if isinstance(m, torch.nn.Conv2d) and not fast_cnn else 1)], 1)
        A = a_rows.T @ a_rows / n
        G = (g_rows * n).T @ (g_rows * n) / g_rows.shape[0]
        if not split_bias:
            out[m] = {"A": A, "G": G}
            return
        bias = None
        if m.bias is not None:
            gb = g.flatten(2).sum(-1) * n if g.dim() == 4 else g * n
            bias = {"A": torch.ones(1, 1, dtype=a.dtype), "G": gb.T @ gb / n}
        out[m] = {"weight": {"A": A, "G": G}, "bias": bias}

    hooks = [h for m in mods for h in (m.register_forward_pre_hook(save_input), m.register_full_backward_hook(save_grad))]
    try:
        lf(tm(torch.from_numpy(X).requires_grad_()), torch.from_numpy(np.asarray(targets))).backward()
    finally:
        for h in hooks:
            h.remove()
    return [out[m] for m in mods]


def observed_or_drawn(args, curvature, seed=5):
    """The targets the libraries back-propagate: the data's (``empirical_fisher``) or one
    draw (``mc_fisher``: the libraries sample from the model; the same draw is passed to
    refprune as ``targets=``)."""
    model, params, X, y, loss = args
    if curvature == "empirical_fisher":
        return y, {}
    rng = np.random.default_rng(seed)
    c = model.output_shape(X.shape[1:])[0]
    if isinstance(loss, rp.CrossEntropyLoss):
        t = rng.integers(0, c, len(X))
    elif isinstance(loss, rp.BCEWithLogitsLoss):
        t = rng.integers(0, 2, (len(X), c)).astype(float)  # a Bernoulli draw: 0/1 per output
    else:
        t = rng.standard_normal((len(X), c))
    return t, {"targets": t[None]}


def tensors_close(got, want, what):
    if want is None or got is None:
        assert got is None and want is None, what
        return
    for k in want:
        close(got[k], want[k].detach().numpy(), f"{what} {k}")


@pytest.mark.parametrize("library", ["kfac-pytorch", "eigendamage-pytorch"])
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("lossname", LOSSES)
@pytest.mark.parametrize("curvature", ["mc_fisher", "empirical_fisher"])
def test_kfac_pytorch_and_eigendamage_presets(library, arch, lossname, curvature):
    args, tm, lf = setup(arch, lossname)
    targets, kw = observed_or_drawn(args, curvature)
    ref = batch_averaged_factors(tm, lf, args[2], targets)
    got = rp.express_kfac(*args, library, curvature=curvature, **kw)
    assert len(got) == len(ref)
    for i, (g, r) in enumerate(zip(got, ref)):
        assert set(g) == {"A", "G"}
        tensors_close(g, r, f"{library} layer {i}")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("lossname", LOSSES)
@pytest.mark.parametrize("curvature", ["mc_fisher", "empirical_fisher"])
@pytest.mark.parametrize("approx", ["expand", "reduce"])
def test_acktr_preset(arch, lossname, curvature, approx):
    args, tm, lf = setup(arch, lossname)
    targets, kw = observed_or_drawn(args, curvature)
    ref = batch_averaged_factors(tm, lf, args[2], targets, split_bias=True, fast_cnn=approx == "reduce")
    got = rp.express_kfac(*args, "acktr", curvature=curvature, approx=approx, **kw)
    assert len(got) == len(ref)
    for i, (g, r) in enumerate(zip(got, ref)):
        tensors_close(g["weight"], r["weight"], f"acktr layer {i} weight")
        tensors_close(g["bias"], r["bias"], f"acktr layer {i} bias")


def test_batch_averaged_presets_differ_from_refprune_by_n_r_and_t():
    """On a sum loss the N of the assumed mean remains: the conv factor G is N T times
    refprune's S, A is refprune's A over T (a check that the presets are not refprune's
    factors under another name)."""
    args, _, _ = setup("conv-tanh-avgpool", "ce-sum")
    n, T = len(args[2]), 16
    blocks = rp.kfac(*args).blocks
    got = rp.express_kfac(*args, "kfac-pytorch")
    close(got[0]["G"], n * T * blocks[0].S, "G = N T S")
    close(got[0]["A"], blocks[0].A / T, "A = A / T")
