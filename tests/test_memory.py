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
    # the GiB read the same, so each is given in bytes too
    assert str(err.value) == ("f: the thing would need 1.00 GiB (1,073,741,825 bytes) but only 1.00 GiB "
                              "(1,073,741,824 bytes) are available; do less")
    with pytest.raises(memory.ArrayTooLargeError) as err:
        memory.check_fits(2**30 + 2**23, "f", "the thing")
    assert str(err.value) == "f: the thing would need 1.01 GiB but only 1.00 GiB are available"
    with pytest.raises(memory.ArrayTooLargeError) as err:
        memory.check_fits(7688, "f", "the thing", limit=(100, "max_bytes"))
    assert str(err.value) == ("f: the thing would need 0.00 GiB (7,688 bytes) but only 0.00 GiB (100 bytes) may "
                              "be used (max_bytes)")
    # a limit below zero (memory available less the temporaries) is said as 0 bytes
    with pytest.raises(memory.ArrayTooLargeError) as err:
        memory.check_fits(1, "f", "the thing", limit=(-5, "what is left"))
    assert str(err.value) == "f: the thing would need 0.00 GiB (1 byte) but only 0.00 GiB (0 bytes) may be used (what is left)"
    # small allocations are not checked at all (no /proc read)
    monkeypatch.setattr(memory, "available_memory", lambda: 0)
    memory.check_fits(memory.ALWAYS_FITS, "f", "a small thing")
    with pytest.raises(memory.ArrayTooLargeError, match=r"would need 0.02 GiB but only 0.00 GiB are available$"):
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


def _boundary(monkeypatch, call, need, words):
    """``call`` succeeds with exactly ``need`` bytes available and is refused, naming
    ``words``, with one byte less (every check active: no small-allocation shortcut)."""
    monkeypatch.setattr(memory, "ALWAYS_FITS", 0)
    monkeypatch.setattr(memory, "available_memory", lambda: need)
    call()
    monkeypatch.setattr(memory, "available_memory", lambda: need - 1)
    with pytest.raises(memory.ArrayTooLargeError, match=words):
        call()
    monkeypatch.setattr(memory, "available_memory", lambda: 2**62)


def test_each_refusal_counts_the_bytes_its_arrays_take(monkeypatch):
    """The byte counts, by hand, at the threshold (a count off by a factor or a term
    would move it)."""
    from refprune.checks import check_array
    from refprune.curvature.kronecker import check_factors_fit
    from refprune.curvature.output_factors import check_draws, hessian_sqrt
    from refprune.checks import validate

    rng = np.random.default_rng(0)
    # parameters: 7 * 5 + 5 = 40 floats
    _boundary(monkeypatch, lambda: rp.Linear(7, 5).init(rng), 40 * 8, r"init: the 40 float64 parameters")
    _boundary(monkeypatch, lambda: rp.Sequential(rp.Linear(7, 5), rp.Tanh(), rp.Linear(5, 2)).init(),
              (40 + 12) * 8, r"init: the 52 float64 parameters of the model")
    # a conv pass over 3 samples (2, 6, 4) -> (4, 3, 2) with kernel 3, padding 1, stride 2:
    # outputs 3*4*6, im2col features 3*18*6, inputs 3*48 and the padded inputs 3*2*8*6
    conv = rp.Conv2d(2, 4, 3, stride=2, padding=1)
    w, b = conv.init(rng)
    x = rng.standard_normal((3, 2, 6, 4))
    assert conv.output_shape((2, 6, 4)) == (4, 3, 2)
    need = 8 * (3 * 4 * 6 + 3 * 18 * 6 + 3 * 48 + 3 * 2 * 8 * 6)
    _boundary(monkeypatch, lambda: conv.forward([w, b], x), need, r"Conv2d\(2, 4, .*\.forward: a batch of 3")
    # K = 2 tangents per sample: a batch of 6
    _boundary(monkeypatch, lambda: conv.jvp([w, b], (None, (2, 6, 4)), np.ones((3, 2, 2, 6, 4))), 2 * need,
              r"\.jvp: a batch of 6")
    # the user's array: its float64 copy and the finiteness test's booleans
    _boundary(monkeypatch, lambda: check_array(np.ones((3, 4), dtype=int), "X"), 12 * 9, r"X: converting the int64")
    _boundary(monkeypatch, lambda: check_array(np.ones((3, 4)), "X"), 12, r"X: checking the float64 array")
    # loss-Hessian square roots (N, C, C) and a temporary as large
    _boundary(monkeypatch, lambda: hessian_sqrt(rp.CrossEntropyLoss(), np.zeros((2, 5)), "f"), 2 * 2 * 25 * 8,
              r"f: the square roots of the loss Hessians \(2 x 5 x 5")
    # Monte Carlo draws: labels (samples, N) of 16 + C bytes each; values two (samples, N, C) arrays
    m, p, X, y, l = make("mlp-tanh", "ce-mean", n=4)
    inp = validate(m, p, X, y, l)
    _boundary(monkeypatch, lambda: check_draws(inp, 7, 0, "f"), 7 * 4 * (16 + 3), r"f: 7 Monte Carlo target\(s\)")
    m, p, X, y, l = make("mlp-tanh", "mse-mean", n=4)
    inp = validate(m, p, X, y, l)
    _boundary(monkeypatch, lambda: check_draws(inp, 7, 0, "f"), 2 * 7 * 4 * 3 * 8, r"f: 7 Monte Carlo")
    # Kronecker factors: Linear(3, 4) has S 4 x 4, A 4 x 4; Linear(4, 3) S 3 x 3, A 5 x 5
    _boundary(monkeypatch, lambda: check_factors_fit(m, "kfac"), (16 + 16 + 9 + 25) * 8,
              r"kfac: the Kronecker factors S and A of every layer \(the largest, of Linear\(4, 3")
    _boundary(monkeypatch, lambda: check_factors_fit(m, "ekfac", copies=2), 2 * (16 + 16 + 9 + 25) * 8,
              r"with eigenvectors\)")


