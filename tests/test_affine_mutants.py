"""``refprune.nn.affine``: the memory check of each pass counted by hand from the shapes
(``docs/conventions.md`` §10: outputs, features and input-shaped results), at the
threshold, for the pass that squares the weights as for the others."""

import numpy as np
import pytest

import refprune as rp
from refprune import memory


def _boundary(monkeypatch, call, need, words):
    """``call`` succeeds with exactly ``need`` bytes available and is refused, naming
    ``words``, with one byte less (no small-allocation shortcut)."""
    monkeypatch.setattr(memory, "ALWAYS_FITS", 0)
    monkeypatch.setattr(memory, "available_memory", lambda: need)
    out = call()
    monkeypatch.setattr(memory, "available_memory", lambda: need - 1)
    with pytest.raises(memory.ArrayTooLargeError, match=words):
        call()
    monkeypatch.setattr(memory, "available_memory", lambda: 2**62)
    return out


def _taps(w_shape, in_shape, stride, padding):
    """Every ``(o, c, a, d, i, j, y, x)`` with output ``(o, i, j)`` reading input
    ``(c, y, x) = (c, s i + a - p_h, s j + d - p_w)`` through weight ``(o, c, a, d)``, inside
    the input (the padding reads zeros): docs/derivations.md §2 without im2col."""
    co, ci, kh, kw = w_shape
    _, H, W = in_shape
    ho, wo = (H + 2 * padding[0] - kh) // stride + 1, (W + 2 * padding[1] - kw) // stride + 1
    for o, c, a, d, i, j in np.ndindex(co, ci, kh, kw, ho, wo):
        y, x = stride * i + a - padding[0], stride * j + d - padding[1]
        if 0 <= y < H and 0 <= x < W:
            yield o, c, a, d, i, j, y, x


def _conv_direct(w, x, stride, padding):
    """The convolution without bias, entry by entry."""
    n, _, H, W = x.shape
    ho, wo = (H + 2 * padding[0] - w.shape[2]) // stride + 1, (W + 2 * padding[1] - w.shape[3]) // stride + 1
    z = np.zeros((n, w.shape[0], ho, wo))
    for o, c, a, d, i, j, y, xx in _taps(w.shape, x.shape[1:], stride, padding):
        z[:, o, i, j] += w[o, c, a, d] * x[:, c, y, xx]
    return z


def _conv_adjoint(w, h, in_shape, stride, padding):
    """The adjoint of :func:`_conv_direct`, entry by entry (each output gives back to the
    inputs it read)."""
    g = np.zeros((h.shape[0],) + tuple(in_shape))
    for o, c, a, d, i, j, y, x in _taps(w.shape, in_shape, stride, padding):
        g[:, c, y, x] += w[o, c, a, d] * h[:, o, i, j]
    return g


@pytest.mark.parametrize("k", [1, 2, 3])
def test_vjp_squared_counts_a_batch_of_samples_times_tangents(monkeypatch, k):
    """Conv2d(2, 4, 3, stride=2, padding=1) on (2, 6, 4) -> (4, 3, 2): per sample the
    outputs 4*6, im2col features 18*6, the input 48 and the padded input 2*8*6 floats;
    ``h`` of shape (3, k, 4, 3, 2) is a batch of 3k such samples.  The result is
    ``(W_r**2)^T`` applied to ``h`` and mapped back by col2im, checked against the
    adjoint of the squared-weight convolution written out entry by entry."""
    rng = np.random.default_rng(1)
    conv = rp.Conv2d(2, 4, 3, stride=2, padding=1)
    w, b = conv.init(rng)
    h = rng.random((3, k, 4, 3, 2))
    per_sample = 4 * 6 + 18 * 6 + 48 + 2 * 8 * 6
    got = _boundary(monkeypatch, lambda: conv.vjp_squared([w, b], (None, (2, 6, 4)), h), 8 * 3 * k * per_sample,
                    rf"^Conv2d\(2, 4, .*\)\.vjp_squared: a batch of {3 * k}: the outputs \({3 * k} x 4 x 6\), "
                    rf"im2col features \({3 * k} x 18 x 6\) and input-shaped results would need")
    # the adjoint of the squared-weight convolution, entry by entry
    want = _conv_adjoint(w**2, h.reshape(3 * k, 4, 3, 2), (2, 6, 4), 2, (1, 1)).reshape(3, k, 2, 6, 4)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)


