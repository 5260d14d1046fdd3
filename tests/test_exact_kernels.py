"""The routes of the exact assembly (docs/derivations.md §12) against references that do
not use them: the R-operator applied to every unit vector (``curvature_products``, which
pushes parameter tangents through the whole network and never forms a block), the
per-sample gradient tangents of §4 (``_T_ROUTE``, the general route), finite differences
of the gradient, and hand-counted cost-model values.

Every route is forced in turn: the Khatri-Rao product and the one-product-per-pair route
of dense pairs, the general route, the identity and Jacobian seeds, and the rows through
the network output of a layer followed only by ReLU/Flatten and the last Linear."""

import numpy as np
import pytest

import refprune as rp
from refprune import derivatives as _d
from refprune.checks import validate
from refprune.curvature import dense_pairs, exact
from refprune.testing.finite_differences import check_hessian

ARCHS = {
    # non-adjacent dense pairs (0, 4) and (0, 2)-(4): a Linear between, so dU is dense
    "dense-bias": lambda: rp.Sequential(rp.Linear(3, 4), rp.Tanh(), rp.Linear(4, 3), rp.Sigmoid(), rp.Linear(3, 2)),
    # no bias on two layers; Flatten of a vector and an activation between dense layers
    "dense-nobias-flatten": lambda: rp.Sequential(rp.Linear(3, 4, bias=False), rp.Softplus(), rp.Flatten(),
                                                  rp.Linear(4, 3, bias=False), rp.Tanh(), rp.Linear(3, 2)),
    "conv-only": lambda: rp.Sequential(rp.Conv2d(1, 2, 3, padding=1), rp.Tanh(), rp.Conv2d(2, 1, 2), rp.Flatten()),
    # pooling and Flatten between a conv and the dense layers
    "mixed-avgpool": lambda: rp.Sequential(rp.Conv2d(1, 2, 3, padding=1), rp.Tanh(), rp.AvgPool2d(2), rp.Flatten(),
                                           rp.Linear(8, 4), rp.Tanh(), rp.Linear(4, 3)),
    "mixed-maxpool-stride": lambda: rp.Sequential(rp.Conv2d(1, 2, 2, stride=2, padding=1), rp.ReLU(), rp.MaxPool2d(2),
                                                  rp.Flatten(), rp.Linear(2, 3, bias=False), rp.Softplus(),
                                                  rp.Linear(3, 3)),
    # convolutions with one output location are dense pairs too; the second one's features
    # are im2col patches with padding, so dU is not the identity even with only Tanh between
    "conv-one-location": lambda: rp.Sequential(rp.Conv2d(1, 2, 3), rp.Tanh(), rp.Conv2d(2, 2, 3, padding=1),
                                               rp.Tanh(), rp.Flatten(), rp.Linear(2, 2)),
    # net (c) of the benchmark in small: the second convolution's rows go through the output
    # (only ReLU and Flatten before the last Linear); the first's do not (a convolution between)
    "conv-relu-linear": lambda: rp.Sequential(rp.Conv2d(1, 2, 3, padding=1), rp.ReLU(), rp.Conv2d(2, 3, 3, padding=1),
                                              rp.ReLU(), rp.Flatten(), rp.Linear(48, 3)),
    # the first convolution's Jacobian-seeded tangents go through the second one channel by
    # channel: two input channels, a stride, a bias only on the first convolution
    "conv-channels-stride": lambda: rp.Sequential(rp.Conv2d(2, 3, 2, stride=2, padding=1), rp.ReLU(),
                                                  rp.Conv2d(3, 4, 3, padding=1, bias=False), rp.Flatten(),
                                                  rp.Linear(64, 3)),
    # the same with two activations between and no bias first (channel by channel only
    # for the GGN and the Fishers: Sigmoid's phi'' counts for the Hessian)
    "conv-channels-sigmoid": lambda: rp.Sequential(rp.Conv2d(2, 3, 3, stride=2, padding=1, bias=False), rp.Sigmoid(),
                                                   rp.ReLU(), rp.Conv2d(3, 4, 2, padding=1), rp.ReLU(), rp.Flatten(),
                                                   rp.Linear(64, 3)),
    # ReLU after Flatten, no biases, and a stride: the mask is read in the flat order
    "conv-flatten-relu": lambda: rp.Sequential(rp.Conv2d(1, 2, 2, stride=2, padding=1, bias=False), rp.Flatten(),
                                               rp.ReLU(), rp.Linear(18, 3, bias=False)),
}
IN_SHAPES = {"conv-one-location": (1, 3, 3), "dense-bias": (3,), "dense-nobias-flatten": (3,), "conv-only": (1, 4, 4), "mixed-avgpool": (1, 4, 4),
             "mixed-maxpool-stride": (1, 4, 4), "conv-relu-linear": (1, 4, 4), "conv-flatten-relu": (1, 4, 4),
             "conv-channels-stride": (2, 6, 6), "conv-channels-sigmoid": (2, 6, 6)}
