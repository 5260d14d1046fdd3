"""Work is split into the largest chunks that fit ``CHUNK_FLOATS``.

Under a small budget, the samples (or directions) each pass receives are counted and
compared with chunk lengths worked out by hand from the network's widths and the number
of columns each computation carries per sample (docs/derivations.md §4: ``K`` columns of
``Gamma_n``, plus the residual columns of the exact diagonal, plus the gradient column of
an optimizer's pass)."""

import numpy as np
import pytest

import refprune as rp
from refprune import derivatives as _d
from refprune.checks import validate
from refprune.curvature import kronecker
from refprune.curvature.output_factors import OutputFactor

# X (2, 5, 5) -> Conv2d(2, 3, 3): output (3, 3, 3), im2col features (2*3*3, 3*3) = 162 floats
# -> Tanh on 27 -> Flatten -> Linear(27, 4): features 27 -> Tanh on 4 -> Linear(4, 2)
WIDTH = 162
ELEMENTWISE_INPUTS = 27 + 4
C = 2
N = 7


def conv_case(n=N):
    model = rp.Sequential(rp.Conv2d(2, 3, 3), rp.Tanh(), rp.Flatten(), rp.Linear(27, 4), rp.Tanh(), rp.Linear(4, C))
    rng = np.random.default_rng(3)
    return model, model.init(seed=3), rng.standard_normal((n, 2, 5, 5)), rng.standard_normal((n, C)), rp.MSELoss()


def expected(n, length):
    return [min(length, n - s) for s in range(0, n, length)]


@pytest.fixture
def passes(monkeypatch):
    """The number of samples each forward pass over a chunk receives (a gradient pass
    starts with one)."""
    seen, original = [], _d.forward

    def recording(inp, X=None):
        if X is not None:
            seen.append(len(X))
        return original(inp, X)

    monkeypatch.setattr(_d, "forward", recording)
    return seen


def test_work_width_is_the_widest_place_by_hand():
    inp = validate(*conv_case())
    assert _d.work_width(inp) == WIDTH and type(_d.work_width(inp)) is int
    # 3-4-2 MLP: inputs 3, 4; outputs 4, 2; features 3 and 4 (the bias is not a feature)
    mlp = rp.Sequential(rp.Linear(3, 4), rp.Tanh(), rp.Linear(4, 2))
    assert _d.work_width(validate(mlp, mlp.init(0), np.ones((2, 3)), np.ones((2, 2)), rp.MSELoss())) == 4
    # a wide input dominates: 9 inputs, 1 feature column each of 9 weights
    wide = rp.Sequential(rp.Linear(9, 1))
    assert _d.work_width(validate(wide, wide.init(0), np.ones((2, 9)), np.ones((2, 1)), rp.MSELoss())) == 9


def test_chunk_length_is_the_largest_count_that_fits(monkeypatch):
    monkeypatch.setattr(_d, "CHUNK_FLOATS", 100)
    assert [_d.chunk_length(k, 10) for k in (1, 3, 10, 11, 1000)] == [10, 3, 1, 1, 1]
    assert type(_d.chunk_length(3, 10)) is int


@pytest.mark.parametrize("curvature, samples, k", [("ggn", 1, C), ("fisher", 1, C), ("empirical_fisher", 1, 1),
                                                   ("mc_fisher", 3, 3)])
@pytest.mark.parametrize("loss", [rp.MSELoss(), rp.CrossEntropyLoss(), rp.BCEWithLogitsLoss()])
def test_output_factor_knows_its_columns_per_sample(curvature, samples, k, loss):
    model, params, X, Y, _ = conv_case(4)
    if isinstance(loss, rp.CrossEntropyLoss):
        y = np.array([0, 1, 1, 0])
    elif isinstance(loss, rp.BCEWithLogitsLoss):
        y = 1.0 / (1.0 + np.exp(-Y))  # soft labels in (0, 1)
    else:
        y = Y
    inp = validate(model, params, X, y, loss)
    factor = OutputFactor(inp, curvature, samples=samples)
    f = _d.forward(inp)[0]
    assert factor.per_sample == k == factor.columns(f, slice(0, 4)).shape[1]


def test_output_factor_defaults_one_draw_from_seed_zero():
    model, params, X, y, loss = conv_case(4)
    inp = validate(model, params, X, y, loss)
    factor = OutputFactor(inp, "mc_fisher")
    f = _d.forward(inp)[0]
    assert factor.per_sample == 1
    np.testing.assert_array_equal(factor.targets, loss.sample(f, np.random.default_rng(0), 1))
    with pytest.raises(ValueError, match=r"^curvature: curvature must be one of"):
        OutputFactor(inp, "hessian")


def test_kfac_passes_hold_k_columns_per_sample(monkeypatch, passes):
    monkeypatch.setattr(_d, "CHUNK_FLOATS", C * WIDTH * 3)
    rp.kfac(*conv_case(), curvature="ggn")
    assert passes == expected(N, 3)


