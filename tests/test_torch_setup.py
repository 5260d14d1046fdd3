"""From a torch training setup: ``from_torch(..., loss=)`` converts the criterion, leaves
out the modules that are the identity (``Identity``, evaluation-mode ``Dropout``), unwraps
``torch.compile`` and names layers as torch does; and the README's K-FAC check of a user's
own CNN runs in the few lines it shows.  Every conversion is compared with torch computing
the same thing (its forward pass, its loss, autograd)."""

import os
import re
from collections import OrderedDict

import numpy as np
import pytest

import refprune as rp
from refprune import conformance as cf
from refprune.testing import assert_close

torch = pytest.importorskip("torch")
tnn = torch.nn

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")


def cnn(dropout=tnn.Dropout):
    """A small CNN with the modules a training script has: dropout, an Identity, nesting."""
    torch.manual_seed(0)
    return tnn.Sequential(tnn.Conv2d(1, 3, 3, padding=1), tnn.ReLU(), dropout(0.25), tnn.MaxPool2d(2),
                          tnn.Sequential(tnn.Flatten(), tnn.Identity(), tnn.Linear(3 * 3 * 3, 8)), tnn.Tanh(),
                          tnn.Dropout(0.5), tnn.Linear(8, 4)).double()


def data(n=5, classes=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 6, 6, dtype=torch.float64, generator=g), torch.randint(0, classes, (n,), generator=g)


# ---------------------------------------------------------------- the loss


@pytest.mark.parametrize("cls, reduction", [(tnn.CrossEntropyLoss, "mean"), (tnn.CrossEntropyLoss, "sum"),
                                            (tnn.MSELoss, "mean"), (tnn.MSELoss, "sum")])
def test_loss_converts_with_its_reduction(cls, reduction):
    net = cnn().eval()
    X, y = data()
    if cls is tnn.MSELoss:
        y = torch.randn(len(X), 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    lossfn = cls(reduction=reduction)
    model, params, loss = rp.from_torch(net, loss=lossfn)
    assert type(loss).__name__ == cls.__name__ and loss.reduction == reduction
    want = lossfn(net(X), y).item()
    assert abs(rp.loss(model, params, X.numpy(), y.numpy(), loss) - want) <= 1e-13 * abs(want)
    # and the gradient, by autograd, in parameters_to_vector's order
    net.zero_grad()
    lossfn(net(X), y).backward()
    g = torch.nn.utils.parameters_to_vector([p.grad for p in net.parameters()]).numpy()
    assert_close(rp.grad(model, params, X.numpy(), y.numpy(), loss), g, 1e-12, 1e-14, "grad")


def test_bce_with_logits_converts_where_refprune_has_it():
    net = tnn.Sequential(tnn.Linear(2, 3), tnn.Tanh(), tnn.Linear(3, 1)).double()
    if not hasattr(rp.nn, "BCEWithLogitsLoss"):
        with pytest.raises(TypeError, match="from_torch: loss BCEWithLogitsLoss: this refprune has no "
                                            "BCEWithLogitsLoss"):
            rp.from_torch(net, loss=tnn.BCEWithLogitsLoss())
        return
    X = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 0.0], dtype=torch.float64)[:, None]
    for reduction in ("mean", "sum"):
        lossfn = tnn.BCEWithLogitsLoss(reduction=reduction)
        model, params, loss = rp.from_torch(net, loss=lossfn)
        want = lossfn(net(X), y).item()
        assert abs(rp.loss(model, params, X.numpy(), y.numpy(), loss) - want) <= 1e-13 * abs(want)


def test_a_refprune_loss_passes_through_and_the_network_is_unchanged():
    net = cnn().eval()
    loss = rp.CrossEntropyLoss("sum")
    model, params, same = rp.from_torch(net, loss=loss)
    assert same is loss
    m2, p2 = rp.from_torch(net)
    assert repr(m2) == repr(model) and all(np.array_equal(a, b) for a, b in zip(params, p2))