LOSSES = {"ce": rp.CrossEntropyLoss, "mse": rp.MSELoss, "bce": rp.BCEWithLogitsLoss}
MATRICES = ["hessian", "ggn", "residual", "fisher", "mc_fisher", "empirical_fisher"]
ROUTES = ["default", "khatri-rao", "pairs", "t-route", "identity-seed", "jacobian-seed", "output-factor",
          "all-channels"]


def case(arch, loss="ce", n=5, seed=0):
    model = ARCHS[arch]()
    rng = np.random.default_rng(seed)
    params = [2.0 * p for p in model.init(seed)]  # well inside the activations' curvature
    X = rng.standard_normal((n,) + IN_SHAPES[arch])
    c = model.output_shape(IN_SHAPES[arch])[0]
    lf = LOSSES[loss]()
    if loss == "ce":
        y = rng.integers(0, c, n)
    elif loss == "bce":
        y = rng.integers(0, 2, (n, c)).astype(float)
    else:
        y = rng.standard_normal((n, c))
    return model, params, X, y, lf


MC = {"mc_fisher": dict(samples=2, seed=3)}


def compute(name, *args, **kwargs):
    if name in ("hessian", "ggn", "residual"):
        return getattr(rp, name)(*args, **kwargs)
    return rp.fisher(*args, curvature=name, **MC.get(name, {}), **kwargs)


def reference(name, model, params, X, y, loss):
    """``R sum_n`` of the R-operator on every unit vector of theta (docs §5): no blocks,
    no seeds at a layer, no features products."""
    inp = validate(model, params, X, y, loss)
    kind, second_order = exact._KINDS[name]
    f, caches, douts = _d.gradient_pass(inp)
    phi = _d.loss_curvature_matvec(inp, kind, **MC.get(name, {}))
    return inp.scale * _d.curvature_products(inp, caches, douts, f, np.eye(model.n_params), phi, second_order)


@pytest.fixture(params=ROUTES)
def route(request, monkeypatch):
    if request.param == "khatri-rao":
        monkeypatch.setattr(dense_pairs, "per_pair", lambda *a: False)
    elif request.param == "pairs":
        monkeypatch.setattr(dense_pairs, "per_pair", lambda *a: True)
    elif request.param == "t-route":
        monkeypatch.setattr(exact, "_T_ROUTE", True)
    elif request.param == "identity-seed":
        monkeypatch.setattr(exact, "_FORCE_SEED", "identity")
    elif request.param == "jacobian-seed":
        monkeypatch.setattr(exact, "_FORCE_SEED", "jacobian")
    elif request.param == "output-factor":  # wherever the layers after allow it
        monkeypatch.setattr(exact, "_FORCE_SEED", "output")
    elif request.param == "all-channels":  # the seed's tangents through every channel of the next convolution
        monkeypatch.setattr(exact, "_ALL_CHANNELS", True)
    return request.param


def assert_rel(A, B, rtol=1e-12):
    scale = max(np.max(np.abs(B)), 1e-300)
    assert np.max(np.abs(A - B)) <= rtol * scale, f"max |A - B| / max |B| = {np.max(np.abs(A - B)) / scale:.3g}"


@pytest.mark.parametrize("arch", list(ARCHS))
def test_every_route_gives_the_hessian_of_the_r_operator(route, arch):
    args = case(arch)
    assert_rel(rp.hessian(*args), reference("hessian", *args))