@pytest.mark.parametrize("gradient, columns", [(False, C), (True, C + 1)])
def test_layer_statistics_counts_the_gradient_column(monkeypatch, passes, gradient, columns):
    monkeypatch.setattr(_d, "CHUNK_FLOATS", 6 * WIDTH)  # 3 samples of 2 columns, 2 of 3
    inp = validate(*conv_case())
    factor = OutputFactor(inp, "ggn")
    out = kronecker.layer_statistics(inp, factor, lambda *a: None, gradient=gradient)
    assert passes == expected(N, 6 // columns)
    if gradient:
        np.testing.assert_allclose(out, rp.grad(*conv_case()), rtol=1e-12, atol=1e-14)
    else:
        assert out is None
        assert kronecker.layer_statistics(inp, factor, lambda *a: None) is None


def test_hessian_diagonal_passes_count_the_residual_columns(monkeypatch, passes):
    columns = C + 2 * ELEMENTWISE_INPUTS  # Lambda's columns, then +/- one per activation input
    monkeypatch.setattr(_d, "CHUNK_FLOATS", columns * WIDTH * 2)
    rp.hessian_diagonal(*conv_case())
    assert passes == expected(N, 2)


def test_ggn_diagonal_passes_have_no_residual_columns(monkeypatch, passes):
    monkeypatch.setattr(_d, "CHUNK_FLOATS", C * WIDTH * 3)
    rp.ggn_diagonal(*conv_case())
    assert passes == expected(N, 3)


def test_exact_hessian_passes_follow_the_seed_cost_model_and_the_rows_width(monkeypatch, passes):
    # docs/derivations.md §12.  Conv2d(2, 3, 3): 57 parameters, 27 outputs over T = 9
    # locations; contracting the identity seed's tangents with U over (n, t) costs
    # 2 T n_l sum_m n_m = 2*9*57*179 per sample, more than the Jacobian seed's whole rows,
    # so it seeds its 57 parameter directions.  Linear(27, 4) and Linear(4, 2): the identity
    # (4 and 2 directions).  Each layer's rows are chunked by the widest place from its
    # output on: 27 for the conv (its output, Flatten, Linear(27, 4)'s features), 4 and 2
    # for the Linear layers (the conv's im2col width 162 is never reached).  The pass over the
    # whole batch (one chunk: both Linear layers here) is made once and shared.
    monkeypatch.setattr(_d, "CHUNK_FLOATS", 27 * WIDTH * 2)
    rp.hessian(*conv_case())
    conv = expected(N, 27 * WIDTH * 2 // (57 * 27))
    assert conv == [5, 2] and expected(N, 27 * WIDTH * 2 // (4 * 4)) == expected(N, 27 * WIDTH * 2 // (2 * 2)) == [N]
    assert passes == conv + [N]


def test_hvp_directions_are_chunked_by_samples_times_width(monkeypatch):
    model, params, X, y, loss = conv_case()
    V = np.random.default_rng(0).standard_normal((5, model.n_params))
    seen, original = [], _d.curvature_products

    def recording(inp, caches, douts, f, Vc, *rest):
        seen.append(len(Vc))
        return original(inp, caches, douts, f, Vc, *rest)

    monkeypatch.setattr(_d, "curvature_products", recording)
    monkeypatch.setattr(_d, "CHUNK_FLOATS", N * WIDTH * 2)
    out = rp.hvp(model, params, X, y, loss, V)
    assert seen == [2, 2, 1]
    monkeypatch.undo()
    np.testing.assert_allclose(out, V @ rp.hessian(model, params, X, y, loss), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("curvature, mc", [("mc_fisher", dict(samples=3, seed=1)), ("empirical_fisher", {})])
def test_sampled_targets_follow_their_samples_into_every_chunk(monkeypatch, passes, curvature, mc):
    model, params, X, y, loss = conv_case()
    whole = rp.fisher(model, params, X, y, loss, curvature=curvature, **mc)
    # the conv's rows: 57 Jacobian directions of width 27, five samples a pass (see above)
    monkeypatch.setattr(_d, "CHUNK_FLOATS", 27 * WIDTH * 2)
    passes.clear()
    chunked = rp.fisher(model, params, X, y, loss, curvature=curvature, **mc)
    assert passes[:2] == expected(N, 5)
    np.testing.assert_allclose(chunked, whole, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("curvature, mc", [("mc_fisher", dict(samples=2, seed=4)), ("empirical_fisher", {})])
def test_kfac_s_sampled_columns_follow_their_samples_into_every_chunk(monkeypatch, passes, curvature, mc):
    model, params, X, y, loss = conv_case()
    whole = rp.kfac(model, params, X, y, loss, curvature=curvature, **mc)
    k = mc.get("samples", 1)
    monkeypatch.setattr(_d, "CHUNK_FLOATS", k * WIDTH * 2)
    passes.clear()
    chunked = rp.kfac(model, params, X, y, loss, curvature=curvature, **mc)
    assert passes == expected(N, 2)
    for (S1, A1), (S2, A2) in zip(chunked.factors(), whole.factors()):
        np.testing.assert_allclose(S1, S2, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(A1, A2, rtol=1e-12, atol=1e-15)