@pytest.mark.parametrize("lossfn, words", [
    (lambda: tnn.CrossEntropyLoss(weight=torch.ones(4)), "loss CrossEntropyLoss: weight= is not implemented"),
    (lambda: tnn.CrossEntropyLoss(ignore_index=2), "ignore_index=2 is not implemented"),
    (lambda: tnn.CrossEntropyLoss(label_smoothing=0.1), "label_smoothing=0.1 is not implemented"),
    (lambda: tnn.CrossEntropyLoss(reduction="none"), "reduction='none' is not implemented"),
    (lambda: tnn.MSELoss(reduction="none"), "loss MSELoss: reduction='none'"),
    (lambda: tnn.BCEWithLogitsLoss(pos_weight=torch.ones(1)), "pos_weight= is not implemented"),
    (lambda: tnn.BCEWithLogitsLoss(weight=torch.ones(1)), "loss BCEWithLogitsLoss: weight="),
])
def test_loss_options_refused_by_name(lossfn, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        rp.from_torch(cnn().eval(), loss=lossfn())


@pytest.mark.parametrize("lossfn, words", [
    (lambda: tnn.NLLLoss(), "got torch.nn.modules.loss.NLLLoss; for log_softmax followed by NLLLoss"),
    (lambda: tnn.BCELoss(), "for sigmoid followed by BCELoss, end the network with the logits"),
    (lambda: tnn.L1Loss(), "got torch.nn.modules.loss.L1Loss"),
    (lambda: tnn.MSELoss, "got the class torch.nn.modules.loss.MSELoss: pass an instance, MSELoss()"),
    (lambda: "cross_entropy", "got a str"),
    (lambda: type("MyCE", (tnn.CrossEntropyLoss,), {})(), "torch.nn's classes exactly"),
])
def test_other_losses_refused_by_name(lossfn, words):
    with pytest.raises(TypeError, match=re.escape(words)):
        rp.from_torch(cnn().eval(), loss=lossfn())


def test_ignore_index_that_never_matches_a_label_is_accepted():
    _, _, loss = rp.from_torch(cnn().eval(), loss=tnn.CrossEntropyLoss(ignore_index=-1))
    assert isinstance(loss, rp.CrossEntropyLoss)


# ---------------------------------------------------------------- identity modules, compile, names


@pytest.mark.parametrize("dropout", [tnn.Dropout, tnn.Dropout1d, tnn.Dropout2d, tnn.AlphaDropout])
def test_evaluation_mode_dropout_and_identity_are_left_out(dropout):
    net = cnn(dropout).eval()
    X, _ = data()
    if dropout is tnn.Dropout1d:  # Dropout1d wants (N, C, L) input: put it after the Flatten
        net[2] = tnn.Identity()
        net[4].insert(1, dropout(0.3).eval())
    model, params = rp.from_torch(net)
    assert [type(layer).__name__ for layer in model] == ["Conv2d", "ReLU", "MaxPool2d", "Flatten", "Linear", "Tanh",
                                                         "Linear"]
    assert_close(rp.flatten_params(params), torch.nn.utils.parameters_to_vector(net.parameters()).detach().numpy(),
                 0, 0, "theta")
    assert_close(model(params, X.numpy()), net(X).detach().numpy(), 1e-13, 1e-13, "output")


def test_training_mode_dropout_refused_with_its_torch_name():
    net = cnn()  # a new module is in training mode
    with pytest.raises(ValueError, match=re.escape("from_torch: layer 2 (Dropout(p=0.25, inplace=False)): Dropout in "
                                                   "training mode is not modelled by refprune (it zeroes random")):
        rp.from_torch(net)
    net.eval()
    net[6].train()  # only the second dropout, "6", left in training mode
    with pytest.raises(ValueError, match="from_torch: layer 6 "):
        rp.from_torch(net)
    net[6].p = 0.0  # p = 0 is the identity in either mode
    rp.from_torch(net)


def test_compiled_networks_are_unwrapped():
    net = cnn().eval()
    X, _ = data()
    ref_model, ref_params = rp.from_torch(net)
    compiled = torch.compile(net)
    assert type(compiled).__name__ == "OptimizedModule"
    model, params = rp.from_torch(compiled)
    assert repr(model) == repr(ref_model) and all(np.array_equal(a, b) for a, b in zip(params, ref_params))
    # its state dict (keys "_orig_mod.0.weight") and its original's are both read with model=compiled
    for sd in (compiled.state_dict(), net.state_dict()):
        _, p2 = rp.from_torch(sd, model=compiled)
        assert all(np.array_equal(a, b) for a, b in zip(p2, ref_params))
    # a compiled block inside a Sequential: torch names its parameters "0._orig_mod.0.weight"
    inner = tnn.Sequential(tnn.Linear(3, 4), tnn.Tanh())
    outer = tnn.Sequential(torch.compile(inner), tnn.Linear(4, 2)).double()
    model, params = rp.from_torch(outer)
    Z = torch.randn(3, 3, dtype=torch.float64)
    assert_close(model(params, Z.numpy()), outer[1](inner(Z)).detach().numpy(), 1e-13, 1e-13, "output")
    sd = outer.state_dict()
    assert "0._orig_mod.0.weight" in sd
    _, p2 = rp.from_torch(sd, model=outer)
    assert all(np.array_equal(a, b) for a, b in zip(p2, params))
    sd.pop("0._orig_mod.0.bias")
    with pytest.raises(ValueError, match=re.escape("missing '0._orig_mod.0.bias' (layer 0._orig_mod.0 Linear(3, 4")):
        rp.from_torch(sd, model=outer)


def test_every_error_names_torchs_dotted_module_name():
    """Nested and named modules: the name in ``named_modules()``, never refprune's flat index."""
    bad = {
        "1.1": tnn.Sequential(tnn.Linear(2, 2), tnn.Sequential(tnn.Tanh(), tnn.GELU())),
        "block.conv": tnn.Sequential(OrderedDict(block=tnn.Sequential(OrderedDict(
            act=tnn.ReLU(), conv=tnn.Conv2d(1, 1, 3, dilation=2))))),
        "0.1": tnn.Sequential(tnn.Sequential(tnn.Identity(), tnn.BatchNorm1d(2))),
        "2.pool": tnn.Sequential(tnn.Identity(), tnn.Dropout(0.0), tnn.Sequential(OrderedDict(pool=tnn.MaxPool2d(2, 1)))),
        "3.0": tnn.Sequential(tnn.Conv2d(1, 1, 2), tnn.ReLU(), tnn.Identity(), tnn.Sequential(tnn.Softplus(beta=2))),
    }
    for name, net in bad.items():
        with pytest.raises(ValueError) as err:
            rp.from_torch(net.eval())
        assert f"from_torch: layer {name} (" in str(err.value), str(err.value)
    shared = tnn.Linear(2, 2)
    with pytest.raises(ValueError, match=re.escape("layer 1.1 (Linear(in_features=2, out_features=2, bias=True)) is "
                                                   "the same module as layer 0")):
        rp.from_torch(tnn.Sequential(shared, tnn.Sequential(tnn.Tanh(), shared)))
    # a state dict: the layer is named as torch names it, here after a left-out Dropout
    net = tnn.Sequential(tnn.Linear(3, 4), tnn.Dropout(0.1), tnn.Sequential(tnn.Tanh(), tnn.Linear(4, 2))).eval()
    sd = net.state_dict()
    sd["2.1.weight"] = sd["2.1.weight"].T
    with pytest.raises(ValueError, match=re.escape("'2.1.weight' has shape (4, 2), layer 2.1 Linear(4, 2, bias=True) "
                                                   "expects (2, 4)")):
        rp.from_torch(sd, model=net)


def test_a_network_of_identities_only_is_refused():
    with pytest.raises(ValueError, match="the network has no layer refprune models"):
        rp.from_torch(tnn.Sequential(tnn.Identity(), tnn.Dropout(0.5).eval()))


# ---------------------------------------------------------------- the README's K-FAC check


def my_kfac(net, lossfn, X, y, times_n=True):
    """A PyTorch user's own K-FAC of the empirical Fisher, as such code is written: hooks
    on every Linear/Conv2d, input patches by ``F.unfold``, the bias folded as a constant 1,
    and the gradients of the mean loss multiplied by ``N``.  ``[(G, A)]`` per layer, as
    torch tensors.  (``times_n=False`` plants a bug: the mean loss's gradients kept.)"""
    mods = [m for m in net.modules() if isinstance(m, (tnn.Linear, tnn.Conv2d))]
    acts, grads = {}, {}
    hooks = [m.register_forward_pre_hook(lambda m, i: acts.__setitem__(m, i[0].detach())) for m in mods]
    hooks += [m.register_full_backward_hook(lambda m, gi, go: grads.__setitem__(m, go[0].detach())) for m in mods]
    lossfn(net(X.clone().requires_grad_()), y).backward()
    for h in hooks:
        h.remove()
    out = []
    for m in mods:
        a, g, n = acts[m], grads[m], len(X)
        if isinstance(m, tnn.Conv2d):
            a = torch.nn.functional.unfold(a, m.kernel_size, padding=m.padding, stride=m.stride)
            a, g = a.transpose(1, 2).reshape(-1, a.shape[1]), g.flatten(2).transpose(1, 2).reshape(-1, g.shape[1])
        if m.bias is not None:
            a = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype)], 1)
        g = g * n if times_n else g
        out.append((g.T @ g / n, a.T @ a / len(a)))
    return out


