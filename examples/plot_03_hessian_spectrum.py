# %% [markdown]
r"""
The exact Hessian's spectrum through training
=============================================

How does the curvature of a network's loss change while it learns?  We train a small
tanh MLP on the demo's three interleaved spirals and, at several epochs, compute three
exact :math:`n \times n` matrices with refprune: the Hessian :math:`H`, the generalised
Gauss-Newton matrix (GGN) :math:`G` and the residual :math:`H - G`, and look at their
eigenvalues.

For a loss :math:`L = R \sum_n \ell_n(f(x_n, \theta))` the Hessian splits into
(``docs/conventions.md`` §3, ``docs/derivations.md`` §4)

.. math::

   H = \underbrace{R \sum_n J_n^\top \Lambda_n J_n}_{G\ (\text{GGN})}
     + \underbrace{R \sum_n \sum_k \frac{\partial \ell_n}{\partial f_k}
       \nabla^2_\theta f_k(x_n)}_{H - G\ (\text{residual})},

with :math:`J_n` the Jacobian of the network's output and :math:`\Lambda_n` the Hessian of
the loss in the output (for cross-entropy :math:`\operatorname{diag}(p) - p p^\top`,
positive semi-definite).  So :math:`G` is positive semi-definite and every negative
eigenvalue of :math:`H` is the residual's doing.  The residual is weighted by the
loss's gradient in the output, :math:`p - \text{onehot}(y)`, which shrinks as the fit
improves.
"""

# %% [markdown]
# Data, network, training
# -----------------------
#
# 180 points in three spiral arms (``refprune.demo.spirals``, generated, no download),
# a 2-16-16-3 tanh network (371 parameters) with a mean cross-entropy, trained
# full-batch by SGD with momentum (``rp.train``).  A callback keeps the parameters at the
# epochs we want to look at.

# %%

import os

# One BLAS thread, as the studies do (validation/report.py), unless you set otherwise: the
# matrices here are small, where threads on a busy machine cost more than they save, and the
# printed numbers are then the same bits whatever the machine's thread count.
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import matplotlib.pyplot as plt
import numpy as np

import refprune as rp
from refprune.demo import spirals

EPOCHS = [0, 3, 10, 30, 100, 300, 1000]

X, y = spirals(seed=0)
model = rp.Sequential(rp.Linear(2, 16), rp.Tanh(), rp.Linear(16, 16), rp.Tanh(), rp.Linear(16, 3))
loss = rp.CrossEntropyLoss("mean")
params = model.init(seed=0)
print(model, f"{model.n_params} parameters, {len(X)} points")

snapshots = {0: params}


def keep(epoch, p, value):
    if epoch in EPOCHS:
        snapshots[epoch] = [a.copy() for a in p]


params, history = rp.train(model, params, X, y, loss, epochs=EPOCHS[-1], batch_size=len(X), lr=0.1,
                           momentum=0.9, callback=keep)

# %% [markdown]
# Three exact matrices per snapshot
# ---------------------------------
#
# ``rp.hessian``, ``rp.ggn`` and ``rp.residual`` compute each matrix from hand-derived
# derivatives (no autodiff, no finite differences); ``residual`` is assembled from the
# network's second derivatives, not as a difference, so :math:`H = G + (H - G)` is a check
# that holds to rounding.

# %%

spectra = {}
for epoch, p in snapshots.items():
    H = rp.hessian(model, p, X, y, loss)
    G = rp.ggn(model, p, X, y, loss)
    Res = rp.residual(model, p, X, y, loss)
    assert np.abs(H - (G + Res)).max() <= 1e-12 * np.abs(H).max()
    eh, V = np.linalg.eigh(H)
    # negative beyond rounding (eigenvalues within 1e-10 |H| of zero are zero to eigh's accuracy)
    neg = eh < -1e-10 * np.abs(eh).max()
    # for a direction v of negative curvature, v^T H v = v^T G v + v^T Res v with v^T G v >= 0,
    # so the residual's share v^T Res v / lambda is at least 1: it supplies all the negativity
    share = np.einsum("ij,ik,kj->j", V[:, neg], Res, V[:, neg]) / eh[neg]
    spectra[epoch] = dict(H=eh, G=np.linalg.eigvalsh(G), Res=np.linalg.eigvalsh(Res), share=share,
                          n_negative=int(neg.sum()), loss=history[epoch], accuracy=np.mean(model(p, X).argmax(1) == y),
                          res_norm=np.linalg.norm(Res), ggn_norm=np.linalg.norm(G))

