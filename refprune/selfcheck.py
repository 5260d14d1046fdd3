"""A self-check of the installed package, without pytest: on the conformance zoo, the
gradient, Hessian-vector product and Hessian against finite differences (smooth
networks), and identities between the curvature matrices that hold exactly (every
network): ``fisher == ggn``, ``hessian == ggn + residual``, the diagonals and the
operator against the dense matrices, K-FAC against the exact block for one sample.

Each check reports an error and its tolerance: the identities their largest difference over
``max(1, max |H|)``, within 1e-12 (the Hessian-vector product, another route, within
1e-11); the finite-difference checks the ratio of their error to its allowance
(:mod:`refprune.testing.finite_differences`, ``rtol`` 1e-6 for the gradient and 1e-5
for the second derivatives), within 1.  Finite differences run only on networks without
``ReLU`` or ``MaxPool2d``, whose kinks a difference step may cross."""

import sys

import numpy as np

from . import curvature as C
from . import derivatives as D
from .conformance.zoo import make_case, zoo
from .nn import ReLU, MaxPool2d
from .params import flatten_params, unflatten_params
from .testing.finite_differences import check_grad, check_hessian, check_hvp


def _checks(case):
    """``(name, error, tolerance, note)`` of every check of ``case``."""
    args = case.args()
    model = case.model
    smooth = not any(isinstance(layer, (ReLU, MaxPool2d)) for layer in model)
    H, G = C.hessian(*args), C.ggn(*args)
    scale = max(1.0, float(np.abs(H).max()))
    yield "fisher == ggn", float(np.abs(C.fisher(*args) - G).max()) / scale, 1e-12, ""
    yield "hessian == ggn + residual", float(np.abs(C.residual(*args) + G - H).max()) / scale, 1e-12, ""
    yield "hessian_diagonal == diag(H)", float(np.abs(C.hessian_diagonal(*args) - np.diag(H)).max()) / scale, 1e-12, ""
    yield "hvp == H v", float(np.abs(D.hvp(*args, case.v) - H @ case.v).max()) / scale, 1e-11, ""
    if smooth:
        def loss(t):
            return D.loss(model, unflatten_params(model, t), *args[2:])

        def grad(t):
            return D.grad(model, unflatten_params(model, t), *args[2:])

        theta = flatten_params(case.params)
        yield _finite_differences("gradient vs finite differences", lambda: check_grad(loss, grad, theta, rtol=1e-6))
        yield _finite_differences("Hessian vs finite differences", lambda: check_hessian(grad, H, theta, rtol=1e-5))
        yield _finite_differences("HVP vs finite differences", lambda: check_hvp(
            grad, lambda t, v: D.hvp(model, unflatten_params(model, t), *args[2:], v), theta, rtol=1e-5))


def _finite_differences(name, check):
    """``(name, error, 1.0, note)`` of a finite-difference check: its error over its
    allowance, or, where it raises on a mismatch, infinity and its message as the note."""
    try:
        return name, check().error, 1.0, ""
    except AssertionError as e:
        return name, float("inf"), 1.0, str(e)


def run(verbose=True, cases=None):
    """Run every check on ``cases`` (default: every architecture of the conformance zoo with
    the losses ``ce-mean``, ``mse-sum`` and ``bce-mean``); ``True`` if all passed."""
    cases = zoo(losses=["ce-mean", "mse-sum", "bce-mean"]) if cases is None else cases
    ok = True
    for case in cases:
        for name, err, tol, note in _checks(case):
            passed = err <= tol
            ok &= passed
            if verbose or not passed:
                print(f"{'ok  ' if passed else 'FAIL'} {case.name:40s} {name:32s} {err:.2e} (<= {tol:g})"
                      + (f": {note}" if note else ""))
    one = make_case("mlp-tanh", "ce-mean", n=1)
    K, G = C.kfac(*one.args()), C.ggn(*one.args())
    off = one.model.param_offsets()
    err = max(float(np.abs(b.dense() - G[off[j]:off[j + 1], off[j]:off[j + 1]]).max()) for b, j in zip(K.blocks, (0, 2)))
    ok &= err <= 1e-12
    print(f"{'ok  ' if err <= 1e-12 else 'FAIL'} {'mlp-tanh, one sample':40s} {'K-FAC == exact GGN block':32s} {err:.2e}")
    print("self-check " + ("passed" if ok else "FAILED"), file=sys.stderr)
    return ok
