"""Each layer's hand-written derivatives in isolation (as BackPACK tests its modules
before whole networks): forward against naive loop twins, Jacobian-vector products and
the curvature term of the backward R-operator against central differences, and the
transposes by the exact adjoint identity."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import refprune as rp
from refprune.nn.conv import col2im, im2col
from refprune.testing import assert_close, check_jvp, check_vjp, directional_derivative


# -- naive twins -----------------------------------------------------------------
def conv2d_naive(x, W, b, stride, padding):
    """Direct loops over samples, output channels and positions (PyTorch semantics)."""
    (sh, sw), (ph, pw) = stride, padding
    n, c, h, w = x.shape
    co, _, kh, kw = W.shape
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw))
    xp[:, :, ph : ph + h, pw : pw + w] = x
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    out = np.zeros((n, co, ho, wo))
    for i in range(n):
        for o in range(co):
            for p in range(ho):
                for q in range(wo):
                    patch = xp[i, :, p * sh : p * sh + kh, q * sw : q * sw + kw]
                    out[i, o, p, q] = np.sum(patch * W[o]) + (b[o] if b is not None else 0.0)
    return out


def pool_naive(x, k, op):
    n, c, h, w = x.shape
    out = np.zeros((n, c, h // k, w // k))
    for i in range(h // k):
        for j in range(w // k):
            out[:, :, i, j] = op(x[:, :, i * k : (i + 1) * k, j * k : (j + 1) * k], axis=(2, 3))
    return out


conv_configs = st.builds(
    lambda ci, co, kh, kw, sh, sw, ph, pw, h, w, bias, seed: (ci, co, (kh, kw), (sh, sw), (ph, pw), (h, w), bias, seed),
    st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3),
    st.integers(1, 3), st.integers(0, 2), st.integers(0, 2), st.integers(3, 7), st.integers(3, 7),
    st.booleans(), st.integers(0, 2**31),
)


@given(conv_configs)
def test_conv_matches_naive_loops(cfg):
    ci, co, k, s, p, (h, w), bias, seed = cfg
    layer = rp.Conv2d(ci, co, k, stride=s, padding=p, bias=bias)
    try:
        layer.output_shape((ci, h, w))
    except ValueError:
        assume(False)
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(sh) for sh in layer.param_shapes()]
    x = rng.standard_normal((2, ci, h, w))
    y, _ = layer.forward(params, x)
    ref = conv2d_naive(x, params[0], params[1] if bias else None, s, p)
    assert_close(y, ref, 1e-13, 1e-13, "Conv2d forward vs naive loops")


@given(conv_configs)
def test_col2im_is_the_adjoint_of_im2col(cfg):
    ci, _, k, s, p, (h, w), _, seed = cfg
    assume(all((d + 2 * pp - kk) >= 0 for d, pp, kk in zip((h, w), p, k)))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, ci, h, w))
    cols = im2col(x, k, s, p)
    u = rng.standard_normal(cols.shape)
    lhs = np.sum(u * cols)
    rhs = np.sum(col2im(u, (ci, h, w), k, s, p) * x)
    assert_close(lhs, rhs, 1e-12, 1e-12, "<u, im2col x> vs <col2im u, x>")


@pytest.mark.parametrize("cls,op", [(rp.AvgPool2d, np.mean), (rp.MaxPool2d, np.max)])
@pytest.mark.parametrize("k,h,w", [(2, 4, 4), (2, 5, 7), (3, 7, 6), (1, 3, 3)])
def test_pooling_matches_naive_loops(cls, op, k, h, w):
    x = np.random.default_rng(k * h * w).standard_normal((3, 2, h, w))
    y, _ = cls(k).forward([], x)
    assert_close(y, pool_naive(x, k, op), 1e-14, 1e-14, f"{cls.__name__} forward")


# -- derivative checks of single layers -------------------------------------------
LAYER_CASES = [
    ("linear", lambda: rp.Linear(4, 3), (4,)),
    ("linear-nobias", lambda: rp.Linear(3, 5, bias=False), (3,)),
    ("conv", lambda: rp.Conv2d(2, 3, 3, stride=2, padding=1), (2, 6, 5)),
    ("conv-rect", lambda: rp.Conv2d(1, 2, (2, 3), stride=(1, 2), padding=(0, 1), bias=False), (1, 5, 6)),
    ("relu", rp.ReLU, (3, 4)),
    ("tanh", rp.Tanh, (5,)),
    ("sigmoid", rp.Sigmoid, (2, 3)),
    ("softplus", rp.Softplus, (6,)),
    ("avgpool", lambda: rp.AvgPool2d(2), (2, 5, 4)),
    ("maxpool", lambda: rp.MaxPool2d(2), (2, 4, 5)),
    ("flatten", rp.Flatten, (2, 3, 2)),
]


def _setup(make, in_shape, seed=0, n=3):
    layer = make()
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s) for s in layer.param_shapes()]
    x = rng.standard_normal((n,) + in_shape)
    out_shape = layer.output_shape(in_shape)
    return layer, params, x, out_shape, rng


def _fwd(layer, params):
    return lambda x: layer.forward(params, x)[0]


@pytest.mark.parametrize("name,make,in_shape", LAYER_CASES, ids=[c[0] for c in LAYER_CASES])
def test_layer_jvp_against_central_differences(name, make, in_shape):
    layer, params, x, _, _ = _setup(make, in_shape)
    # ReLU and max pooling are smooth here: inputs are O(1) normal draws, at least
    # 1e-3 from a kink, while the step moves them by ~1e-3 * 2 * eps^(1/5) < 2e-6.
    if name == "relu":
        assert np.min(np.abs(x)) > 1e-3

    def jvp(x_, v):
        _, cache = layer.forward(params, x_)
        return layer.jvp(params, cache, v[:, None])[:, 0]

    check_jvp(_fwd(layer, params), jvp, x, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name,make,in_shape", LAYER_CASES, ids=[c[0] for c in LAYER_CASES])
def test_layer_vjp_is_the_transpose_of_jvp(name, make, in_shape):
    layer, params, x, out_shape, _ = _setup(make, in_shape)
    _, cache = layer.forward(params, x)
    check_vjp(
        lambda x_, v: layer.jvp(params, cache, v[:, None])[:, 0],
        lambda x_, u: layer.vjp(params, cache, u[:, None])[:, 0],
        x, (x.shape[0],) + out_shape,
    )


@pytest.mark.parametrize("name,make,in_shape", LAYER_CASES, ids=[c[0] for c in LAYER_CASES])
def test_layer_vjp_curvature_against_central_differences(name, make, in_shape):
    """d/dt [J(x + t v)^T u] by central differences equals vjp_curvature(u, v)."""
    layer, params, x, out_shape, rng = _setup(make, in_shape)
    u = rng.standard_normal((x.shape[0],) + out_shape)

    def vjp_at(x_):
        _, cache = layer.forward(params, x_)
        return layer.vjp(params, cache, u[:, None])[:, 0]

    v = rng.standard_normal(x.shape)
    fd = directional_derivative(vjp_at, x, v)
    _, cache = layer.forward(params, x)
    curv = layer.vjp_curvature(params, cache, u[:, None], v[:, None])
    exact = np.zeros_like(x) if curv is None else curv[:, 0]
    assert_close(exact, fd, 1e-7, 1e-9 * max(1.0, np.abs(fd).max()), f"{name}: curvature term of the R-operator")


AFFINE_CASES = [c for c in LAYER_CASES if c[0].startswith(("linear", "conv"))]


@pytest.mark.parametrize("name,make,in_shape", AFFINE_CASES, ids=[c[0] for c in AFFINE_CASES])
def test_affine_parameter_derivatives(name, make, in_shape):
    """param_jvp, param_vjp_tangent, per-sample/summed parameter gradients and
    param_grad_input_tangent, each against central differences or brute force."""
    layer, params, x, out_shape, rng = _setup(make, in_shape)
    n = x.shape[0]
    theta = rp.flatten_params(params)
    split = lambda t: [t[: layer.n_weight].reshape(layer.weight_shape)] + (  # noqa: E731
        [t[layer.n_weight :]] if layer.bias else []
    )
    _, cache = layer.forward(params, x)
    dtheta = rng.standard_normal(theta.shape)
    # forward tangent in parameter direction (output is linear in theta: exact)
    fd = directional_derivative(lambda t: layer.forward(split(t), x)[0], theta, dtheta)
    pj = layer.param_jvp(params, cache, [p[None] for p in split(dtheta)])[:, 0]
    assert_close(pj, fd, 1e-8, 1e-10, "param_jvp")
    # per-sample gradient of <u_n, y_n> with respect to theta, brute force by columns
    u = rng.standard_normal((n,) + out_shape)
    psg = layer.per_sample_param_grad(cache, u[:, None])[:, 0]
    for i in range(n):
        for q in range(theta.size):
            e = np.zeros_like(theta)
            e[q] = 1.0
            yq = layer.param_jvp(params, cache, [p[None] for p in split(e)])[i, 0]
            assert_close(psg[i, q], np.sum(u[i] * yq), 1e-12, 1e-12, f"per-sample grad [{i}, {q}]")
    # summed gradient and units selection
    assert_close(layer.param_grad(cache, u[:, None])[0], psg.sum(0), 1e-12, 1e-12, "param_grad")
    if layer.out_units > 1:
        part = layer.per_sample_param_grad(cache, u[:, None], units=(1, layer.out_units))[:, 0]
        cols = np.concatenate([np.arange(a, b) for a, b in layer.unit_columns((1, layer.out_units))])
        assert_close(part, psg[:, cols], 1e-14, 1e-14, "per_sample_param_grad(units=...)")
    # backward R-operator, parameter part: d/dt [J(theta + t dtheta)^T u]
    fd = directional_derivative(lambda t: layer.vjp(split(t), cache, u[:, None])[:, 0], theta, dtheta)
    exact = layer.param_vjp_tangent(params, cache, [p[None] for p in split(dtheta)], u[:, None])[:, 0]
    assert_close(exact, fd, 1e-8, 1e-10, "param_vjp_tangent")
    # input-tangent part of the R-operator of the gradient: d/dt grad(x + t dx)
    dx = rng.standard_normal(x.shape)
    fd = directional_derivative(lambda x_: layer.param_grad(layer.forward(params, x_)[1], u[:, None])[0], x, dx)
    exact = layer.param_grad_input_tangent(layer.input_tangent_features(dx[:, None]), u[:, None])[0]
    assert_close(exact, fd, 1e-8, 1e-10, "param_grad_input_tangent")
    # the trailing-axis contraction against the summed gradient, one column at a time
    U = rng.standard_normal((n,) + out_shape + (3,))
    C = layer.param_contract(cache, U)
    for k in range(3):
        assert_close(C[:, k], layer.param_grad(cache, U[..., k][:, None])[0], 1e-12, 1e-12, "param_contract")


def test_relu_derivative_at_zero_is_zero_like_pytorch():
    layer = rp.ReLU()
    x = np.array([[-1.0, 0.0, 2.0]])
    _, cache = layer.forward([], x)
    assert np.array_equal(layer.vjp([], cache, np.ones((1, 1, 3)))[0, 0], [0.0, 0.0, 1.0])


def test_maxpool_ties_route_to_the_first_maximum():
    layer = rp.MaxPool2d(2)
    x = np.ones((1, 1, 2, 2))
    _, cache = layer.forward([], x)
    g = layer.vjp([], cache, np.ones((1, 1, 1, 1, 1)))[0, 0, 0]
    assert np.array_equal(g, [[1.0, 0.0], [0.0, 0.0]])


def test_activation_values_are_stable_for_large_inputs():
    z = np.array([[-800.0, -30.0, 0.0, 30.0, 800.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        s, _ = rp.Sigmoid().forward([], z)
        sp, _ = rp.Softplus().forward([], z)
    assert_close(s, 1 / (1 + np.exp(-np.clip(z, -700, 700))), 1e-15, 1e-300, "sigmoid")
    assert_close(sp, [[0.0, np.log1p(np.exp(-30.0)), np.log(2.0), 30.0 + np.log1p(np.exp(-30.0)), 800.0]],
                 1e-15, 1e-300, "softplus")
