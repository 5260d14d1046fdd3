"""Layers and losses at their edges (``refprune.nn``, output factors): pooling with a
3x3 window (where ``k * 2 != k**2``), shapes a pool cannot take, option messages,
representations, per-sample losses, the square root of the cross-entropy Hessian at
logits of very different sizes, and caller-supplied Monte Carlo targets."""

import numpy as np
import pytest

import refprune as rp
from refprune.curvature.output_factors import check_targets_stack, hessian_sqrt
from refprune.checks import validate
from refprune.testing import assert_close, check_grad


@pytest.mark.parametrize("pool", [rp.AvgPool2d, rp.MaxPool2d])
def test_three_by_three_pooling_gradients_and_curvature(pool):
    rng = np.random.default_rng(0)
    model = rp.Sequential(rp.Conv2d(1, 2, 2), rp.Tanh(), pool(3), rp.Flatten(), rp.Linear(4, 2))
    params = model.init(0)
    X, y = rng.standard_normal((3, 1, 7, 4)), np.array([0, 1, 1])
    loss = rp.CrossEntropyLoss()
    theta = rp.flatten_params(params)
    check_grad(lambda t: rp.loss(model, rp.unflatten_params(model, t), X, y, loss),
               lambda t: rp.grad(model, rp.unflatten_params(model, t), X, y, loss), theta, directions=4)
    H = rp.hessian(model, params, X, y, loss)
    assert_close(rp.hessian_diagonal(model, params, X, y, loss), np.diag(H), 1e-10, 1e-12, "diagonal with 3x3 pool")
    # OBD's approximation back-propagates squared weights through the pool: 1/k^2 per cell for AvgPool
    d = rp.obd_diagonal(model, params, X, y, loss, levenberg_marquardt=True)
    G = rp.ggn(model, params, X, y, loss)
    off = model.param_offsets()[4]
    assert_close(d[off:], np.diag(G)[off:], 1e-10, 1e-12, "last layer: OBD's diagonal is the GGN's there")


def test_pool_shapes_and_names():
    for shape in ((1, 2, 5), (1, 5, 2), (2, 5, 5, 1)):
        with pytest.raises(ValueError):
            rp.MaxPool2d(3).output_shape(shape)
    assert rp.MaxPool2d(3).output_shape((1, 6, 7)) == (1, 2, 2)
    with pytest.raises(ValueError, match=r"^AvgPool2d: kernel_size must be a positive int, got 0$"):
        rp.AvgPool2d(0)
    for bad in ((1, 1, 1), (3, 3.0), 2.0, True, (True, 1), "22", None):
        with pytest.raises(ValueError, match=r"^Conv2d: stride must be an int or a pair of ints, got"):
            rp.Conv2d(1, 1, 3, stride=bad)
    assert rp.Conv2d(1, 1, [3, 2], stride=np.int64(2)).stride == (2, 2)


def test_representations():
    assert repr(rp.Sequential(rp.Linear(2, 3), rp.Tanh())) == "Sequential(\n  Linear(2, 3, bias=True),\n  Tanh()\n)"
    assert repr(rp.MSELoss()) == "MSELoss(reduction='mean')"
    assert repr(rp.CrossEntropyLoss("sum")) == "CrossEntropyLoss(reduction='sum')"


def test_per_sample_losses_and_target_checks():
    f = np.array([[1.0, 2.0], [0.0, -1.0], [3.0, 3.0]])
    y = np.array([[0.0, 0.0], [1.0, 1.0], [3.0, 2.0]])
    assert_close(rp.MSELoss().per_sample(f, y), np.array([5.0, 5.0, 1.0]), 0, 0, "squared error per sample")
    with pytest.raises(ValueError, match=r"^MSELoss: targets must be numeric, got dtype <U1$"):
        rp.MSELoss().check_targets(np.array([["a", "b"]] * 3), 3, 2)
    with pytest.raises(ValueError, match=r"^MSELoss: targets contain NaN or inf$"):
        rp.MSELoss().check_targets(np.array([[np.nan, 0.0]] * 3), 3, 2)
    assert rp.MSELoss().check_targets(np.ones((3, 2), dtype=int), 3, 2).dtype == np.float64


def test_cross_entropy_hessian_root_at_logits_of_very_different_sizes():
    f = np.array([[0.0, 1.0, 2.0], [1000.0, 1001.0, 1002.0], [-800.0, -801.0, -799.0]])
    G = hessian_sqrt(rp.CrossEntropyLoss(), f)
    for n in range(3):
        z = f[n] - f[n].max()
        p = np.exp(z) / np.exp(z).sum()
        Lam = np.diag(p) - np.outer(p, p)
        assert_close(G[n].T @ G[n], Lam, 1e-12, 1e-15, f"row {n}: sum_k Gamma_k Gamma_k^T = diag(p) - p p^T")


