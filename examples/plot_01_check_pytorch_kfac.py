# %% [markdown]
"""
Checking a PyTorch K-FAC with the conformance harness
=====================================================

You have written K-FAC (Kronecker-factored approximate curvature, Martens & Grosse 2015)
for your own PyTorch network and want to know whether its factors are right: not
"roughly right", but equal to the definition to rounding, with a sentence naming the
cause when they are not.  ``refprune.conformance`` runs your code on a zoo of small
networks and compares every result with refprune's float64 reference
(``docs/conventions.md`` §4 for K-FAC, §9 for the tolerance).

This example needs **PyTorch** (any release from 2.0, a CPU build is enough) and
matplotlib.  It writes a small K-FAC with forward and backward hooks, checks it, then
plants two classic bugs (a missing :math:`1/N` and a forgotten bias column) and shows the
harness's diagnosis of each, uses ``cf.diagnose`` on single matrices, and finally shows
how ``rp.express_kfac`` states the convention of code written in the style of
KFAC-Pytorch (gradients multiplied by :math:`N`).
"""

# %% [markdown]
# Set-up
# ------
#
# Everything is float64: the harness compares at a relative tolerance of
# :math:`10^{-9}` (``docs/conventions.md`` §9), far below float32's rounding.

# %%

import os

# One BLAS thread, as the studies do (validation/report.py), unless you set otherwise: the
# matrices here are small, where threads on a busy machine cost more than they save, and the
# printed numbers are then the same bits whatever the machine's thread count.
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import matplotlib.pyplot as plt
import numpy as np
import torch

import refprune as rp
from refprune import conformance as cf

torch.manual_seed(0)
torch.set_default_dtype(torch.float64)

# %% [markdown]
# The K-FAC under test
# --------------------
#
# For a ``Linear`` layer with input :math:`a_n` and output :math:`z_n`, K-FAC of the
# empirical Fisher approximates the layer's block by :math:`S \otimes A` over the rows of
# :math:`[W \mid b]` (``docs/conventions.md`` §4, ``docs/derivations.md`` §8):
#
# .. math::
#
#    A = \frac{1}{N} \sum_n \bar a_n \bar a_n^\top, \quad \bar a_n = [a_n; 1],
#    \qquad
#    S = R \sum_n g_n g_n^\top, \quad g_n = \frac{\partial \ell_n}{\partial z_n},
#
# where the loss is :math:`L = R \sum_n \ell_n` with PyTorch's scaling :math:`R`:
# :math:`1/N` for a mean cross-entropy, :math:`1/(NC)` for a mean squared error and
# :math:`1` for a sum (``docs/conventions.md`` §2).  A backward hook sees
# :math:`\partial L / \partial z_n = R g_n`, so :math:`S = \frac{1}{R} \sum_n (R g_n)(R g_n)^\top`.
#
# ``my_kfac`` is written the way such code usually is: hooks on every ``Linear``, the
# bias folded in as a constant input 1.  Two switches plant the bugs shown below.

# %%


def loss_scale(lossfn, output):
    """PyTorch's R for the losses used here (docs/conventions.md §2)."""
    if lossfn.reduction == "sum":
        return 1.0
    if isinstance(lossfn, torch.nn.CrossEntropyLoss):
        return 1.0 / output.shape[0]
    return 1.0 / output.numel()  # MSELoss(reduction="mean") averages over N C entries


def my_kfac(net, lossfn, X, y, average_inputs=True, fold_bias=True):
    """Empirical-Fisher K-FAC of ``net``: a list of (S, A) torch tensors per Linear layer."""
    layers = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    inputs, out_grads = {}, {}
    hooks = [m.register_forward_pre_hook(lambda m, i: inputs.__setitem__(m, i[0].detach())) for m in layers]
    hooks += [m.register_full_backward_hook(lambda m, gi, go: out_grads.__setitem__(m, go[0].detach()))
              for m in layers]
    output = net(X.clone().requires_grad_())  # an input that needs a gradient: every hook fires
    lossfn(output, y).backward()
    for h in hooks:
        h.remove()
    R, N = loss_scale(lossfn, output), len(X)
    pairs = []
    for m in layers:
        a, Rg = inputs[m], out_grads[m]
        if m.bias is not None and fold_bias:
            a = torch.cat([a, torch.ones(N, 1)], dim=1)
        A = a.T @ a / N if average_inputs else a.T @ a
        S = Rg.T @ Rg / R
        pairs.append((S, A))
    return pairs


# %% [markdown]
# Your network first: the README's glue
# -------------------------------------
#
# ``rp.from_torch`` converts the network and the criterion (``theta`` in
# ``parameters_to_vector`` order), ``cf.Case`` wraps them with the data, and
# ``cf.assert_conforms`` is one assertion that raises with the report when anything
# differs.  The adapter's ``kfac_options`` say which K-FAC the code computes: here the
# empirical Fisher with the bias folded (the default ``bias="fold"``).

# %%

net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8), torch.nn.ReLU(),
                          torch.nn.Linear(8, 3))