def readme_glue():
    """The code block after the README's ``kfac-glue`` marker, and its number of lines of
    code (blank and comment-only lines not counted)."""
    text = open(README).read()
    block = re.search(r"<!-- kfac-glue.*?-->\n```python\n(.*?)```", text, re.S).group(1)
    lines = [ln for ln in block.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return block, len(lines)


def run_glue(net, lossfn, X, y, kfac):
    block, _ = readme_glue()
    exec(compile(block, "README.md kfac-glue", "exec"), {"net": net, "lossfn": lossfn, "X": X, "y": y, "my_kfac": kfac})


def test_readme_glue_is_at_most_ten_lines():
    _, count = readme_glue()
    assert count <= 10, count
    assert f"in {count} lines of glue" in open(README).read()  # the README states the count it shows


def test_readme_glue_passes_a_correct_kfac_on_a_users_cnn():
    net = cnn().train()  # the glue puts it in evaluation mode
    X, y = data()
    run_glue(net, tnn.CrossEntropyLoss(), X, y, my_kfac)


def test_readme_glue_fails_a_wrong_kfac():
    X, y = data()
    with pytest.raises(AssertionError, match="kfac_factors"):  # the mean loss's gradients, not times N
        run_glue(cnn(), tnn.CrossEntropyLoss(), X, y, lambda *a: my_kfac(*a, times_n=False))
    with pytest.raises(AssertionError, match="kfac_factors"):  # "times N" assumes a mean: wrong on a sum
        run_glue(cnn(), tnn.CrossEntropyLoss(reduction="sum"), X, y, my_kfac)


def test_users_kfac_is_refprunes_kfac_on_a_mean_loss():
    """The user's K-FAC, checked once more without the harness: refprune's factors."""
    net = cnn().eval()
    X, y = data()
    model, params, loss = rp.from_torch(net, loss=tnn.CrossEntropyLoss())
    blocks = rp.kfac(model, params, X.numpy(), y.numpy(), loss, curvature="empirical_fisher").blocks
    for (G, A), b in zip(my_kfac(net, tnn.CrossEntropyLoss(), X, y), blocks):
        assert_close(G.numpy(), b.S, 1e-12, 1e-15, "G")
        assert_close(A.numpy(), b.A, 1e-12, 1e-15, "A")


# ---------------------------------------------------------------- adapters may return torch or JAX arrays


def test_adapters_may_return_torch_and_jax_arrays():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)  # as refprune's JAX bridge does: float64 arrays
    jnp = jax.numpy
    cases = cf.zoo(["mlp-tanh", "conv-tanh-avgpool"], ["ce-mean", "mse-sum"])
    adapter = cf.Adapter(
        grad=lambda c: torch.from_numpy(rp.grad(*c.args())).requires_grad_(),  # detached by the harness
        hessian=lambda c: jnp.asarray(rp.hessian(*c.args())),
        kfac_factors=lambda c: [(torch.from_numpy(b.S), jnp.asarray(b.A)) for b in rp.kfac(*c.args()).blocks])
    report = cf.check(adapter, cases)
    assert report.ok, report
    assert all(r.max_error == 0.0 for r in report.results)  # the very same numbers, converted exactly
    wrong = cf.Adapter(grad=lambda c: jnp.asarray(1.001 * rp.grad(*c.args())),
                       kfac_factors=lambda c: [(torch.from_numpy(2 * b.S), jnp.asarray(b.A))
                                               for b in rp.kfac(*c.args()).blocks])
    assert cf.check(wrong, cases).failed() == ["grad", "kfac_factors"]