@pytest.mark.parametrize("name", MATRICES)
@pytest.mark.parametrize("arch", ["dense-bias", "dense-nobias-flatten", "mixed-avgpool"])
@pytest.mark.parametrize("route_name", ["khatri-rao", "pairs"])
def test_dense_routes_give_every_matrix(monkeypatch, name, arch, route_name):
    monkeypatch.setattr(dense_pairs, "per_pair", lambda *a: route_name == "pairs")
    args = case(arch, "mse" if name == "residual" else "ce")
    assert_rel(compute(name, *args), reference(name, *args))


@pytest.mark.parametrize("name", MATRICES)
@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("arch", ["conv-relu-linear", "conv-flatten-relu", "dense-bias", "conv-channels-stride",
                                  "conv-channels-sigmoid"])
@pytest.mark.parametrize("force", [None, "output", "jacobian", "all-channels"])
def test_rows_through_the_output_give_every_matrix(monkeypatch, name, loss, arch, force):
    # "dense-bias" with the GGN and the Fishers: Tanh's phi'' does not count there, so its
    # first layer may go through the output too; with the Hessian it must not
    if force == "all-channels":
        monkeypatch.setattr(exact, "_ALL_CHANNELS", True)
    else:
        monkeypatch.setattr(exact, "_FORCE_SEED", force)
    args = case(arch, "mse" if name == "residual" and loss == "ce" else loss)
    assert_rel(compute(name, *args), reference(name, *args))


def test_rows_through_the_output_only_where_no_second_order_term_is_lost():
    relu = ARCHS["conv-relu-linear"]()
    shapes = exact._in_shapes(relu, IN_SHAPES["conv-relu-linear"])
    assert [exact._output_factor_eligible(relu, l, True) for l in (0, 2)] == [False, True]
    assert exact._through_output(relu, 2, shapes, True)  # the cost model picks it there
    tanh = ARCHS["dense-bias"]()
    assert not exact._output_factor_eligible(tanh, 2, True) and exact._output_factor_eligible(tanh, 2, False)
    pool = ARCHS["mixed-maxpool-stride"]()
    assert not exact._output_factor_eligible(pool, 0, False)


def test_the_channel_route_is_taken_where_it_applies():
    for arch, expected in [("conv-relu-linear", 2), ("conv-channels-stride", 2), ("conv-channels-sigmoid", 3),
                           ("mixed-avgpool", None), ("conv-flatten-relu", None)]:
        assert exact._channel_conv(ARCHS[arch](), 0) == expected, arch
    model = ARCHS["conv-channels-stride"]()
    assert exact._back_by_outputs(model, 0, exact._in_shapes(model, IN_SHAPES["conv-channels-stride"]), True)


@pytest.mark.parametrize("conv, shape", [(rp.Conv2d(3, 4, 3, stride=2, padding=1), (3, 6, 5)),
                                         (rp.Conv2d(2, 3, 2, bias=False), (2, 4, 4))])
