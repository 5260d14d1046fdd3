"""``layer_blocks`` and ``check_blocks_fit`` (refprune/curvature/exact.py) against their
documented contracts, with the memory available fixed by the test
(``refprune.memory.available_memory`` and ``ALWAYS_FITS`` replaced):

- ``check_blocks_fit`` refuses ``sum_l 8 n_l^2`` bytes of diagonal blocks plus the
  identity seed of the largest layer, ``8 K^2`` with ``K = n_l`` for the parameter-Jacobian
  seed and ``K`` = the size of the layer's output for the identity seed on ``z_l``; the
  sizes are worked out here by hand from the architecture, and the check must refuse one
  byte less and accept exactly that much;
- the Monte Carlo draws (and their memory) belong to ``curvature="mc_fisher"`` only, and a
  ``targets=`` given with another curvature is refused (``refuse_monte_carlo_options``)."""

import numpy as np
import pytest

import refprune as rp
from refprune import memory
from refprune.checks import validate
from refprune.curvature import exact


def _memory(monkeypatch, available):
    """Every allocation checked (no size below which it is skipped), against ``available`` bytes."""
    monkeypatch.setattr(memory, "ALWAYS_FITS", 0)
    monkeypatch.setattr(memory, "available_memory", lambda: available)


def _two_linears():
    # Linear(2, 5) then Linear(5, 3) with nothing between: the second layer's input is the
    # output of the first, the first's input is the batch (2 features), the network's output 3
    model = rp.Sequential(rp.Linear(2, 5), rp.Linear(5, 3))
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((4, 2)), rng.standard_normal((4, 3))
    return validate(model, model.init(0), X, y, rp.MSELoss())


# n_0 = 2 * 5 + 5 = 15, n_1 = 5 * 3 + 3 = 18 parameters; blocks 8 (15^2 + 18^2) = 4,392 bytes
BLOCKS = 8 * (15**2 + 18**2)
#: the seed of the largest: identity seeds K = 5 (layer 0's output), 3 (layer 1's output);
#: parameter-Jacobian seeds K = 15, 18
NEED = {"identity": BLOCKS + 8 * 5**2, "jacobian": BLOCKS + 8 * 18**2}


@pytest.mark.parametrize("seed", ["identity", "jacobian"])
def test_check_blocks_fit_refuses_the_blocks_and_the_seed_to_the_byte(monkeypatch, seed):
    inp = _two_linears()
    monkeypatch.setattr(exact, "_FORCE_SEED", seed)
    _memory(monkeypatch, NEED[seed])
    exact.check_blocks_fit(inp, "block_diagonal")  # exactly enough: accepted
    _memory(monkeypatch, NEED[seed] - 1)
    with pytest.raises(memory.CurvatureTooLargeError) as e:
        exact.check_blocks_fit(inp, "block_diagonal")
    assert str(e.value).startswith("block_diagonal: the diagonal blocks of every layer (the largest, of "
                                   "Linear(5, 3, bias=True), 18 x 18 float64) would need ")


def test_check_blocks_fit_with_the_seed_the_assembly_chooses(monkeypatch):
    """Without a forced seed the refused size is the one of the seed ``_jacobian_seed``
    picks for each layer (the two needs above differ, so the choice shows)."""
    inp = _two_linears()
    shapes = exact._in_shapes(inp.model, inp.X.shape[1:])
    k = [15 if exact._jacobian_seed(inp.model, 0, shapes) else 5, 18 if exact._jacobian_seed(inp.model, 1, shapes)
         else 3]
    need = BLOCKS + 8 * max(k) ** 2
    _memory(monkeypatch, need)
    exact.check_blocks_fit(inp, "block_diagonal")
    _memory(monkeypatch, need - 1)
    with pytest.raises(memory.CurvatureTooLargeError):
        exact.check_blocks_fit(inp, "block_diagonal")


def _wide_output(n=200):
    # Linear(1, 10), squared error, 200 samples: a draw of the targets needs two (1, N, C)
    # float64 arrays, 2 * 8 * 200 * 10 = 32,000 bytes, more than the forward pass's
    # 8 * 200 * (10 + 1 + 1) = 19,200 and the blocks' 8 * (20^2 + 10^2) = 4,000
    model = rp.Sequential(rp.Linear(1, 10))
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((n, 1)), rng.standard_normal((n, 10))
    return model, model.init(1), X, y, rp.MSELoss()


