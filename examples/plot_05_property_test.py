# %% [markdown]
r"""
Property-testing your own function against refprune
===================================================

A unit test checks one network you thought of; a *property test* checks a statement
("my function equals the reference") on many networks drawn for you, and when it fails
it shrinks the failure to a small example.  ``refprune.testing.strategies`` has
`hypothesis <https://hypothesis.readthedocs.io>`_ strategies that draw architectures,
parameters, data and losses; ``refprune.testing`` has the assertion helpers.

The function under test here is one a reader of LeCun, Denker & Solla (1990) writes by
hand: OBD's approximate Hessian diagonal for a multilayer perceptron with squared error,
by back-propagating second derivatives and dropping every cross term (their eqs. 7-9;
``docs/derivations.md`` §7).  It is checked against ``rp.obd_diagonal``, and in the one
case where OBD's diagonal is exact, against the exact Hessian diagonal.  Then a planted
bug is caught.  This example needs hypothesis (``pip install 'refprune[test]'``) and
matplotlib.
"""

# %% [markdown]
# The user's OBD diagonal
# -----------------------
#
# For a network of ``Linear`` layers (:math:`z = W x + b`) and elementwise activations
# (:math:`x' = \phi(z)`) with loss :math:`L = R \sum_n \sum_k (f_k(x_n) - t_{nk})^2`, OBD
# carries one number per unit and sample, the approximation :math:`h` of
# :math:`\partial^2 \ell_n / \partial z^2` with the cross terms dropped (LeCun et al.
# 1990, eqs. 7-9; ``docs/derivations.md`` §7):
#
# * at the output, :math:`h = 2` (the diagonal of :math:`\Lambda = 2I` for squared
#   error, ``docs/conventions.md`` §3), and the gradient
#   :math:`\delta = 2 (f - t)`;
# * back through a ``Linear`` layer, :math:`h_x = (W \circ W)^\top h_z` and
#   :math:`\delta_x = W^\top \delta_z`;
# * back through an activation, :math:`h_z = \phi'(z)^2 h_x + \phi''(z)\, \delta_x`
#   and :math:`\delta_z = \phi'(z)\, \delta_x`;
# * a weight's entry is :math:`R \sum_n h_{z,i}\, x_j^2`, a bias's :math:`R \sum_n h_{z,i}`.
#
# :math:`R` is PyTorch's scaling: 1 for ``reduction="sum"``, :math:`1/(NC)` for
# ``"mean"`` (``docs/conventions.md`` §2).  The derivatives of the three smooth
# activations are written out below; ``square`` is the switch that plants the bug.

# %%

import os

# One BLAS thread, as the studies do (validation/report.py), unless you set otherwise: the
# matrices here are small, where threads on a busy machine cost more than they save, and the
# printed numbers are then the same bits whatever the machine's thread count.
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import matplotlib.pyplot as plt
import numpy as np
from hypothesis import Phase, given, settings
from hypothesis.errors import HypothesisException

import refprune as rp
from refprune.testing import assert_close
from refprune.testing.strategies import SMOOTH_ACTIVATIONS, losses, mlps, problems

EXAMPLES = 200  # drawn networks per property


def activation(layer, z):
    """phi(z), phi'(z) and phi''(z) of a smooth activation."""
    if isinstance(layer, rp.Tanh):
        t = np.tanh(z)
        return t, 1 - t**2, -2 * t * (1 - t**2)
    s = 1 / (1 + np.exp(-z))  # sigmoid; also the derivative of softplus
    if isinstance(layer, rp.Sigmoid):
        return s, s * (1 - s), s * (1 - s) * (1 - 2 * s)
    if isinstance(layer, rp.Softplus):
        return np.logaddexp(0, z), s, s * (1 - s)
    raise TypeError(f"my_obd_diagonal: no derivatives for {layer!r}")


def my_obd_diagonal(model, params, X, y, loss, square=True):
    """OBD's diagonal of an MLP with squared error, in theta order (PyTorch's)."""
    groups = model.group_params(params)  # the parameter arrays of each layer, in order
    inputs, x = [], X
    for layer, p in zip(model, groups):  # forward pass, keeping every layer's input
        inputs.append(x)
        x = x @ p[0].T + (p[1] if len(p) > 1 else 0) if isinstance(layer, rp.Linear) else activation(layer, x)[0]
    N, C = x.shape
    R = 1.0 if loss.reduction == "sum" else 1.0 / (N * C)
    h, delta = np.full((N, C), 2.0), 2 * (x - y)
    pieces = []
    for layer, p, x_in in reversed(list(zip(model, groups, inputs))):
        if isinstance(layer, rp.Linear):
            W = p[0]
            pieces.append([R * h.T @ x_in**2] + ([R * h.sum(axis=0)] if len(p) > 1 else []))
            h, delta = h @ (W**2 if square else W), delta @ W
        else:
            _, d1, d2 = activation(layer, x_in)
            h, delta = d1**2 * h + d2 * delta, d1 * delta
    return np.concatenate([a.ravel() for layer_pieces in reversed(pieces) for a in layer_pieces])


