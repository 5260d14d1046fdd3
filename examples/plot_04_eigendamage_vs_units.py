# %% [markdown]
r"""
EigenDamage against unit pruning at the same budget
===================================================

Structured pruning removes whole pieces of a network so that it really gets smaller.
Unit pruning removes hidden units (rows of a layer's :math:`[W \mid b]` and the matching
columns of the next layer).  EigenDamage (Wang et al. 2019) removes *eigen-directions*
of each layer's Kronecker factors instead, and replaces the layer by a low-rank
bottleneck.  Which keeps the loss lower for the same number of parameters removed?

The derivations of every criterion used here are in ``docs/pruning_explained.md`` §5;
what the code does, in ``docs/derivations.md`` §9.  All curvature is K-FAC's
:math:`S \otimes A` of the GGN (for cross-entropy, the Fisher), ``docs/conventions.md`` §4.
"""

# %% [markdown]
# The network, at two stages of training
# --------------------------------------
#
# A 2-32-32-3 tanh network (1251 parameters) on the demo's spirals
# (``refprune.demo.spirals``, 180 points), trained full-batch with momentum; a second
# draw of the spirals (``seed=1``) serves as held-out data for the accuracy.  We prune it
# twice: part-way through training (epoch 300) and at the end (epoch 1500), because, as
# we will see, the answer depends on which.

# %%

import os

# One BLAS thread, as the studies do (validation/report.py), unless you set otherwise: the
# matrices here are small, where threads on a busy machine cost more than they save, and the
# printed numbers are then the same bits whatever the machine's thread count.
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import warnings

import matplotlib.pyplot as plt
import numpy as np

import refprune as rp
from refprune.demo import spirals

STAGES = (300, 1500)

X, y = spirals(seed=0)
X_test, y_test = spirals(seed=1)
model = rp.Sequential(rp.Linear(2, 32), rp.Tanh(), rp.Linear(32, 32), rp.Tanh(), rp.Linear(32, 3))
loss = rp.CrossEntropyLoss("mean")
trained = {}


def keep(epoch, p, value):
    if epoch in STAGES:
        trained[epoch] = [a.copy() for a in p]


rp.train(model, model.init(seed=0), X, y, loss, epochs=STAGES[-1], batch_size=len(X), lr=0.1, momentum=0.9,
         callback=keep)


def accuracy(net, p):
    return float(np.mean(net(p, X_test).argmax(1) == y_test))


for epoch, p in trained.items():
    print(f"epoch {epoch}: training loss {rp.loss(model, p, X, y, loss):.4f}, held-out accuracy "
          f"{accuracy(model, p):.3f}")

# %% [markdown]
# The criteria
# ------------
#
# With a layer's K-FAC block :math:`F \approx S \otimes A` over the rows :math:`w_i` of
# :math:`[W \mid b]` (``docs/derivations.md`` §9):
#
# * **C-OBD** removes the unit with the smallest sum of its weights' OBD saliencies,
#   :math:`\sum_j w_{ij}^2 F_{(ij),(ij)} / 2`, with the exact diagonal of the Fisher.
# * **Kron-OBS** treats row :math:`i` as one group in OBS.  Since
#   :math:`[F^{-1}]_{QQ} = [S^{-1}]_{ii} A^{-1}` for :math:`Q` = row :math:`i`, the group
#   formula of ``docs/pruning_explained.md`` §3 gives
#   :math:`s_i = w_i^\top A w_i / (2 [S^{-1}]_{ii})` and the update
#   :math:`\Delta W = -S^{-1} e_i w_i^\top / [S^{-1}]_{ii}` of the other units
#   (Wang et al. 2019, §3.2, eqs. 7-8).
# * **Kron-OBD** is the same without the update: :math:`s_i = S_{ii} w_i^\top A w_i / 2`.
# * **EigenDamage** rotates each layer into the factors' eigenbases,
#   :math:`W^* = U_S^\top [W \mid b] U_A`, where K-FAC (or EKFAC's re-estimated
#   eigenvalues :math:`\kappa_{ij}`, the default) is diagonal, so OBD and OBS coincide and
#   entry :math:`(i, j)` has importance :math:`W^{*2}_{ij} \kappa_{ij} / 2` (Wang et al.
#   2019, eq. 9).  A whole row or column of :math:`W^*` (an output or input
#   eigen-direction) is removed by its summed importance, one global ranking over all
#   layers, at most ``max_layer_fraction`` (0.9) of either side of a layer.  The kept
#   directions form the bottleneck :math:`U_S' W^{*\prime} U_A'^\top`, three layers.
#
# Unit pruning never removes an output unit of the last layer (that would remove a
# class); EigenDamage prunes every layer, the last one included (a low-rank classifier).

# %% [markdown]
# The budget rule
# ---------------
#
# **The budget is the number of parameters removed**: the parameter count of the dense
# network minus that of the network each method returns (``r.model.n_params``).  Each
# method's own amount (units for C-OBD, Kron-OBD, Kron-OBS; eigen-directions for
# EigenDamage) is swept, and every result is placed at the parameters it actually
# removes.  A bottleneck is kept only when it has fewer parameters than the layer it
# replaces; otherwise refprune stores the pruned (low-rank) layer densely
# (``docs/derivations.md`` §9), so EigenDamage's first directions change the function
# but save no parameter, and count as zero.  All results are one-shot: no fine-tuning.