X = torch.randn(32, 4)
y = torch.randint(0, 3, (32,))
lossfn = torch.nn.CrossEntropyLoss()

model, params, loss = rp.from_torch(net.eval(), loss=lossfn)
case = cf.Case("my-mlp", model, params, X.numpy(), y.numpy(), loss)
adapter = cf.Adapter(kfac_factors=lambda c: my_kfac(net, lossfn, X, y),
                     kfac_options=dict(curvature="empirical_fisher"))
report = cf.assert_conforms(adapter, cases=[case])
print(report.table())

# %% [markdown]
# One network is one data point.  The zoo varies the architecture (no bias, ReLU,
# sigmoid, softplus), the loss (cross-entropy and squared error) and the reduction (mean
# and sum), smallest network first, so that a failure is shown on the smallest case
# that has it.  ``case.torch()`` rebuilds each case as a float64 PyTorch network with its
# loss module.  The zoo also has convolutions; this K-FAC handles ``Linear`` only, so we
# choose the multilayer perceptrons.

# %%

cases = cf.zoo(["linear", "mlp-tanh", "mlp-relu", "mlp-sigmoid-softplus-nobias"],
               ["ce-mean", "ce-sum", "mse-mean", "mse-sum"])


def adapter_for(**bugs):
    return cf.Adapter(kfac_factors=lambda c: my_kfac(*c.torch(), **bugs),
                      kfac_options=dict(curvature="empirical_fisher"))


correct = cf.check(adapter_for(), cases)
print(correct.table())

# %% [markdown]
# Bug 1: the missing :math:`1/N`
# ------------------------------
#
# Summing :math:`\bar a_n \bar a_n^\top` instead of averaging makes :math:`A` exactly
# :math:`N` times too large.  (The Kronecker product is unchanged by
# :math:`S \otimes A = (tS) \otimes (A/t)`, so a *compensating* factor in :math:`S` would
# give the same matrix; the pairs are compared factor by factor because libraries store
# and invert them separately.)  The harness names the factor and where it comes from.

# %%

no_mean = cf.check(adapter_for(average_inputs=False), cases)
print(no_mean.table())
print("\n".join(no_mean["kfac_factors"].smallest_failure.diagnosis))

# %% [markdown]
# Bug 2: the forgotten bias column
# --------------------------------
#
# Without the constant input 1, :math:`A` covers the weights only: the bias gets no
# curvature and the weight-bias coupling is lost.  Every network of the zoo has a bias in
# at least one layer, so every case fails (the middle layer of
# ``mlp-sigmoid-softplus-nobias`` has none, and there the pair is right); the diagnosis
# of the smallest case says what is missing.

# %%

no_bias = cf.check(adapter_for(fold_bias=False), cases)
print(no_bias.table())
print(f"failed on {len(no_bias['kfac_factors'].failures)} of {no_bias['kfac_factors'].cases} cases")
print("\n".join(no_bias["kfac_factors"].smallest_failure.diagnosis))

# %% [markdown]
# ``assert_conforms`` is what goes into a test suite: it raises ``AssertionError`` with
# the whole report (table, smallest failing case, diagnosis, conventions compared under).

# %%

try:
    cf.assert_conforms(adapter_for(fold_bias=False), cases=cases[:4])
except AssertionError as err:
    print(str(err)[:1200])

# %% [markdown]
# Diagnosing one matrix: ``cf.diagnose``
# --------------------------------------
#
# Outside the harness, ``cf.diagnose(mine, refprune's, case, tol, quantity=...)`` gives
# the same sentences for one pair of arrays.  Here the user's K-FAC as an
# :math:`n \times n` matrix in ``theta`` order (``rp.blocks_to_flat`` places each layer's
# :math:`S \otimes A` there), on the network above, against refprune's:

# %%

model, params, loss = rp.from_torch(net, loss=lossfn)
case = cf.Case("my-mlp", model, params, X.numpy(), y.numpy(), loss)
kfac_opts = dict(curvature="empirical_fisher", approx="expand", bias="fold")
reference = rp.blocks_to_flat(model, rp.kfac(*case.args(), curvature="empirical_fisher").factors())
for label, bugs in [("correct", {}), ("no 1/N in A", dict(average_inputs=False))]:
    mine = rp.blocks_to_flat(model, [(S.numpy(), A.numpy()) for S, A in my_kfac(net, lossfn, X, y, **bugs)])
    err = cf.relative_error(mine, reference)
    words = cf.diagnose(mine, reference, case, cf.DEFAULT_RTOL, quantity="kfac", options=kfac_opts) \
        if err > cf.DEFAULT_RTOL else ["agrees"]
    print(f"{label}: relative error {err:.1e}; {' '.join(words)}")

# %% [markdown]
# A K-FAC of another curvature is named too: the pairs of the GGN (for cross-entropy
# the true Fisher, ``docs/conventions.md`` §3) passed off as the empirical Fisher.
# The diagnosis has a catalogue of such neighbouring quantities
# (``docs/conventions.md`` §9a), which also names a layout mistake: the layer blocks
# written as ``np.kron(S, A)`` directly, in the order of
# :math:`\mathrm{vec}([W \mid b])` rather than ``theta``'s (where every bias of a layer
# comes after all its weights, ``docs/conventions.md`` §1 and §4).  A difference outside
# the catalogue is only located, by the parameter arrays that differ.

