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


def _refused_below(monkeypatch, call, need, words):
    """``call`` passes with ``need`` bytes available and is refused with one byte less."""
    from refprune import memory

    monkeypatch.setattr(memory, "ALWAYS_FITS", 0)
    monkeypatch.setattr(memory, "available_memory", lambda: need)
    call()
    monkeypatch.setattr(memory, "available_memory", lambda: need - 1)
    with pytest.raises(rp.CurvatureTooLargeError, match=words):
        call()


def test_the_blocks_and_the_seed_of_each_layer_are_counted(monkeypatch):
    """Conv2d(1, 1, 1) -> Flatten -> Linear(16, 2) on 1 x 4 x 4 inputs: blocks 2 x 2 and
    34 x 34.  docs §12's seeds: the convolution's 2 parameters are fewer directions than
    its 16 outputs (the parameter-Jacobian seed, 2 x 2); the Linear layer's 2 outputs are
    fewer than its 34 parameters (the identity seed on its output, 2 x 2).  A seed of the
    convolution's 16 outputs, or of another layer's shape, would need 16 x 16."""
    from refprune.checks import validate

    model = rp.Sequential(rp.Conv2d(1, 1, 1), rp.Flatten(), rp.Linear(16, 2))
    params = model.init(seed=0)
    rng = np.random.default_rng(1)
    inp = validate(model, params, rng.standard_normal((3, 1, 4, 4)), rng.standard_normal((3, 2)), rp.MSELoss())
    need = 8 * (2 * 2 + 34 * 34) + 8 * 2 * 2
    _refused_below(monkeypatch, lambda: exact.check_blocks_fit(inp, "block_diagonal"), need, "^" + re.escape(
        "block_diagonal: the diagonal blocks of every layer (the largest, of Linear(16, 2, bias=True), 34 x 34 "
        "float64) would need "))


def test_of_layers_of_the_same_size_the_first_is_named(monkeypatch):
    """Linear(5, 2) and Linear(2, 4) both have 12 parameters: the refusal names the first,
    as ``max`` would."""
    from refprune.checks import validate

    model = rp.Sequential(rp.Linear(5, 2), rp.Tanh(), rp.Linear(2, 4))
    params = model.init(seed=0)
    rng = np.random.default_rng(1)
    inp = validate(model, params, rng.standard_normal((3, 5)), rng.standard_normal((3, 4)), rp.MSELoss())
    from refprune import memory

    monkeypatch.setattr(memory, "ALWAYS_FITS", 0)
    monkeypatch.setattr(memory, "available_memory", lambda: 0)
    with pytest.raises(rp.CurvatureTooLargeError, match=re.escape("(the largest, of Linear(5, 2, bias=True), 12 x 12")):
        exact.check_blocks_fit(inp, "block_diagonal")
