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

# %%
# The network
# -----------
#
# A 2-32-32-3 tanh network (1251 parameters) trained to a low loss on the demo's spirals
# (``refprune.demo.spirals``, 180 points); a second draw of the spirals (``seed=1``)
# serves as held-out data for the accuracy.  ``REFPRUNE_GALLERY_QUICK=1`` (the test
# suite's setting) trains less and sweeps coarser; the default is the teaching size.

import os
import warnings

import matplotlib.pyplot as plt
import numpy as np

import refprune as rp
from refprune.demo import spirals

QUICK = os.environ.get("REFPRUNE_GALLERY_QUICK") == "1"

X, y = spirals(seed=0)
X_test, y_test = spirals(seed=1)
model = rp.Sequential(rp.Linear(2, 32), rp.Tanh(), rp.Linear(32, 32), rp.Tanh(), rp.Linear(32, 3))
loss = rp.CrossEntropyLoss("mean")
params, history = rp.train(model, model.init(seed=0), X, y, loss, epochs=300 if QUICK else 1500,
                           batch_size=len(X), lr=0.1, momentum=0.9)


def accuracy(net, p):
    return float(np.mean(net(p, X_test).argmax(1) == y_test))


print(f"{model.n_params} parameters, training loss {history[-1]:.4f}, held-out accuracy "
      f"{accuracy(model, params):.3f}")

# %%
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

# %%
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

warnings.simplefilter("ignore", rp.PruningWarning)  # e.g. "nothing removed" at count 0 is not news here
step_units, step_dirs = (6, 10) if QUICK else (2, 2)
sweeps = {"C-OBD": ("c_obd", step_units), "Kron-OBD": ("kron_obd", step_units), "Kron-OBS": ("kron_obs", step_units),
          "EigenDamage": ("eigendamage", step_dirs)}
results = {}
for label, (method, step) in sweeps.items():
    rows = []
    for count in range(step, 200, step):
        try:
            r = rp.prune(model, params, X, y, loss, method=method, count=count)
        except ValueError:  # more units or directions than may go (a layer would be emptied or pass its cap)
            break
        rows.append((count, model.n_params - r.model.n_params, rp.loss(r.model, r.params, X, y, loss),
                     accuracy(r.model, r.params), r.steps[0].predicted))
    results[label] = np.array(rows)
    print(f"{label}: {len(rows)} amounts, up to {int(rows[-1][0])} removed ({int(rows[-1][1])} parameters)")

# %%
# At matched budgets
# ------------------
#
# For each budget (a fraction of the 1251 parameters), each method at the smallest amount
# that removes at least that many parameters: its loss, its accuracy and the parameters
# it actually removed (a unit costs 35 or 36 parameters, so budgets are met to within one
# unit; EigenDamage's steps are uneven, since a bottleneck appears all at once).

base_loss = rp.loss(model, params, X, y, loss)
print(f"dense: loss {base_loss:.3f}, accuracy {accuracy(model, params):.3f}")
print(f"{'budget':>8s}  " + "  ".join(f"{label:>26s}" for label in results))
for fraction in (0.1, 0.2, 0.35, 0.5):
    budget = fraction * model.n_params
    cells = []
    for label, a in results.items():
        ok = np.flatnonzero(a[:, 1] >= budget)
        if ok.size:
            c, removed, lval, acc, _ = a[ok[0]]
            cells.append(f"{int(removed):5d}: loss {lval:.3f} acc {acc:.2f}")
        else:
            cells.append("not reached")
    print(f"{fraction:8.0%}  " + "  ".join(f"{c:>26s}" for c in cells))

# %%
# On this small network the unit methods keep the loss lower than EigenDamage at every
# budget EigenDamage reaches: its bottlenecks pay for :math:`U_A'` and :math:`U_S'`, so a
# 32-wide layer saves parameters only once about half of its directions are gone, by
# which point it has lost more of the function than the unit methods have.  The
# paper's gains are on far wider convolutional networks, where a bottleneck is cheap
# relative to the layer; the study ``validation/eigendamage_digits.py`` (the README's
# reproduction table) compares them at matched FLOPs with fine-tuning on a conv net.

# %%
# Loss and accuracy against parameters removed
# --------------------------------------------

styles = {"C-OBD": ("tab:blue", "o"), "Kron-OBD": ("tab:orange", "v"), "Kron-OBS": ("tab:green", "s"),
          "EigenDamage": ("tab:red", "D")}
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
for label, a in results.items():
    color, marker = styles[label]
    # points in the order of the amount removed; EigenDamage's parameter count is not monotone in it
    ax1.plot(a[:, 1], a[:, 2], marker=marker, ms=3, lw=0.6, alpha=0.8, color=color, label=label)
    ax2.plot(a[:, 1], a[:, 3], marker=marker, ms=3, lw=0.6, alpha=0.8, color=color, label=label)
ax1.axhline(base_loss, color="k", ls=":", lw=1, label="dense")
ax2.axhline(accuracy(model, params), color="k", ls=":", lw=1, label="dense")
ax1.set_yscale("log")
ax1.set_ylabel("training loss after pruning (no fine-tuning)")
ax2.set_ylabel("held-out accuracy")
for ax in (ax1, ax2):
    ax.set_xlabel(f"parameters removed (of {model.n_params})")
    ax.legend(fontsize=8)
fig.tight_layout()
