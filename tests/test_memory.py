"""Arrays refused before they are allocated (``refprune/memory.py``): the threshold of the
refusal against the memory available, where its names are importable, and refusals
that depend on the memory available rather than on absurd sizes (the bad-input table
holds the absurd ones)."""

import numpy as np
import pytest

import refprune as rp
from refprune import memory
from refprune.curvature import exact

from cases import make


def test_names_are_shared_with_the_exact_module():
    assert exact.available_memory is memory.available_memory
    assert rp.CurvatureTooLargeError is memory.CurvatureTooLargeError is exact.CurvatureTooLargeError
    assert issubclass(memory.CurvatureTooLargeError, memory.ArrayTooLargeError)
    assert issubclass(memory.ArrayTooLargeError, MemoryError)


def test_check_fits_threshold_and_message(monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda: 2**30)
    memory.check_fits(2**30, "f", "the thing")  # exactly what is available fits
    with pytest.raises(memory.ArrayTooLargeError) as err:
        memory.check_fits(2**30 + 1, "f", "the thing", hint="; do less")
    assert str(err.value) == "f: the thing would need 1.00 GiB but only 1.00 GiB are available; do less"
    # small allocations are not checked at all (no /proc read)
    monkeypatch.setattr(memory, "available_memory", lambda: 0)
    memory.check_fits(memory.ALWAYS_FITS, "f", "a small thing")
    with pytest.raises(memory.ArrayTooLargeError, match="but only 0.00 GiB are available"):
        memory.check_fits(memory.ALWAYS_FITS + 1, "f", "a thing")
    with pytest.raises(memory.CurvatureTooLargeError):
        memory.check_fits(2**40, "f", "a matrix", error=memory.CurvatureTooLargeError)


def test_sizes_are_python_integers():
    # no int64 wrap-around for absurd shapes
    assert memory.nbytes((2**40, 2**40)) == 2**83
    assert rp.Conv2d(2**20, 2**20, 2**12).n_params == 2**64 + 2**20
    assert rp.Conv2d(2**20, 2**20, 2**12).n_weight == 2**64


def test_refusals_follow_the_memory_available(monkeypatch):
    """Sizes that fit on a large machine are refused on a small one, and the same call
    succeeds once the memory is there (the check is not a fixed size limit)."""
    model = rp.Sequential(rp.Linear(1500, 1500))
    X = np.random.default_rng(0).standard_normal((2, 1500))
    args = (model, model.init(0), X, X.copy(), rp.MSELoss())
    n = model.n_params  # 2,251,500: a dense matrix of 37.8 GiB
    monkeypatch.setattr(memory, "available_memory", lambda: 2**34)
    with pytest.raises(rp.CurvatureTooLargeError, match=rf"KFAC.to_dense: the {n} x {n} float64 matrix"):
        rp.kfac(*args, curvature="empirical_fisher").to_dense()
    # the factors (1500^2 + 1501^2 floats, 34 MiB) need more than a 32 MiB machine has
    monkeypatch.setattr(memory, "available_memory", lambda: 2**25)
    with pytest.raises(rp.CurvatureTooLargeError, match="kfac: the Kronecker factors S and A"):
        rp.kfac(*args, curvature="empirical_fisher")
    monkeypatch.setattr(memory, "available_memory", lambda: 2**26)
    assert len(rp.kfac(*args, curvature="empirical_fisher").blocks) == 1
    with pytest.raises(memory.ArrayTooLargeError, match="init: the 2251500 float64 parameters"):
        monkeypatch.setattr(memory, "available_memory", lambda: 2**24)
        model.init(0)


def test_block_diagonal_counts_every_block(monkeypatch):
    """Two layers whose blocks fit one at a time but not together are refused."""
    m, p, X, y, l = make("mlp-tanh", "mse-mean", n=3)
    need = sum(layer.n_params ** 2 * 8 for layer in m if isinstance(layer, rp.nn.AffineLayer))
    seed = max(min(layer.n_params, layer.out_units) ** 2 * 8 for layer in m if isinstance(layer, rp.nn.AffineLayer))
    monkeypatch.setattr(memory, "ALWAYS_FITS", 0)
    monkeypatch.setattr(memory, "available_memory", lambda: need + seed)
    assert len(rp.block_diagonal(m, p, X, y, l).blocks) == 2
    monkeypatch.setattr(memory, "available_memory", lambda: need + seed - 1)
    with pytest.raises(rp.CurvatureTooLargeError, match="block_diagonal: the diagonal blocks of every layer"):
        rp.block_diagonal(m, p, X, y, l)


def test_a_seed_list_draws_as_numpy_does_and_is_repeatable():
    """``seed=[3, 1]`` (the optimizers' ``[seed, steps]``) is accepted and draws what
    ``numpy.random.default_rng([3, 1])`` draws; the same seed gives the same factors."""
    from refprune.curvature.output_factors import draw_targets
    from refprune.checks import validate

    m, p, X, y, l = make("mlp-tanh", "ce-mean", n=6)
    inp = validate(m, p, X, y, l)
    f = m(p, X)
    expect = l.sample(f, np.random.default_rng([3, 1]), 2)
    assert np.array_equal(draw_targets(inp, f, 2, [3, 1]), expect)
    a = rp.kfac(m, p, X, y, l, curvature="mc_fisher", samples=2, seed=[3, 1]).factors()
    b = rp.kfac(m, p, X, y, l, curvature="mc_fisher", samples=2, seed=(3, 1)).factors()
    for (S1, A1), (S2, A2) in zip(a, b):
        assert np.array_equal(S1, S2) and np.array_equal(A1, A2)
    with pytest.raises(TypeError, match="draw_targets: seed must be an int >= 0 or a list of them, got 'a'"):
        draw_targets(inp, f, 2, "a")