def test_one_channel_tangents_against_the_full_features(conv, shape):
    # tangents that are zero outside one input channel each, put into the full input shape
    # and sent through features / jvp / param_grad_input_tangent
    rng = np.random.default_rng(1)
    params = conv.init(rng)
    n, k = 3, 5
    _, cache = conv.forward(params, rng.standard_normal((n,) + shape))
    channels = rng.integers(0, shape[0], k)
    v = rng.standard_normal((n, k) + shape[1:])
    full = np.zeros((n, k) + shape)
    full[:, np.arange(k), channels] = v
    dU = conv.input_tangent_features(full)  # (n, k, c_in kh kw, T)
    F = conv.channel_features(v.reshape((n * k,) + shape[1:]))
    F = F.reshape((n, k) + F.shape[1:])
    q = F.shape[2]
    assert F.shape[2:] == (dU.shape[2] // shape[0], dU.shape[3])
    for j in range(k):
        assert np.array_equal(F[:, j], dU[:, j, channels[j] * q : (channels[j] + 1) * q])
    assert_rel(conv.channel_jvp(params, F, channels, shape), conv.jvp(params, cache, full))
    dy0 = rng.standard_normal((n, 1) + conv.output_shape(shape))
    assert_rel(conv.channel_input_tangent(F, channels, dy0), conv.param_grad_input_tangent(dU, dy0))


def test_output_factor_cost_counted_by_hand():
    # Conv2d(1, 2, 2) on 1x3x3 (T = 4, r = 4, n_l = 10), Flatten, Linear(8, 2) (n_m = 18, C = 2):
    # J: 2 * (r + 1) T c_out C = 2 * 5 * 4 * 2 * 2 = 160, twice (J and the dU term) = 320;
    # loss 2 * 10 * 4 = 80; diagonal 2 * 100 * 2 = 400; against the Linear 2 * 10 * 18 = 360
    model = rp.Sequential(rp.Conv2d(1, 2, 2), rp.Flatten(), rp.Linear(8, 2))
    assert exact.output_factor_cost(model, 0, exact._in_shapes(model, (1, 3, 3))) == 1160


def test_back_costs_counted_by_hand():
    # Conv2d(1, 2, 2) on 1x3x3 (n_0 = 10, T = 4), ReLU, Flatten, Linear(8, 2) (n = 18, C = 2):
    # one direction back: ReLU 8 + 8, Flatten 8 + 8, Linear 2 * 16 = 64;
    # pull back: 10 * 64 + 2 * 10 * 10 * 4 (layer 0) + 2 * 10 * 18 (the Linear) = 1800;
    # output Jacobians: 2 * 64 + 2 * 100 * 2 (diagonal) + 2 * 10 * 18 = 888
    model = rp.Sequential(rp.Conv2d(1, 2, 2), rp.ReLU(), rp.Flatten(), rp.Linear(8, 2))
    shapes = exact._in_shapes(model, (1, 3, 3))
    assert exact.back_costs(model, 0, shapes) == (1800, 888)
    # a Conv2d(2, 1, 2) between (on 2x2: T = 1, n = 9): it adds 2 * 8 to the direction (80),
    # 2 * 10 * 9 to the pull back and 2 * 2 * 9 + 2 * 10 * 2 * 9 to the output Jacobians;
    # Linear(1, 2): 2 * 2 back, n = 4
    model = rp.Sequential(rp.Conv2d(1, 2, 2), rp.ReLU(), rp.Conv2d(2, 1, 2), rp.Flatten(), rp.Linear(1, 2))
    shapes = exact._in_shapes(model, (1, 3, 3))
    # direction back: ReLU 8 + 8, Conv 2 * 8 * 1, Flatten 1 + 1, Linear 2 * 2 = 38
    # pull: 10 * 38 + 800 + 2 * 10 * 9 + 2 * 10 * 4 = 1440; out: 2 * 38 + 400 + (36 + 360) + 2 * 10 * 4 = 952
    assert exact.back_costs(model, 0, shapes) == (1440, 952)
    assert exact._back_by_outputs(model, 0, shapes, True)
    assert not exact._back_by_outputs(ARCHS["dense-bias"](), 0, exact._in_shapes(ARCHS["dense-bias"](), (3,)), True)


@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("name", ["hessian", "ggn", "residual"])
def test_every_loss(route, loss, name):
    args = case("dense-bias", loss)
    assert_rel(compute(name, *args), reference(name, *args))


@pytest.mark.parametrize("arch", ["dense-bias", "mixed-maxpool-stride"])
def test_hessian_against_finite_differences_of_the_gradient(arch):
    model, params, X, y, loss = case(arch)
    H = rp.hessian(model, params, X, y, loss)
    theta = rp.flatten_params(params)

    def grad(t):
        return rp.grad(model, rp.unflatten_params(model, t), X, y, loss)

    check_hessian(grad, H, theta, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("arch", ["dense-bias", "dense-nobias-flatten", "mixed-avgpool"])
@pytest.mark.parametrize("name", ["hessian", "ggn", "residual"])
def test_rows_of_some_units_are_those_rows_of_the_matrix(route, arch, name):
    model, params, X, y, loss = case(arch, "mse" if name == "residual" else "ce")
    H = compute(name, model, params, X, y, loss)
    inp = validate(model, params, X, y, loss)
    offsets = model.param_offsets()
    for l in exact._param_layers(model):
        layer = model[l]
        for units in [(0, 1), (1, layer.out_units)]:
            rows = exact.rows_task(model, params, X, y, loss, inp.scale, name, None, l, units)
            idx = offsets[l] + layer.unit_rows(units)
            assert_rel(rows, H[idx, offsets[l]:])


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("name", ["hessian", "ggn"])
def test_chunked_samples_and_temporaries_agree(route, monkeypatch, arch, name):
    args = case(arch, n=7)
    whole = compute(name, *args)
    # a budget this small splits every layer's samples and the dense products' columns
    monkeypatch.setattr(_d, "CHUNK_FLOATS", 40)
    assert_rel(compute(name, *args), whole)


@pytest.mark.parametrize("route_name", ["khatri-rao", "pairs"])
def test_dense_diagonal_blocks_are_exactly_symmetric(monkeypatch, route_name):
    monkeypatch.setattr(dense_pairs, "per_pair", lambda *a: route_name == "pairs")
    model, params, X, y, loss = case("dense-bias")
    H = rp.hessian(model, params, X, y, loss)
    o = model.param_offsets()
    for l in exact._param_layers(model):
        block = H[o[l]:o[l + 1], o[l]:o[l + 1]]
        if route_name == "khatri-rao":
            assert np.array_equal(block, block.T)
        else:  # the bias rows and columns come from two different small products
            assert_rel(block, block.T, 1e-15)


def test_a_memmap_is_written_in_place(tmp_path):
    args = case("dense-bias")
    H = rp.hessian(*args)
    n = H.shape[0]
    out = np.lib.format.open_memmap(tmp_path / "h.npy", mode="w+", dtype=np.float64, shape=(n, n))
    assert rp.hessian(*args, out=out) is out
    assert np.array_equal(np.load(tmp_path / "h.npy"), H)


@pytest.mark.parametrize("layer, x_shape", [(rp.Conv2d(2, 3, 3, stride=2, padding=1), (4, 2, 5, 6)),
                                            (rp.Conv2d(2, 3, 2, bias=False), (4, 2, 4, 4)),
                                            (rp.Linear(5, 3), (4, 5))])
def test_param_jacobian_is_param_jvp_of_the_identity(layer, x_shape):
    rng = np.random.default_rng(0)
    params = layer.init(rng)
    _, cache = layer.forward(params, rng.standard_normal(x_shape))
    for rows in (None, layer.unit_rows((1, 3))):
        eye = np.eye(layer.n_params) if rows is None else np.eye(layer.n_params)[rows]
        assert np.array_equal(layer.param_jacobian(cache, rows), layer.param_jvp(params, cache, layer.split_flat(eye)))


def test_seed_costs_counted_by_hand():
    # Linear(3, 4) - Tanh - Linear(4, 2), rows of layer 0 (n_0 = 16, n_2 = 10, one location):
    # propagation per direction: Tanh 2 (4 + 4) + Linear 4 * 8 = 48;
    # identity (4 directions): 4 * 48 + 2 * 16 * (16 + 10) = 1024;
    # Jacobian (16 directions): 16 * 48 + 2 * 16 * 12 (the seed) + 2 * 16 * (16 + 10) = 1984
    model = rp.Sequential(rp.Linear(3, 4), rp.Tanh(), rp.Linear(4, 2))
    shapes = exact._in_shapes(model, (3,))
    assert exact.seed_costs(model, 0, shapes) == (1024, 1984)
    # Conv2d(1, 2, 2) on 1x3x3 (T = 4, n_l = 10, K_id = 8) then Flatten - Linear(8, 2) (n = 18):
    # propagation: Flatten 2 (8 + 8) + Linear 4 * 16 = 96; identity: 8 * 96 + (2 * 8 * 10 * 4 +
    # 2 * 4 * 10 * 10) + (2 * 8 * 18 + 2 * 4 * 10 * 18) = 768 + 1440 + 1728 = 3936;
    # Jacobian: 10 * 96 + 2 * 10 * 8 * 4 + 2 * 10 * 10 * 4 + 2 * 10 * 18 = 960 + 640 + 800 + 360 = 2760
    model = rp.Sequential(rp.Conv2d(1, 2, 2), rp.Flatten(), rp.Linear(8, 2))
    shapes = exact._in_shapes(model, (1, 3, 3))
    assert exact.seed_costs(model, 0, shapes) == (3936, 2760)
    assert exact._jacobian_seed(model, 0, shapes) and not exact._jacobian_seed(model, 2, shapes)


@pytest.mark.parametrize("arch", ["dense-bias", "mixed-avgpool"])
@pytest.mark.parametrize("name", ["hessian", "ggn", "mc_fisher"])
def test_layer_blocks_are_the_diagonal_blocks_of_the_matrix(route, arch, name):
    model, params, X, y, loss = case(arch)
    H = compute(name, model, params, X, y, loss)
    blocks = exact.layer_blocks(validate(model, params, X, y, loss), name, MC.get(name, {}).get("samples", 1),
                                MC.get(name, {}).get("seed", 0), None)
    o = model.param_offsets()
    assert [l for l, _ in blocks] == exact._param_layers(model)
    for l, block in blocks:
        assert_rel(block, H[o[l]:o[l + 1], o[l]:o[l + 1]])


def test_the_route_rule_counts_and_refuses_small_pair_products():
    # the count of docs §12 (N < 2 r_m + N r_m / (K_l K_m)) worked by hand, and the
    # product size below which a pair's product is never chosen
    assert dense_pairs.per_pair(128, 10, 10, 513, 513)          # 128 < 1026 + 656.64
    assert dense_pairs.per_pair(1000, 64, 64, 513, 513)         # 1000 < 1026 + 125.24
    assert not dense_pairs.per_pair(2000, 64, 64, 513, 513)     # 2000 > 1026 + 250.49
    assert dense_pairs.per_pair(8, 64, 64, 65)                  # the count alone: 8 < 130 + 0.13
    assert not dense_pairs.per_pair(8, 64, 64, 65, 65)          # but 65 x 65 < 128 x 128 results
    assert dense_pairs.per_pair(8, 64, 64, 128, 128) and not dense_pairs.per_pair(8, 64, 64, 128, 127)


@pytest.mark.parametrize("layer, x_shape", [(rp.Conv2d(2, 3, 2, stride=2, padding=1), (4, 2, 5, 6)),
                                            (rp.Linear(5, 3), (4, 5))])
def test_param_grad_rows_into_rows_of_a_larger_array(layer, x_shape):
    rng = np.random.default_rng(2)
    params = layer.init(rng)
    y, cache = layer.forward(params, rng.standard_normal(x_shape))
    dy = rng.standard_normal((x_shape[0], 6) + y.shape[1:])
    big = np.full((9, layer.n_params + 4), np.nan)
    dest = big[2:8, 3 : 3 + layer.n_params]
    assert layer.param_grad_rows(cache, dy, out=dest) is dest
    assert np.array_equal(dest, layer.param_grad_rows(cache, dy))
    assert np.isnan(big[:2]).all() and np.isnan(big[8:]).all() and np.isnan(big[:, :3]).all()
    assert np.isnan(big[:, 3 + layer.n_params :]).all()
    column_major = np.empty((layer.n_params, 6)).T
    layer.param_grad_rows(cache, dy, out=column_major)
    assert np.array_equal(column_major, dest)


@pytest.mark.parametrize("arch", ["conv-relu-linear", "conv-channels-stride", "conv-channels-sigmoid", "dense-bias"])
@pytest.mark.parametrize("name", ["hessian", "ggn", "fisher"])
def test_same_inputs_same_bits(arch, name):
    # the whole batch's gradient pass is shared by the layers' rows and the channel route
    # forms its tangents afresh: a second call, and the rows one layer at a time, agree bit for bit
    args = case(arch, n=6)
    first = compute(name, *args)
    assert np.array_equal(compute(name, *args), first)
    model, params, X, y, loss = args
    inp = validate(model, params, X, y, loss)
    o = model.param_offsets()
    for l in exact._param_layers(model):
        rows = exact.rows_task(model, params, X, y, loss, inp.scale, name, None, l, None)
        assert np.array_equal(rows, first[o[l]:o[l + 1], o[l]:])