def test_supplied_targets_single_or_stacked():
    rng = np.random.default_rng(0)
    model = rp.Sequential(rp.Linear(2, 3))
    params, X = model.init(0), rng.standard_normal((4, 2))
    for loss, t in ((rp.CrossEntropyLoss(), rng.integers(0, 3, 4)), (rp.MSELoss(), rng.standard_normal((4, 3)))):
        y = t
        inp = validate(model, params, X, y, loss)
        assert check_targets_stack(inp, t).shape == (1,) + t.shape
        assert check_targets_stack(inp, np.stack([t, t])).shape == (2,) + t.shape
        a = rp.fisher(model, params, X, y, loss, curvature="mc_fisher", targets=t)
        b = rp.fisher(model, params, X, y, loss, curvature="mc_fisher", targets=t[None])
        assert np.array_equal(a, b)
        with pytest.raises(ValueError, match=r"^targets must be a stack of sampled targets \(n_mc, N, \.\.\.\), got "
                                             r"shape \(0, 4"):
            check_targets_stack(inp, np.zeros((0,) + t.shape))
    with pytest.raises(ValueError, match=r"^targets must be a stack of sampled targets \(n_mc, N, \.\.\.\), got shape "
                                         r"\(\)$"):
        check_targets_stack(validate(model, params, X, np.zeros(4, dtype=int), rp.CrossEntropyLoss()), 3)


def test_obd_diagonal_through_a_three_by_three_average_pool_in_closed_form():
    """1x1 convolution -> AvgPool2d(3) -> Linear, summed squared error: with Lambda = 2 I
    OBD's (Levenberg-Marquardt) recursion gives the pool output ``i`` the value
    ``2 sum_c W_ci^2``, each of its 9 input cells ``(1/9)^2`` of that, and the conv
    weight ``sum_n sum_cells x^2`` times its cell's value (LeCun et al. 1990, eqs. 7-9)."""
    rng = np.random.default_rng(1)
    model = rp.Sequential(rp.Conv2d(1, 1, 1), rp.AvgPool2d(3), rp.Flatten(), rp.Linear(4, 2))
    params = model.init(3)
    X, Y = rng.standard_normal((3, 1, 6, 6)), rng.standard_normal((3, 2))
    d = rp.obd_diagonal(model, params, X, Y, rp.MSELoss("sum"), levenberg_marquardt=True)
    W = params[2]
    per_output = 2 * (W**2).sum(axis=0)  # (4,) over the 2x2 pool outputs, row-major
    cell = np.kron(per_output.reshape(2, 2), np.ones((3, 3))) / 81  # (6, 6)
    assert d[0] == pytest.approx(np.sum(X[:, 0] ** 2 * cell), rel=1e-12)
    assert d[1] == pytest.approx(3 * np.sum(cell), rel=1e-12)


def test_layer_option_messages_and_defaults():
    with pytest.raises(ValueError, match=r"^Sequential needs at least one layer$"):
        rp.Sequential()
    model = rp.Sequential(rp.Linear(2, 3))
    assert all(np.array_equal(a, b) for a, b in zip(model.init(), model.init(0)))
    with pytest.raises(ValueError, match=r"^Linear: out_features must be a positive int"):
        rp.Linear(2, 0)
    with pytest.raises(ValueError, match=r"^Conv2d: out_channels must be a positive int"):
        rp.Conv2d(1, 0, 3)
    with pytest.raises(ValueError, match=r"^Conv2d: in_channels must be a positive int"):
        rp.Conv2d(1.5, 1, 3)
    with pytest.raises(ValueError, match=r"^Conv2d: kernel_size must be an int or a pair of ints, got \(3, 3.0\)$"):
        rp.Conv2d(1, 1, (3, 3.0))
    with pytest.raises(ValueError, match=r"^Conv2d: padding must be an int or a pair of ints, got 'same'$"):
        rp.Conv2d(1, 1, 3, padding="same")


@pytest.mark.parametrize("stride, padding", [(1, 0), (2, 0), (2, 1), ((3, 2), (1, 0))])
def test_im2col_against_a_loop(stride, padding):
    from refprune.nn.conv import im2col

    x = np.random.default_rng(0).standard_normal((2, 2, 7, 6))
    k, s, p = (3, 2), (stride, stride) if isinstance(stride, int) else stride, \
        (padding, padding) if isinstance(padding, int) else padding
    xp = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])))
    ho, wo = (xp.shape[2] - k[0]) // s[0] + 1, (xp.shape[3] - k[1]) // s[1] + 1
    cols = np.array([[xp[b, :, i * s[0] : i * s[0] + k[0], j * s[1] : j * s[1] + k[1]].ravel()
                      for i in range(ho) for j in range(wo)] for b in range(2)]).transpose(0, 2, 1)
    assert np.array_equal(im2col(x, k, s, p), cols)


def test_loss_messages():
    with pytest.raises(ValueError, match=r"^CrossEntropyLoss: labels must be integers, got non-integer values$"):
        rp.CrossEntropyLoss().check_targets(np.array([0.5, 1.0]), 2, 3)
    with pytest.raises(ValueError, match=r"^MSELoss: reduction must be one of \('mean', 'sum'\), got 'avg'$"):
        rp.MSELoss("avg")