def test_only_the_monte_carlo_fisher_asks_for_the_memory_of_draws(monkeypatch):
    args = _wide_output()
    _memory(monkeypatch, 25_000)  # the forward pass and the blocks fit, one draw of the targets does not
    with pytest.raises(memory.ArrayTooLargeError) as e:
        rp.block_diagonal(*args, curvature="mc_fisher")
    assert str(e.value).startswith("block_diagonal: 1 Monte Carlo target(s) for each of 200 sample(s) with 10 "
                                   "outputs would need ")
    # the same memory is enough for every curvature that draws nothing: the blocks are those
    # of the whole matrix (computed with the memory unchecked)
    got = {c: rp.block_diagonal(*args, curvature=c).to_dense() for c in ("ggn", "fisher", "hessian", "empirical_fisher")}
    monkeypatch.undo()
    for c, blocks in got.items():
        assert np.allclose(blocks, rp.block_diagonal(*args, curvature=c).to_dense(), rtol=1e-12, atol=0)
    # targets given: nothing is drawn, so nothing is refused for draws either
    _memory(monkeypatch, 25_000)
    T = np.random.default_rng(2).standard_normal((1, 200, 10))
    rp.block_diagonal(*args, curvature="mc_fisher", targets=T)


@pytest.mark.parametrize("curvature", ["ggn", "hessian", "fisher", "empirical_fisher"])
def test_targets_are_refused_for_a_curvature_that_draws_nothing(curvature):
    model, params, X, y, loss = _wide_output(5)
    T = np.zeros((1, 5, 10))
    with pytest.raises(ValueError) as e:
        rp.block_diagonal(model, params, X, y, loss, curvature=curvature, targets=T)
    assert str(e.value) == (f"block_diagonal: targets= is for curvature='mc_fisher', got curvature={curvature!r} "
                            "(only Monte Carlo draws read it; leave it out)")
    with pytest.raises(ValueError) as e:
        exact.layer_blocks(validate(model, params, X, y, loss), curvature, 1, 0, T)
    assert str(e.value) == (f"block_diagonal: targets= is for curvature='mc_fisher', got curvature={curvature!r} "
                            "(only Monte Carlo draws read it; leave it out)")


def test_the_blocks_and_the_seed_of_each_layer_are_counted(monkeypatch):
    """Conv2d(1, 1, 1) -> Flatten -> Linear(16, 2) on 1 x 4 x 4 inputs: blocks 2 x 2 and
    34 x 34.  docs §12's seeds: the convolution's 2 parameters are fewer directions than
    its 16 outputs (the parameter-Jacobian seed, 2 x 2); the Linear layer's 2 outputs are
    fewer than its 34 parameters (the identity seed on its output, 2 x 2).  A seed of the
    convolution's 16 outputs, or of another layer's shape, would need 16 x 16."""
    model = rp.Sequential(rp.Conv2d(1, 1, 1), rp.Flatten(), rp.Linear(16, 2))
    rng = np.random.default_rng(1)
    inp = validate(model, model.init(seed=0), rng.standard_normal((3, 1, 4, 4)), rng.standard_normal((3, 2)),
                   rp.MSELoss())
    need = 8 * (2 * 2 + 34 * 34) + 8 * 2 * 2
    _memory(monkeypatch, need)
    exact.check_blocks_fit(inp, "block_diagonal")
    _memory(monkeypatch, need - 1)
    with pytest.raises(memory.CurvatureTooLargeError) as e:
        exact.check_blocks_fit(inp, "block_diagonal")
    assert str(e.value).startswith("block_diagonal: the diagonal blocks of every layer (the largest, of "
                                   "Linear(16, 2, bias=True), 34 x 34 float64) would need ")


def test_of_layers_of_the_same_size_the_first_is_named(monkeypatch):
    """Linear(5, 2) and Linear(2, 4) both have 12 parameters: the refusal names the first,
    as ``max`` would."""
    model = rp.Sequential(rp.Linear(5, 2), rp.Tanh(), rp.Linear(2, 4))
    rng = np.random.default_rng(1)
    inp = validate(model, model.init(seed=0), rng.standard_normal((3, 5)), rng.standard_normal((3, 4)), rp.MSELoss())
    _memory(monkeypatch, 0)
    with pytest.raises(memory.CurvatureTooLargeError) as e:
        exact.check_blocks_fit(inp, "block_diagonal")
    assert "(the largest, of Linear(5, 2, bias=True), 12 x 12 float64)" in str(e.value)


def test_block_diagonal_refuses_blocks_that_do_not_fit_naming_itself(monkeypatch):
    inp = _two_linears()
    monkeypatch.setattr(exact, "_FORCE_SEED", "jacobian")
    _memory(monkeypatch, NEED["jacobian"] - 1)
    with pytest.raises(memory.CurvatureTooLargeError, match=r"^block_diagonal: the diagonal blocks of every layer"):
        rp.block_diagonal(inp.model, inp.model.init(0), inp.X, inp.y, inp.loss)