# %% [markdown]
# The property
# ------------
#
# ``problems()`` draws a :class:`~refprune.testing.strategies.Problem`
# ``(model, params, X, y, loss)``; here MLPs of up to three layers and five units wide
# with smooth activations (``SMOOTH_ACTIVATIONS``: tanh, sigmoid, softplus), with or
# without biases, parameter scales that saturate the units or not, and squared error with
# either reduction.  ``settings(derandomize=True)`` makes the run deterministic.  The
# ``@given`` function is an ordinary function: calling it runs the whole test.

# %%

mse_mlps = problems(architectures=mlps(activations=SMOOTH_ACTIVATIONS), losses=losses(kinds=("mse",)))
errors = {"correct": [], "W instead of W**2": []}


def relative_error(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def property_test(square):
    # without hypothesis's "explain" phase, which lists the library lines only failing runs reached
    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate, Phase.shrink])
    @given(mse_mlps)
    def test_my_obd_diagonal_is_refprunes(p):
        ref = rp.obd_diagonal(p.model, p.params, p.X, p.y, p.loss)
        mine = my_obd_diagonal(p.model, p.params, p.X, p.y, p.loss, square=square)
        errors["correct" if square else "W instead of W**2"].append(relative_error(mine, ref))
        assert_close(mine, ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max(), what=f"OBD diagonal of {p.model!r}")

    return test_my_obd_diagonal_is_refprunes


property_test(square=True)()  # passes: no output
print(f"{len(errors['correct'])} drawn networks, largest relative error {max(errors['correct']):.1e}")

# %% [markdown]
# A second, independent check
# ---------------------------
#
# ``rp.obd_diagonal`` is refprune's code, so agreeing with it could mean sharing a
# misreading of the paper.  OBD's diagonal is *exact* where no cross term can reach the
# diagonal: with at most one hidden layer and squared error, whose :math:`\Lambda = 2I`
# is diagonal (``docs/derivations.md`` §7).  There the user's function must equal the
# exact Hessian diagonal, ``rp.hessian_diagonal``, computed by a different algorithm
# (Hessian back-propagation with all cross terms, ``docs/derivations.md`` §7), and
# itself tested against finite differences.

# %%


@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None)
@given(problems(architectures=mlps(max_depth=2, activations=SMOOTH_ACTIVATIONS), losses=losses(kinds=("mse",))))
def test_exact_with_one_hidden_layer(p):
    exact = rp.hessian_diagonal(p.model, p.params, p.X, p.y, p.loss)
    mine = my_obd_diagonal(p.model, p.params, p.X, p.y, p.loss)
    assert_close(mine, exact, rtol=1e-9, atol=1e-12 * np.abs(exact).max(), what="OBD against the exact diagonal")


test_exact_with_one_hidden_layer()
print("with at most one hidden layer, the user's OBD diagonal is the exact Hessian diagonal")

# %% [markdown]
# A planted bug
# -------------
#
# Back-propagating :math:`h` through :math:`W` instead of :math:`W \circ W` is an easy slip
# (the gradient does go through :math:`W`).  On a network without a hidden layer nothing
# is back-propagated and the bug is invisible; hypothesis finds a network where it is
# not, shrinks it, and re-raises the failure with the smallest example it found attached
# ("Falsifying example", in the exception's notes).  We catch and print both.

# %%

try:
    property_test(square=False)()
except (AssertionError, HypothesisException) as err:
    notes = "\n".join(getattr(err, "__notes__", []))  # hypothesis's "Falsifying example: ..."
    print(f"caught {type(err).__name__}:\n{err}\n{notes}")
else:
    raise RuntimeError("the planted bug was not caught")

# %% [markdown]
# The errors on every drawn network
# ---------------------------------
#
# The relative error of each example the two runs drew (the failing run stops at its
# first failure and then only shrinks, so it has fewer; those at rounding are networks
# without a hidden layer, where the bug is invisible).  The correct function sits at
# rounding on every one; the dashed line is the test's tolerance.

# %%

fig, ax = plt.subplots(figsize=(6, 3.5))
bins = np.logspace(-17, 2, 39)
for label, color in [("correct", "tab:green"), ("W instead of W**2", "tab:red")]:
    e = np.maximum(np.array(errors[label]), 1e-17)
    ax.hist(e, bins=bins, color=color, alpha=0.7, label=f"{label} ({len(e)} examples)")
ax.axvline(1e-10, color="k", ls="--", lw=1, label="rtol 1e-10")
ax.set_xscale("log")
ax.set_xlabel("relative error against rp.obd_diagonal (zero shown at 1e-17)")
ax.set_ylabel("examples")
ax.legend(fontsize=8)
fig.tight_layout()
