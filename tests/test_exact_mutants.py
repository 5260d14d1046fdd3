"""``refprune.curvature.exact``: options that do not apply are refused by the function
the user called, and the Monte Carlo draws are checked only when there are draws to make
(``docs/conventions.md``: an option that does not apply is refused, never ignored)."""

import re

import numpy as np
import pytest

import refprune as rp
from refprune.curvature import exact


def _problem():
    model = rp.Sequential(rp.Linear(3, 4), rp.Tanh(), rp.Linear(4, 3))
    params = model.init(seed=1)
    rng = np.random.default_rng(2)
    return model, params, rng.standard_normal((5, 3)), rng.integers(0, 3, 5), rp.CrossEntropyLoss()


@pytest.mark.parametrize("curvature", ["hessian", "ggn", "fisher", "empirical_fisher"])
def test_block_diagonal_refuses_targets_for_a_curvature_that_draws_nothing(curvature):
    m, p, X, y, l = _problem()
    targets = np.zeros((2, 5), dtype=np.int64)
    with pytest.raises(ValueError, match="^" + re.escape(
            f"block_diagonal: targets= is for curvature='mc_fisher', got curvature={curvature!r} (only Monte Carlo "
            "draws read it; leave it out)") + "$"):
        rp.block_diagonal(m, p, X, y, l, curvature=curvature, targets=targets)


@pytest.mark.parametrize("curvature, targets, checked", [
    ("hessian", False, 0), ("ggn", False, 0), ("fisher", False, 0), ("empirical_fisher", False, 0),
    ("mc_fisher", False, 1), ("mc_fisher", True, 0)])
def test_block_diagonal_checks_the_memory_of_draws_only_when_it_draws(monkeypatch, curvature, targets, checked):
    """The draws of ``samples`` targets per sample are refused up front if they would not
    fit; a curvature that draws nothing, or draws given as ``targets=``, needs no such
    memory and must not be refused for it."""
    m, p, X, y, l = _problem()
    calls = []
    real = exact.check_draws
    monkeypatch.setattr(exact, "check_draws", lambda *a: (calls.append(a[1:]), real(*a))[1])
    kw = {}
    if curvature == "mc_fisher":
        kw = dict(targets=np.random.default_rng(4).integers(0, 3, (2, 5))) if targets else dict(samples=2, seed=3)
    rp.block_diagonal(m, p, X, y, l, curvature=curvature, **kw)
    assert calls == [(2, 3, "block_diagonal")] * checked