def test_dense_refusals_count_the_matrix_and_its_temporaries(monkeypatch):
    m, p, X, y, l = make("mlp-tanh", "mse-mean", n=4)  # 16 + 15 = 31 parameters
    K = rp.kfac(m, p, X, y, l)
    n = m.n_params
    assert n == 31
    # K-FAC: the result plus one block's identity and product (the larger block, 16 x 16)
    _boundary(monkeypatch, K.to_dense, 8 * (n * n + 2 * 16 * 16), rf"KFAC.to_dense: the {n} x {n} float64 matrix")
    _boundary(monkeypatch, K.blocks[1].dense, 8 * 2 * 15 * 15, r"KroneckerBlock.dense: the 15 x 15 float64 block")
    _boundary(monkeypatch, rp.Diagonal(np.ones(5)).to_dense, 8 * 25, r"Diagonal.to_dense: the 5 x 5 float64")
    _boundary(monkeypatch, rp.Dense(np.eye(5)).to_dense, 8 * 25, r"Dense.to_dense")
    _boundary(monkeypatch, rp.BlockDiagonal([np.eye(2)], [0, 2], 5).to_dense, 8 * 25, r"BlockDiagonal.to_dense")

    class Twice(rp.curvature.operators.CurvatureOperator):
        n = 5

        def _matmat(self, V):
            return 2 * V

    # from products: the identity and the result
    _boundary(monkeypatch, Twice().to_dense, 8 * 2 * 25, r"Twice.to_dense: the 5 x 5 float64 matrix \(0.00 GiB\)")


def test_hessian_diagonal_counts_the_activation_columns(monkeypatch):
    """mlp-tanh with squared error: 3 output columns; at the Tanh (4 units) 2 x 4 one-hot
    columns join them, 11 columns of 4 entries, while the two (4, 4) one-hot stacks are
    built: 11 * 4 + 2 * 16 = 76 floats per sample, 4 samples in one chunk."""
    from refprune.checks import validate
    from refprune.curvature import diagonal

    m, p, X, y, l = make("mlp-tanh", "mse-mean", n=4)
    inp = validate(m, p, X, y, l)
    factor = diagonal._factor(inp, "hessian", {}, "hessian_diagonal")
    _boundary(monkeypatch, lambda: diagonal._check_columns_fit(inp, factor, True, 4), 8 * 4 * 76,
              r"hessian_diagonal: the columns back-propagated at layer 1 \(Tanh\(\)\) for 4 sample\(s\)")
    # without the residual (GGN): 3 columns, widest at the Tanh's 4 entries
    factor = diagonal._factor(inp, "ggn", {}, "ggn_diagonal")
    _boundary(monkeypatch, lambda: diagonal._check_columns_fit(inp, factor, False, 4), 8 * 4 * 12,
              r"ggn_diagonal: the columns back-propagated at layer 1")
    # the whole call: one chunk of the 4 samples (not a chunk's worth of samples that do not exist)
    monkeypatch.setattr(memory, "available_memory", lambda: 8 * 4 * 76 - 1)
    with pytest.raises(rp.CurvatureTooLargeError, match="for 4 sample"):
        rp.hessian_diagonal(m, p, X, y, l)


def test_inverse_spd_and_obs_count_their_copies(monkeypatch):
    from refprune.pruning.obs import OBS, inverse_spd

    H = np.diag([2.0, 3.0, 4.0])
    _boundary(monkeypatch, lambda: inverse_spd(H), 3 * 9 * 8, r"inverse_spd: the damped copy, Cholesky factor and "
              r"inverse of the 3 x 3 float64 matrix")
    _boundary(monkeypatch, lambda: OBS(H, np.ones(3)), 2 * 9 * 8, r"OBS: the copy of the 3 x 3 float64 Hinv")