# %%

warnings.simplefilter("ignore", rp.PruningWarning)  # e.g. "nothing removed" at count 0 is not news here
sweeps = {"C-OBD": "c_obd", "Kron-OBD": "kron_obd", "Kron-OBS": "kron_obs", "EigenDamage": "eigendamage"}


def sweep(params):
    """{method: rows (amount, parameters removed, loss, held-out accuracy, predicted)}."""
    results = {}
    for label, method in sweeps.items():
        rows = []
        for count in range(2, 200, 2):  # every second unit or direction, until no more may go
            try:
                r = rp.prune(model, params, X, y, loss, method=method, count=count)
            except ValueError:  # more units or directions than may go (a layer would be emptied or pass its cap)
                break
            rows.append((count, model.n_params - r.model.n_params, rp.loss(r.model, r.params, X, y, loss),
                         accuracy(r.model, r.params), r.steps[0].predicted))
        results[label] = np.array(rows)
    return results


results = {epoch: sweep(p) for epoch, p in trained.items()}
for label, a in results[STAGES[-1]].items():
    print(f"{label}: {len(a)} amounts, up to {int(a[-1, 0])} removed ({int(a[-1, 1])} parameters)")

# %% [markdown]
# At matched budgets
# ------------------
#
# For each budget (a fraction of the 1251 parameters), each method at the smallest amount
# that removes at least that many parameters: the parameters it actually removed, its
# training loss and its held-out accuracy (a unit costs 35 or 36 parameters, so budgets
# are met to within one unit; EigenDamage's steps are uneven, since a bottleneck appears
# all at once and a larger one can replace it).

# %%

for epoch, res in results.items():
    p = trained[epoch]
    print(f"\nepoch {epoch}, dense: loss {rp.loss(model, p, X, y, loss):.3f}, accuracy {accuracy(model, p):.3f}")
    print(f"{'budget':>8s}  " + "  ".join(f"{label:>26s}" for label in res))
    for fraction in (0.1, 0.2, 0.35, 0.5):
        cells = []
        for label, a in res.items():
            ok = np.flatnonzero(a[:, 1] >= fraction * model.n_params)
            cells.append(f"{int(a[ok[0], 1]):5d}: loss {a[ok[0], 2]:.3f} acc {a[ok[0], 3]:.2f}" if ok.size
                         else "not reached")
        print(f"{fraction:8.0%}  " + "  ".join(f"{c:>26s}" for c in cells))

# %% [markdown]
# What the tables show:
#
# * **Part-way through training** (epoch 300) all four are level at small budgets
#   (losses within 0.02 of each other at 10% and 20%), and EigenDamage keeps the lowest
#   loss at 35% and 50%.
# * **At the end of training** (epoch 1500) the order turns round: the unit methods keep
#   the loss lower than EigenDamage at every budget.  The bottlenecks pay for
#   :math:`U_A'` and :math:`U_S'`: the 32-by-33 middle layer (1056 parameters) becomes
#   a bottleneck of :math:`33 k + k^2 + 32 k` parameters when it keeps :math:`k` input
#   and :math:`k` output directions, smaller only for :math:`k \le 13`, so it saves
#   parameters only once more than half of its directions on both sides are gone; on the
#   longer-trained network that many directions carry more of the function.
#
# So on a network this small neither method wins in general, and a comparison of
# pruning methods has to say at which point of training it pruned.  The paper's gains
# are on far wider convolutional networks, where a bottleneck is cheap relative to the
# layer, and after fine-tuning; the study ``validation/eigendamage_digits.py`` (the
# README's reproduction table) compares them at matched FLOPs with fine-tuning on a conv
# net.

# %% [markdown]
# Loss and accuracy against parameters removed
# --------------------------------------------

# %%

styles = {"C-OBD": ("tab:blue", "o"), "Kron-OBD": ("tab:orange", "v"), "Kron-OBS": ("tab:green", "s"),
          "EigenDamage": ("tab:red", "D")}
fig, axes = plt.subplots(len(STAGES), 2, figsize=(11, 3.6 * len(STAGES)), squeeze=False)
for (ax1, ax2), epoch in zip(axes, STAGES):
    for label, a in results[epoch].items():
        color, marker = styles[label]
        # points in the order of the amount removed; EigenDamage's parameter count is not monotone in it
        ax1.plot(a[:, 1], a[:, 2], marker=marker, ms=3, lw=0.6, alpha=0.8, color=color, label=label)
        ax2.plot(a[:, 1], a[:, 3], marker=marker, ms=3, lw=0.6, alpha=0.8, color=color, label=label)
    ax1.axhline(rp.loss(model, trained[epoch], X, y, loss), color="k", ls=":", lw=1, label="dense")
    ax2.axhline(accuracy(model, trained[epoch]), color="k", ls=":", lw=1, label="dense")
    ax1.set_yscale("log")
    ax1.set_ylabel(f"epoch {epoch}: training loss\nafter pruning (no fine-tuning)")
    ax2.set_ylabel("held-out accuracy")
    for ax in (ax1, ax2):
        ax.set_xlabel(f"parameters removed (of {model.n_params})")
        ax.legend(fontsize=8)
fig.tight_layout()