def test_linear_vjp_squared_counts_its_batch(monkeypatch):
    """Linear(5, 3): per sample 3 outputs, 5 features and 5 inputs; (4, 2, 3) is a batch
    of 8; the result is ``h (W**2)``."""
    rng = np.random.default_rng(2)
    lin = rp.Linear(5, 3)
    w, b = lin.init(rng)
    h = rng.random((4, 2, 3))
    got = _boundary(monkeypatch, lambda: lin.vjp_squared([w, b], (None, (5,)), h), 8 * 8 * (3 + 5 + 5),
                    r"^Linear\(5, 3.*\)\.vjp_squared: a batch of 8: the outputs \(8 x 3 x 1\), features \(8 x 5 x 1\)")
    np.testing.assert_allclose(got, np.einsum("nko,oi->nki", h, w**2), rtol=1e-14)


@pytest.mark.parametrize("padding", [(1, 0), (0, 1), (1, 2)])
@pytest.mark.parametrize("method", ["forward", "jvp", "vjp"])
def test_each_pass_counts_its_batch_and_the_padded_input(monkeypatch, method, padding):
    """Conv2d(2, 4, 3, stride=2, padding) on (2, 6, 4): per sample the outputs 4 T, im2col
    features 18 T, the input 48 and, for any padding, the padded input
    2 (6 + 2 p_h) (4 + 2 p_w) floats (one padded side is enough to need it, and each side
    pads its own axis).  ``forward`` counts 3 samples, ``jvp`` and ``vjp`` 3 x 3 tangents
    (3, not the 2 input or 4 output channels, so that no other axis gives the count);
    each result is checked against the convolution written out entry by entry."""
    rng = np.random.default_rng(3)
    conv = rp.Conv2d(2, 4, 3, stride=2, padding=padding)
    w, b = conv.init(rng)
    ho, wo = (6 + 2 * padding[0] - 3) // 2 + 1, (4 + 2 * padding[1] - 3) // 2 + 1
    t = ho * wo
    per_sample = 4 * t + 18 * t + 48 + 2 * (6 + 2 * padding[0]) * (4 + 2 * padding[1])
    x = rng.random((3, 2, 6, 4))
    batch = 3 if method == "forward" else 9
    if method == "forward":
        call = lambda: conv.forward([w, b], x)[0]  # noqa: E731
        want = _conv_direct(w, x, 2, padding) + b[None, :, None, None]
    elif method == "jvp":
        dx = rng.random((3, 3, 2, 6, 4))
        call = lambda: conv.jvp([w, b], (None, (2, 6, 4)), dx)  # noqa: E731
        want = _conv_direct(w, dx.reshape(9, 2, 6, 4), 2, padding).reshape(3, 3, 4, ho, wo)
    else:
        dy = rng.random((3, 3, 4, ho, wo))
        call = lambda: conv.vjp([w, b], (None, (2, 6, 4)), dy)  # noqa: E731
        want = _conv_adjoint(w, dy.reshape(9, 4, ho, wo), (2, 6, 4), 2, padding).reshape(3, 3, 2, 6, 4)
    got = _boundary(monkeypatch, call, 8 * batch * per_sample,
                    rf"^Conv2d\(2, 4, .*\)\.{method}: a batch of {batch}: the outputs \({batch} x 4 x {t}\), "
                    rf"im2col features \({batch} x 18 x {t}\) and input-shaped results would need")
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)


def test_init_is_pytorch_s_uniform_bound_drawn_weight_then_bias():
    """PyTorch's default initialisation (``kaiming_uniform_(a=sqrt(5))`` on the weight and
    the same bound on the bias): ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with
    ``fan_in = c_in kh kw`` (``in_features`` for Linear), drawn from the generator in
    parameter order, weight then bias."""
    for layer, shapes, fan_in in ((rp.Linear(5, 3), [(3, 5), (3,)], 5),
                                  (rp.Conv2d(2, 4, (3, 2)), [(4, 2, 3, 2), (4,)], 12)):
        got = layer.init(np.random.default_rng(7))
        rng = np.random.default_rng(7)
        bound = 1.0 / np.sqrt(fan_in)
        want = [rng.uniform(-bound, bound, size=s) for s in shapes]
        assert [g.shape for g in got] == shapes
        for g, v in zip(got, want):
            assert np.array_equal(g, v)
        # and, independently of the draw's form: every value inside the bound, both signs taken
        big = layer.init(np.random.default_rng(8))[0]
        assert big.min() < 0 < big.max() and np.abs(big).max() <= bound


