"""``minimize`` with every coordinate frozen: SciPy is not called, and the result it
would have given is written by hand: SciPy's ``OptimizeResult`` fields (``x`` empty,
``fun`` the objective at the point, computed here from ``rp.loss``, success, status 0,
no iteration, the message) and no Hessian formed."""

import numpy as np
import pytest

import refprune as rp
from refprune import minimizer
from refprune.params import flatten_params

from cases import small_mlp


def test_the_scipy_result_of_a_frozen_point(monkeypatch):
    model, params, X, y, loss = small_mlp(n=6)
    t = flatten_params(params)

    def no_hessian(*args, **kwargs):
        raise AssertionError("a Hessian was formed with nothing free")

    monkeypatch.setattr(minimizer, "hessian", no_hessian)
    monkeypatch.setattr(minimizer.scipy.optimize, "minimize", no_hessian)
    r = rp.minimize(model, params, X, y, loss, weight_decay=0.1, mask=np.zeros(t.size, bool))
    res = r.scipy_result
    assert isinstance(res, minimizer.scipy.optimize.OptimizeResult)
    assert res.x.shape == (0,) and res.x.dtype == np.float64
    assert res.fun == pytest.approx(rp.loss(model, params, X, y, loss) + 0.05 * float(t @ t), rel=1e-13)
    assert res.success is True and r.success is True
    assert res.status == 0 and res.nit == 0
    assert res.message == "no free coordinates: nothing to minimise"