# %%

ggn_pairs = rp.kfac(*case.args(), curvature="ggn").factors()
print("GGN's K-FAC:", cf.diagnose(rp.blocks_to_flat(model, ggn_pairs), reference, case, cf.DEFAULT_RTOL,
                                  quantity="kfac", options=kfac_opts))
naive = np.zeros_like(reference)
start = 0
for S, A in rp.kfac(*case.args(), curvature="empirical_fisher").factors():
    block = np.kron(S, A)
    naive[start:start + len(block), start:start + len(block)] = block
    start += len(block)
print("np.kron layout:", cf.diagnose(naive, reference, case, cf.DEFAULT_RTOL, quantity="kfac", options=kfac_opts))

# %% [markdown]
# Another library's convention: gradients times :math:`N`
# -------------------------------------------------------
#
# KFAC-Pytorch, EigenDamage-Pytorch and ACKTR do not divide by :math:`R`: they multiply
# the hook's gradient :math:`R g_n` by the batch size :math:`N`, assuming a mean loss
# (``docs/conventions.md`` §8).  Their output factor is :math:`N R\, S`: equal to
# refprune's on a mean cross-entropy (:math:`NR = 1`), off by :math:`N` on a sum.
# ``rp.express_kfac(..., "kfac-pytorch")`` gives refprune's factors in that convention,
# so such code is compared entry by entry, on any loss.

# %%


def kfac_times_n(net, lossfn, X, y):
    """K-FAC as KFAC-Pytorch writes it (utils/kfac_utils.py): the hook's gradient times N."""
    layers = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    inputs, out_grads = {}, {}
    hooks = [m.register_forward_pre_hook(lambda m, i: inputs.__setitem__(m, i[0].detach())) for m in layers]
    hooks += [m.register_full_backward_hook(lambda m, gi, go: out_grads.__setitem__(m, go[0].detach()))
              for m in layers]
    lossfn(net(X.clone().requires_grad_()), y).backward()
    for h in hooks:
        h.remove()
    N, pairs = len(X), []
    for m in layers:
        a = torch.cat([inputs[m], torch.ones(N, 1)], dim=1)
        g = out_grads[m] * N
        pairs.append((g.T @ g / N, a.T @ a / N))
    return pairs


sum_loss = torch.nn.CrossEntropyLoss(reduction="sum")
model, params, loss_sum = rp.from_torch(net, loss=sum_loss)
args = (model, params, X.numpy(), y.numpy(), loss_sum)
theirs = kfac_times_n(net, sum_loss, X, y)
expressed = rp.express_kfac(*args, "kfac-pytorch", curvature="empirical_fisher")
refprune_pairs = rp.kfac(*args, curvature="empirical_fisher").factors()
for i, ((G, A), e, (S, _)) in enumerate(zip(theirs, expressed, refprune_pairs)):
    G = G.numpy()
    print(f"layer {i}: against express_kfac's G {cf.relative_error(G, e['G']):.1e}, against refprune's S "
          f"{cf.relative_error(G, S):.1e}; |G| / |S| = {np.linalg.norm(G) / np.linalg.norm(S):.1f} (N = {len(X)})")

sum_check = cf.check(cf.Adapter(kfac_factors=lambda c: kfac_times_n(*c.torch()),
                                kfac_options=dict(curvature="empirical_fisher")),
                     cf.zoo(["mlp-tanh"], ["ce-mean", "ce-sum"]))
print(sum_check.table())
print("\n".join(sum_check["kfac_factors"].smallest_failure.diagnosis))

# %% [markdown]
# The errors at a glance
# ----------------------
#
# The largest relative error of each version over the zoo (log scale; a bar at the top
# is an error of infinity: a factor of the wrong shape).  The "times N" code passes on
# the mean loss and fails on the sum.  The dashed line is the
# tolerance :math:`10^{-9}`; the correct K-FAC sits at rounding, :math:`10^{-16}`.

# %%

labels = ["correct", "no 1/N in A", "no bias column", "times N\n(mean and sum)"]
errors = [correct["kfac_factors"].max_error, no_mean["kfac_factors"].max_error,
          no_bias["kfac_factors"].max_error, sum_check["kfac_factors"].max_error]
finite = [e if np.isfinite(e) else 1e3 for e in errors]
fig, ax = plt.subplots(figsize=(7, 3.4))
ax.bar(labels, np.maximum(finite, 1e-17), color=["tab:green", "tab:red", "tab:red", "tab:orange"])
ax.axhline(cf.DEFAULT_RTOL, color="k", ls="--", lw=1, label="tolerance 1e-9")
ax.set_yscale("log")
ax.set_ylim(1e-17, 1e4)
ax.set_ylabel("largest relative error over the zoo")
ax.set_title("K-FAC factors against refprune")
ax.legend(loc="upper left")
fig.tight_layout()