print("epoch   loss  accuracy  min eig H  min eig G  min eig (H-G)  negative eigs of H: count, sum  "
      "min share of H-G  |H-G|_F/|G|_F")
for epoch, s in spectra.items():
    print(f"{epoch:5d}  {s['loss']:.3f}  {s['accuracy']:8.2f}  {s['H'].min():9.2e}  {s['G'].min():9.1e}  "
          f"{s['Res'].min():13.2e}  {s['n_negative']:25d}, {s['H'][s['H'] < 0].sum():9.2e}  "
          f"{s['share'].min():16.3f}  {s['res_norm'] / s['ggn_norm']:13.3f}")

# %% [markdown]
# What the table shows:
#
# * The GGN's smallest eigenvalue is zero to rounding (about :math:`-10^{-16}`) at every
#   epoch: it is positive semi-definite, as it must be.
# * Along every eigenvector of :math:`H` with a negative eigenvalue, the residual's
#   share of the curvature is at least 1 to rounding ("min share"; eigenvalues within
#   :math:`10^{-10} |H|` of zero are left out as zero): the residual accounts for all of
#   the negative curvature, the GGN only reduces it.  By Weyl's inequality the smallest
#   eigenvalue of :math:`H` is also at least that of :math:`H - G`.
# * As the loss falls from 1.15 to 0.14, the most negative eigenvalue of :math:`H`
#   shrinks by about two orders of magnitude (from about :math:`-0.54` to
#   :math:`-0.008`), and so does the sum of the negative eigenvalues (from about
#   :math:`-16` to :math:`-0.06`).  The *number* of negative eigenvalues does not fall
#   (between 118 and 162 of 371 at every snapshot): most of them are tiny, and the
#   network is not at a minimum.
# * The residual shrinks relative to the GGN (:math:`|H-G|_F / |G|_F` from about 3 to
#   0.1), but not monotonically at the end: its weight
#   :math:`p - \text{onehot}(y)` falls, while the network's second derivatives grow
#   with the weights.

# %% [markdown]
# The spectra
# -----------
#
# Sorted eigenvalues, on a symmetric-log axis (linear within :math:`\pm 10^{-4}`) so that
# the negative and the positive ones are both visible.

# %%

shown = [e for e in EPOCHS if e in spectra]
fig, axes = plt.subplots(1, len(shown), figsize=(3.0 * len(shown), 3.6), sharey=True)
for ax, epoch in zip(axes, shown):
    s = spectra[epoch]
    for key, label, color in [("H", "Hessian", "k"), ("G", "GGN", "tab:blue"), ("Res", "H - GGN", "tab:red")]:
        ax.plot(s[key], color=color, lw=1.2, label=label)
    ax.axhline(0, color="gray", lw=0.5)
    ax.set_yscale("symlog", linthresh=1e-4)
    ax.set_title(f"epoch {epoch}\nloss {s['loss']:.3f}")
    ax.set_xlabel("eigenvalue index")
axes[0].set_ylabel("eigenvalue")
axes[0].legend(loc="upper left", fontsize=8)
fig.tight_layout()

# %% [markdown]
# The negative curvature against the loss
# ---------------------------------------

# %%

fig, ax = plt.subplots(figsize=(6, 4))
losses = [spectra[e]["loss"] for e in shown]
ax.plot(losses, [-spectra[e]["H"].min() for e in shown], "o-k", label="-(smallest eigenvalue of H)")
ax.plot(losses, [-spectra[e]["Res"].min() for e in shown], "s--", color="tab:red",
        label="-(smallest eigenvalue of H - GGN)")
ax.plot(losses, [-spectra[e]["H"][spectra[e]["H"] < 0].sum() for e in shown], "^-", color="tab:purple",
        label="-(sum of H's negative eigenvalues)")
for e, x in zip(shown, losses):
    ax.annotate(f"epoch {e}", (x, -spectra[e]["H"].min()), textcoords="offset points", xytext=(4, -10),
                fontsize=7)
ax.set_xscale("log")
ax.set_yscale("log")
ax.invert_xaxis()
ax.set_xlabel("training loss (decreasing to the right)")
ax.set_ylabel("magnitude of negative curvature")
ax.legend(fontsize=8)
fig.tight_layout()