def test_init_refuses_a_generator_of_another_kind_and_a_size_that_does_not_fit(monkeypatch):
    lin = rp.Linear(5, 3)
    for rng, name in ((np.random.RandomState(0), "RandomState"), (None, "NoneType")):
        with pytest.raises(TypeError) as e:
            lin.init(rng)
        assert str(e.value) == f"{lin!r}.init: rng must be a numpy.random.Generator, got {name}"
    _boundary(monkeypatch, lambda: lin.init(np.random.default_rng(0)), 8 * 18,
              r"^init: the 18 float64 parameters of Linear\(5, 3.*\) would need")


@pytest.mark.parametrize("units", [None, (1, 3)])
@pytest.mark.parametrize("in_shape", [(3,), (2, 4, 3), (2, 2, 3)])
def test_the_tangent_of_the_per_sample_gradient_against_its_definition(in_shape, units):
    """``per_sample_param_grad`` with an input tangent: for each sample and direction,
    ``dW[c, r] = sum_t dz[c, t] U[r, t] + dz0[c, t] dU[r, t]`` and ``db[c] = sum_t dz[c, t]``
    (docs/derivations.md §4), written here as ``einsum`` sums over the unfolded features;
    ``units`` keeps output units 1 and 2 (their weight rows, then their biases).  Linear
    (one location), Conv2d(2, 4, 2) with 6 locations and with 2."""
    rng = np.random.default_rng(5)
    layer = rp.Linear(3, 4) if len(in_shape) == 1 else rp.Conv2d(2, 4, 2)
    w, b = layer.init(rng)
    x, dx = rng.random((3,) + in_shape), rng.random((3, 2) + in_shape)
    out, cache = layer.forward([w, b], x)
    dy, dy0 = rng.random((3, 2) + out.shape[1:]), rng.random((3, 1) + out.shape[1:])
    dU = layer.input_tangent_features(dx)
    U = cache[0]
    dz = dy.reshape(3, 2, 4, -1)
    dz0 = dy0.reshape(3, 1, 4, -1)[:, 0]
    want_w = np.einsum("nkct,nrt->nkcr", dz, U) + np.einsum("nct,nkrt->nkcr", dz0, dU)
    want_b = dz.sum(axis=-1)
    u0, u1 = units if units is not None else (0, 4)
    want = np.concatenate([want_w[:, :, u0:u1].reshape(3, 2, -1), want_b[:, :, u0:u1]], axis=-1)
    got = layer.per_sample_param_grad(cache, dy, dU, dy0, units=units)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)
    # and param_contract sums such a tangent (for the same units) against the features
    T = rng.random((3,) + (out.shape[1:] if units is None else (2 * U.shape[2],)) + (5,))
    Tz = T.reshape(3, u1 - u0, U.shape[2], 5)
    want_c = np.concatenate([np.einsum("nrt,nctq->crq", U, Tz).reshape(-1, 5), Tz.sum(axis=(0, 2))])
    np.testing.assert_allclose(layer.param_contract(cache, T, units), want_c, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("conv", [True, False])
def test_param_jacobian_of_every_row_is_param_jvp_of_the_identity(conv):
    rng = np.random.default_rng(6)
    layer = rp.Conv2d(2, 3, 2) if conv else rp.Linear(3, 2)
    x = rng.random((2, 2, 3, 3) if conv else (2, 3))
    params = layer.init(rng)
    _, cache = layer.forward(params, x)
    eye = np.eye(layer.n_params)
    n_w = layer.n_weight
    dparams = [eye[:, :n_w].reshape((-1,) + params[0].shape), eye[:, n_w:]]
    want = layer.param_jvp(params, cache, dparams)
    assert np.array_equal(layer.param_jacobian(cache), want)
    assert np.array_equal(layer.param_jacobian(cache, [0, n_w]), want[:, [0, n_w]])