def test_log_softmax_runs_along_the_last_axis():
    from scipy.special import log_softmax as scipy_log_softmax

    from refprune.nn.losses import log_softmax

    f = np.random.default_rng(0).standard_normal((2, 3, 4)) * 30
    assert_close(log_softmax(f), scipy_log_softmax(f, axis=-1), 1e-13, 1e-12, "log_softmax of a 3-d array")


def test_cross_entropy_samples_reach_every_class_in_proportion():
    loss, rng = rp.CrossEntropyLoss(), np.random.default_rng(0)
    # all mass on the last class, and on the first: every draw lands there
    assert np.all(loss.sample(np.array([[-60.0, -60.0, 60.0], [60.0, -60.0, -60.0]]), rng, 50) == [[2, 0]] * 50)
    p = np.array([0.2, 0.3, 0.5])
    draws = loss.sample(np.log(p)[None], rng, 20000)
    assert draws.shape == (20000, 1) and draws.dtype.kind == "i"
    freq = np.bincount(draws[:, 0], minlength=3) / 20000
    assert np.all(np.abs(freq - p) < 4 * np.sqrt(p * (1 - p) / 20000)), freq


def test_target_dtypes_accepted_and_refused():
    assert rp.CrossEntropyLoss().check_targets(np.array([0, 2], dtype=np.uint8), 2, 3).dtype == np.int64
    with pytest.raises(ValueError, match=r"^CrossEntropyLoss: labels must be integers, got dtype bool$"):
        rp.CrossEntropyLoss().check_targets(np.array([True, False]), 2, 3)
    for dtype in (np.float32, np.int8, np.uint16, bool):
        y = rp.MSELoss().check_targets(np.ones((2, 2), dtype=dtype), 2, 2)
        assert y.dtype == np.float64 and np.all(y == 1.0)
    with pytest.raises(ValueError, match=r"^MSELoss: targets must be numeric, got dtype complex128$"):
        rp.MSELoss().check_targets(np.ones((2, 2), dtype=complex), 2, 2)


def test_relu_derivative_is_zero_at_the_kink():
    z = np.array([[-1.0, 0.0, 2.0]])
    y, cache = rp.ReLU().forward([], z)
    assert np.all(y == [[0.0, 0.0, 2.0]])
    # PyTorch's convention relu'(0) = 0: the cotangent at z = 0 is dropped
    assert np.all(rp.ReLU().vjp([], cache, np.ones((1, 1, 3))) == [[[0.0, 0.0, 1.0]]])


def test_default_squared_vjp_passes_the_parameters_on():
    from refprune.nn.base import Layer

    class Gate(Layer):
        """``y = m * x`` with a 0/1 gate ``m`` as its parameter: a Jacobian of 0/1 entries."""

        def vjp(self, params, cache, dy):
            return dy * params[0]

    m, h = np.array([1.0, 0.0, 1.0]), np.arange(6.0).reshape(1, 2, 3)
    assert np.all(Gate().vjp_squared([m], None, h) == h * m**2)


def test_flatten_keeps_the_sample_and_direction_axes():
    x = np.arange(24.0).reshape(2, 3, 2, 2)
    y, cache = rp.Flatten().forward([], x)
    assert y.shape == (2, 12) and np.all(y[1] == np.arange(12.0, 24.0)) and cache == (3, 2, 2)
    dx = np.arange(48.0).reshape(2, 2, 3, 2, 2)
    dy = rp.Flatten().jvp([], cache, dx)
    assert dy.shape == (2, 2, 12) and np.all(dy[1, 1] == np.arange(36.0, 48.0))
    assert np.all(rp.Flatten().vjp([], cache, dy) == dx)


@pytest.mark.parametrize("layer", [rp.Linear(3, 2), rp.Linear(3, 2, bias=False), rp.Conv2d(2, 3, (2, 1)), rp.Tanh()])
def test_split_flat_cuts_rows_into_the_parameter_arrays_in_order(layer):
    n = layer.n_params
    V = np.arange(4.0 * n).reshape(4, n)
    parts = layer.split_flat(V)
    assert [p.shape[1:] for p in parts] == [tuple(s) for s in layer.param_shapes()]
    for k in range(4):  # each row is a flat parameter vector, arrays one after the other
        flat = np.concatenate([p[k].ravel() for p in parts]) if parts else np.zeros(0)
        assert np.array_equal(flat, V[k])


def test_sigmoid_and_softplus_at_extreme_inputs_without_overflow():
    import warnings

    z = np.array([-1000.0, -30.0, 0.0, 30.0, 1000.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s, d1, d2 = rp.Sigmoid().derivatives(z)
        sp, e1, _ = rp.Softplus().derivatives(z)
    assert s[0] == 0.0 and s[2] == 0.5 and s[4] == 1.0
    assert s[1] == pytest.approx(np.exp(-30.0) / (1 + np.exp(-30.0)), rel=1e-15)
    assert s[3] == pytest.approx(1 / (1 + np.exp(-30.0)), rel=1e-15)
    assert np.all(e1 == s) and sp[4] == 1000.0 and sp[0] == 0.0
