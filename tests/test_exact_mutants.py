"""Edges of the exact assembly (refprune/curvature/exact.py) that the route tests of
test_exact_kernels.py do not reach, from the fifth mutation pass (docs/mutation/exact.md):

- the cost model of docs/derivations.md §12 counted by hand where a convolution with
  several locations follows the layer, where an affine layer follows it directly, and for
  the last layer; the counts are exact integers; a tie takes the identity seed;
- which route the assembly takes (the routes agree on the matrix, so a wrong choice is
  seen only as a route taken or not): spies on the output-Jacobian route, the channel
  route, the chunk widths and the diagonal ``dU`` of dense pairs;
- a loss whose curvature depends on the targets (every built-in one's does not), against
  finite differences of the gradient;
- the samples' chunks of the route through the output for the sampled Fishers, a last
  chunk of one sample, the shared whole-batch pass left read-only;
- the progress line of the route through the output.
"""

import concurrent.futures
import types

import numpy as np
import pytest

import refprune as rp
from refprune import derivatives as _d
from refprune.curvature import dense_pairs, exact
from refprune.testing.finite_differences import check_hessian

from test_exact_kernels import IN_SHAPES, assert_rel, case, compute, reference


def conv_relu_conv():
    """Conv2d(1, 2, 2) on 1x4x4 (z_0: 2x3x3, T = 9, n_0 = 10), ReLU, Conv2d(2, 2, 2)
    (z_2: 2x2x2, T = 4, n_2 = 18), Flatten, Linear(8, 2) (n_4 = 18)."""
    model = rp.Sequential(rp.Conv2d(1, 2, 2), rp.ReLU(), rp.Conv2d(2, 2, 2), rp.Flatten(), rp.Linear(8, 2))
    return model, exact._in_shapes(model, (1, 4, 4))


def conv_conv():
    """The same without the ReLU: the second convolution follows the first directly."""
    model = rp.Sequential(rp.Conv2d(1, 2, 2), rp.Conv2d(2, 2, 2), rp.Flatten(), rp.Linear(8, 2))
    return model, exact._in_shapes(model, (1, 4, 4))


def test_seed_costs_with_a_convolution_of_four_locations_after():
    model, shapes = conv_relu_conv()
    # one direction (docs §12): ReLU 2 (18 + 18) = 72, Conv2d 4 * 16 * 4 = 256,
    # Flatten 2 (8 + 8) = 32, Linear 4 * 16 * 1 = 64: 424
    # identity (18 directions): 18 * 424 = 7632, then per later affine layer m
    # 2 K_id n_m T_m + 2 T_l n_l n_m: (3240 + 1800) + (2592 + 3240) + (648 + 3240) -> 22392
    # Jacobian (10 directions): 10 * 424 + 2 * 10 * 8 * 9 = 5680, then 2 n_l n_m T_m:
    # 1800 + 1440 + 360 -> 9280
    costs = exact.seed_costs(model, 0, shapes)
    assert costs == (22392, 9280) and all(type(c) is int for c in costs)
    # rows of the second convolution (n_l = 18, T_l = 4, K_id = 8): one direction 32 + 64 = 96;
    # identity 8 * 96 + (1152 + 2592) + (288 + 2592) = 7392; Jacobian 18 * 96 + 2 * 18 * 16 * 4
    # + 2592 + 648 = 7272.  Layer 0 comes before it and is not counted.
    assert exact.seed_costs(model, 2, shapes) == (7392, 7272)


def test_back_costs_with_a_convolution_of_four_locations_after():
    model, shapes = conv_relu_conv()
    # one direction back: ReLU 18 + 18, Conv2d 2 * 16 * 4 = 128, Flatten 8 + 8, Linear 2 * 16: 212
    # pull: 10 * 212 + 2 * 10 * 10 * 9 + 2 * 10 * 18 * 4 + 2 * 10 * 18 = 5720
    # out:  2 * 212 + 2 * 100 * 2 + (2 * 2 * 18 * 4 + 2 * 10 * 2 * 18) + 2 * 10 * 18 = 2192
    costs = exact.back_costs(model, 0, shapes)
    assert costs == (5720, 2192) and all(type(c) is int for c in costs)
    # the convolution right after layer 0: one direction 128 + 16 + 32 = 176;
    # pull 10 * 176 + 1800 + 1440 + 360 = 5360; out 2 * 176 + 400 + 1008 + 360 = 2120
    model, shapes = conv_conv()
    assert exact.back_costs(model, 0, shapes) == (5360, 2120)


def test_rows_width_by_hand():
    model, shapes = conv_relu_conv()
    # from z_0 (18) on: ReLU 18, 18; Conv2d in 18, out 8, features r T = 8 * 4 = 32;
    # Flatten 8, 8; Linear 8, 2, features 8: the widest is 32
    assert exact._rows_width(model, 0, shapes) == 32
    # one channel up to the second convolution: its features 4 * 4 = 16, the rest as before
    # but the seed's own z_0 (18) is the widest
    assert exact._rows_width(model, 0, shapes, 2) == 18
    # the convolution right after layer 0 (its features are the widest)
    model, shapes = conv_conv()
    assert exact._rows_width(model, 0, shapes) == 32
    # the last layer: its output alone
    dense = rp.Sequential(rp.Linear(3, 20), rp.Tanh(), rp.Linear(20, 2))
    assert exact._rows_width(dense, 2, exact._in_shapes(dense, (3,))) == 2


def test_a_tie_of_the_seed_costs_takes_the_identity(monkeypatch):
    model, shapes = conv_relu_conv()
    monkeypatch.setattr(exact, "seed_costs", lambda *a: (100, 100))
    assert not exact._jacobian_seed(model, 0, shapes)
    monkeypatch.setattr(exact, "seed_costs", lambda *a: (100, 99))
    assert exact._jacobian_seed(model, 0, shapes)


class CurvedFlatten(rp.Flatten):
    """A user's layer with second-order terms of its own (``vjp_curvature`` overridden)."""

    def vjp_curvature(self, params, cache, dy0, dx):
        return None


def test_the_output_jacobians_need_every_later_layer_without_terms_of_its_own():
    # the last two layers, both Linear: the output Jacobians apply to the first
    two = rp.Sequential(rp.Linear(3, 4), rp.Linear(4, 2))
    assert exact._ends_in_linear(two, 0) and exact._output_jacobians_eligible(two, 0, True)
    assert not exact._ends_in_linear(two, 1)
    # a Sigmoid before the layer does not count, one after it does (for the Hessian)
    model = rp.Sequential(rp.Conv2d(1, 2, 2), rp.Sigmoid(), rp.Conv2d(2, 2, 2), rp.Flatten(), rp.Linear(8, 2))
    assert exact._output_jacobians_eligible(model, 2, True)
    assert not exact._output_jacobians_eligible(model, 0, True) and exact._output_jacobians_eligible(model, 0, False)
    curved = rp.Sequential(rp.Conv2d(1, 2, 2), CurvedFlatten(), rp.Linear(18, 2))
    assert not exact._output_jacobians_eligible(curved, 0, False)
    assert exact._output_jacobians_eligible(rp.Sequential(rp.Conv2d(1, 2, 2), rp.Flatten(), rp.Linear(18, 2)), 0,
                                            False)


def test_the_channel_convolution(monkeypatch):
    assert exact._channel_conv(conv_conv()[0], 0) == 1  # right after
    assert exact._channel_conv(conv_relu_conv()[0], 0) == 2
    monkeypatch.setattr(exact, "_ALL_CHANNELS", True)
    assert exact._channel_conv(conv_relu_conv()[0], 0) is None


def spy(monkeypatch, module, name):
    """Record the arguments of every call of ``module.name`` (a module's function or one
    object's method, which still runs)."""
    calls, original = [], getattr(module, name)

    def recording(*args, **kwargs):
        calls.append((args, kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, recording)
    return calls


def conv_relu_conv_case(n=3):
    model, _ = conv_relu_conv()
    rng = np.random.default_rng(5)
    return model, model.init(5), rng.standard_normal((n, 1, 4, 4)), rng.integers(0, 2, n), rp.CrossEntropyLoss()


def test_the_first_convolution_s_rows_go_channel_by_channel_through_the_output_jacobians(monkeypatch):
    # layer 0: the Jacobian seed (9280 < 22392), the output Jacobians (2192 < 5720), one
    # channel up to the second convolution, whose rows are chunked by that width (18, not 32)
    by_outputs = spy(monkeypatch, exact, "_rows_from_output_jacobians")
    by_channel = spy(monkeypatch, exact, "_seed_by_channel")
    widths = spy(monkeypatch, _d, "chunk_length")
    args = conv_relu_conv_case()
    H = rp.hessian(*args)
    assert [c[0][1] for c in by_outputs] == [0] and [c[0][1:3] for c in by_channel] == [(0, 2)]
    assert widths[0][0] == (10, 18)
    monkeypatch.undo()
    assert_rel(H, reference("hessian", *args))


def test_dense_pairs_take_the_diagonal_input_tangent_only_through_elementwise_layers(monkeypatch):
    # Linear - Linear - Tanh - Linear (one location each, identity seeds): dU of the last
    # layer is diagonal in the rows of the second (only Tanh between) and of the last
    # itself, not in those of the first (the second Linear between); the matrix is the
    # R-operator's all the same
    model = rp.Sequential(rp.Linear(3, 4), rp.Linear(4, 3), rp.Tanh(), rp.Linear(3, 2))
    monkeypatch.setattr(exact, "_FORCE_SEED", "identity")
    calls = spy(monkeypatch, dense_pairs, "dense_rows")
    rng = np.random.default_rng(2)
    args = (model, [2.0 * p for p in model.init(2)], rng.standard_normal((5, 3)), rng.integers(0, 2, 5),
            rp.CrossEntropyLoss())
    H = rp.hessian(*args)
    # rows of layer l against layer j, j from the last down to l: (l, j, diagonal)
    seen = [(c[0][1], c[0][3], c[0][7]) for c in calls]
    assert seen == [(model[0], model[3], False), (model[0], model[1], True), (model[0], model[0], True),
                    (model[1], model[3], True), (model[1], model[1], True), (model[3], model[3], True)]
    assert_rel(H, reference("hessian", *args))


class TargetWeightedSquares(rp.MSELoss):
    """``l_n = sum_c (1 + y_c^2) (f_c - y_c)^2``: a loss whose curvature ``2 (1 + y^2)``
    depends on the targets, as none of the built-in losses' does."""

    def per_sample(self, f, y):
        return np.sum((1 + y ** 2) * (f - y) ** 2, axis=1)

    def grad(self, f, y):
        return 2.0 * (1 + y ** 2) * (f - y)

    def hessian_matvec(self, f, y, V):
        return 2.0 * (1 + y ** 2)[:, None, :] * V


@pytest.mark.parametrize("arch", ["conv-relu-linear", "dense-bias"])
def test_a_loss_whose_curvature_depends_on_the_targets(arch):
    # conv-relu-linear: the second convolution's rows through the output, the first's by
    # the seeds; dense-bias: the seeds and dense pairs.  Against the R-operator, and for
    # the smooth net (no ReLU kinks in the way) finite differences of the gradient.
    model, params, X, _, _ = case(arch, "mse")
    y = np.random.default_rng(9).standard_normal((len(X), model.output_shape(IN_SHAPES[arch])[0]))
    loss = TargetWeightedSquares()
    H = rp.hessian(model, params, X, y, loss)
    assert_rel(H, reference("hessian", model, params, X, y, loss))
    assert not np.allclose(H, rp.hessian(model, params, X, np.zeros_like(y) + y.mean(), loss), rtol=1e-3)
    if arch == "dense-bias":
        def grad(t):
            return rp.grad(model, rp.unflatten_params(model, t), X, y, loss)

        check_hessian(grad, H, rp.flatten_params(params), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", ["mc_fisher", "empirical_fisher", "hessian"])
def test_chunks_of_samples_through_the_output(monkeypatch, name):
    # the second convolution of conv-relu-linear: its rows through the output, every chunk
    # reading its own slice of the sampled targets
    args = case("conv-relu-linear", n=7)
    calls = spy(monkeypatch, exact, "_rows_through_output")
    whole = compute(name, *args)
    assert [c[0][7] for c in calls] == [slice(0, 7)]
    calls.clear()
    monkeypatch.setattr(_d, "CHUNK_FLOATS", 40)
    chunked = compute(name, *args)
    idx = [c[0][7] for c in calls]
    assert len(idx) > 1 and [(s.start, s.stop) for s in idx] == list(zip([0] + [s.stop for s in idx[:-1]],
                                                                         [s.stop for s in idx]))
    assert idx[-1].stop == 7
    assert_rel(chunked, whole)


def test_a_last_chunk_of_one_sample(monkeypatch):
    # two samples, one a chunk: the second chunk (1, 2) ends the batch but is not the batch
    args = case("dense-bias", n=2)
    whole = rp.hessian(*args)
    passes = spy(monkeypatch, _d, "gradient_pass")
    monkeypatch.setattr(_d, "CHUNK_FLOATS", 1)
    assert_rel(rp.hessian(*args), whole)
    assert {len(c[0][1]) for c in passes} == {1}


def test_the_shared_whole_batch_pass_is_read_only(monkeypatch):
    passes = []
    original = _d.gradient_pass

    def recording(*args):
        passes.append(original(*args))
        return passes[-1]

    monkeypatch.setattr(_d, "gradient_pass", recording)
    rp.hessian(*case("dense-bias"))
    assert len(passes) == 1
    f, caches, douts = passes[0]
    arrays = [f] + [a for c in caches for a in (c if isinstance(c, tuple) else (c,)) if isinstance(a, np.ndarray)]
    arrays += [d for d in douts if isinstance(d, np.ndarray)]
    assert len(arrays) > 3 and not any(a.flags.writeable for a in arrays)


def test_progress_of_rows_through_the_output(capsys, monkeypatch):
    # conv-relu-linear: the second convolution's rows (layer 2) through the output, the
    # first convolution's and the last Linear's by the seeds
    model, *rest = case("conv-relu-linear")
    ticks = iter([10.0, 12.3, 13.5, 14.0])
    monkeypatch.setattr(exact, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks)))
    rp.ggn(model, *rest, progress=True)
    assert capsys.readouterr().err.splitlines() == [
        f"ggn: rows of layer 0 ({model[0]!r}) done [1/3, 2.3 s]",
        f"ggn: rows of layer 2 ({model[2]!r}) done through the output [2/3, 3.5 s]",
        f"ggn: rows of layer 5 ({model[5]!r}) done [3/3, 4.0 s]",
    ]


def test_progress_must_be_a_bool():
    with pytest.raises(TypeError, match="^progress must be True or False, got 'yes'$"):
        rp.hessian(*case("dense-bias"), progress="yes")


def test_the_output_jacobians_are_not_used_under_a_forced_jacobian_seed_nor_on_a_tie(monkeypatch):
    model, shapes = conv_relu_conv()
    assert exact._back_by_outputs(model, 0, shapes, True)  # 2192 < 5720
    monkeypatch.setattr(exact, "_FORCE_SEED", "jacobian")  # the reference route: pull every tangent back
    assert not exact._back_by_outputs(model, 0, shapes, True)
    monkeypatch.setattr(exact, "_FORCE_SEED", None)
    monkeypatch.setattr(exact, "back_costs", lambda *a: (100, 100))
    assert not exact._back_by_outputs(model, 0, shapes, True)


@pytest.mark.parametrize("net", ["conv-conv", "conv-conv-relu", "conv-relu-conv-linear-linear"])
def test_output_jacobians_through_an_affine_layer_right_after_and_before_the_last(monkeypatch, net):
    # conv-conv: the first convolution's rows by the output Jacobians (2120 < 5360), the
    # second convolution right after it, so the outputs' cotangents are pulled back through
    # Flatten to reach it.  The second net has a Linear before the last one.  The last layer's
    # rows come from its shared features (param_grad_rows), the others' from per-sample
    # gradients of the pulled-back cotangents.
    rng = np.random.default_rng(4)
    if net == "conv-conv":
        model = conv_conv()[0]
    elif net == "conv-conv-relu":  # a ReLU after the second convolution: its mask on the way back
        model = rp.Sequential(rp.Conv2d(1, 2, 2), rp.Conv2d(2, 2, 2), rp.ReLU(), rp.Flatten(), rp.Linear(8, 2))
    else:
        model = rp.Sequential(rp.Conv2d(1, 2, 2), rp.ReLU(), rp.Conv2d(2, 2, 2), rp.Flatten(), rp.Linear(8, 3),
                              rp.Linear(3, 2))
    args = (model, [2.0 * p for p in model.init(4)], rng.standard_normal((4, 1, 4, 4)), rng.integers(0, 2, 4),
            rp.CrossEntropyLoss())
    by_outputs = spy(monkeypatch, exact, "_rows_from_output_jacobians")
    last = spy(monkeypatch, model[len(model) - 1], "per_sample_param_grad")
    H = rp.hessian(*args)
    # (the second convolution of conv-conv goes through the output; that of the other net cannot)
    assert [c[0][1] for c in by_outputs] == ([0, 2] if net == "conv-relu-conv-linear-linear" else [0])
    assert last == []
    monkeypatch.undo()
    assert_rel(H, reference("hessian", *args))


def test_output_factor_cost_of_a_convolution_of_four_locations():
    # the second convolution (r + 1 = 9 features, T = 4, 2 channels, n_l = 18) before
    # Flatten - Linear(8, 2) (C = 2, n_m = 18): J 2 * 9 * 4 * 2 * 2 = 288, twice;
    # loss 2 * 18 * 2 * 2 = 144; diagonal 2 * 18 * 18 * 2 = 1296; the Linear 2 * 18 * 18 = 648
    model, shapes = conv_relu_conv()
    cost = exact.output_factor_cost(model, 2, shapes)
    assert cost == 2664 and type(cost) is int


# --- the driver: options, messages, the record of a numpy.memmap of a file ---------------

def small():
    return case("dense-bias", n=4)


def test_max_bytes_and_out_refusals_name_the_argument(tmp_path):
    args = small()
    with pytest.raises(TypeError, match="^max_bytes must be a number, got '8'$"):
        rp.hessian(*args, max_bytes="8")
    out = np.zeros((args[0].n_params,) * 2)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="^hessian: out is read-only$"):
        rp.hessian(*args, out=out)
    n = args[0].n_params
    with pytest.raises(rp.CurvatureTooLargeError, match=rf"; pass out=numpy.memmap\(path, dtype='float64', mode='w\+', "
                                                        rf"shape=\({n}, {n}\)\) to write it to disk$"):
        rp.hessian(*args, max_bytes=8)


@pytest.mark.parametrize("fn", [rp.hessian, rp.ggn])
def test_an_executor_takes_the_task_path(capsys, fn):
    from concurrent.futures import ThreadPoolExecutor

    args = small()
    with ThreadPoolExecutor(1) as ex:
        M = fn(*args, executor=ex, progress=True)
    err = capsys.readouterr().err
    assert "block" in err and "rows of layer" not in err
    assert_rel(M, fn(*args))


def test_targets_with_another_fisher_are_refused_up_front():
    args = small()
    T = np.zeros((1, 4), int)
    for kw in ({}, {"shards": 2}):
        with pytest.raises(ValueError) as e:
            rp.fisher(*args, curvature="fisher", targets=T, **kw)
        assert str(e.value) == ("fisher: targets= is for curvature='mc_fisher', got curvature='fisher' (only Monte "
                                "Carlo draws read it; leave it out)")


@pytest.mark.parametrize("tasks", [{}, {"shards": 2}])
def test_bad_monte_carlo_targets_are_named_by_fisher(tasks):
    args = small()
    with pytest.raises(ValueError, match="^fisher: samples=2 does not apply with targets="):
        rp.fisher(*args, curvature="mc_fisher", samples=2, targets=np.zeros((1, 4), int), **tasks)


def test_the_draws_are_refused_before_the_matrix():
    # both too large: the draws are checked first (before the matrix is allocated)
    args = small()
    with pytest.raises(rp.ArrayTooLargeError, match=r"^fisher: \d+ Monte Carlo target\(s\) for each of 4 "):
        rp.fisher(*args, curvature="mc_fisher", samples=10 ** 15, max_bytes=8)
    with pytest.raises(rp.CurvatureTooLargeError, match=r": the \d+ x \d+ float64 matrix"):
        rp.fisher(*args, curvature="mc_fisher", samples=2, targets=None, max_bytes=8)


@pytest.mark.parametrize("name", ["hessian", "mc_fisher", "empirical_fisher"])
def test_a_memmap_written_in_one_pass_is_the_tasks_record(tmp_path, monkeypatch, name):
    # one pass into a numpy.memmap of a file records it as the task path's one block per
    # layer over one shard would (the same fingerprint, draws included): load_matrix reads it,
    # and the same call as tasks finds nothing to do
    from concurrent.futures import ThreadPoolExecutor
    from refprune.curvature import parallel

    args = small()
    n = args[0].n_params
    path = str(tmp_path / "m.npy")
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(n, n))
    M = compute(name, *args, out=out)
    assert M is out
    assert np.array_equal(rp.load_matrix(path), compute(name, *args))
    submitted = []
    real = parallel.run
    monkeypatch.setattr(parallel, "run", lambda ex, jobs, *a: (submitted.append(len(jobs)), real(ex, jobs, *a)))
    with ThreadPoolExecutor(1) as ex:
        compute(name, *args, out=out, executor=ex)
    assert submitted == [0]
    # another draw of the Monte Carlo targets is another problem
    if name == "mc_fisher":
        with ThreadPoolExecutor(1) as ex, pytest.warns(RuntimeWarning, match="is for another computation \\(.*Monte Carlo targets"):
            rp.fisher(*args, curvature="mc_fisher", samples=2, seed=4, out=out, executor=ex)
        assert submitted[1] == len(exact._param_layers(args[0]))


def test_the_route_through_the_output_when_forced_or_cheaper():
    model, shapes = conv_relu_conv()
    assert exact._through_output(model, 2, shapes, True)  # 2664 < min(7392, 7272)
    dense = rp.Sequential(rp.Linear(3, 4), rp.Tanh(), rp.Linear(4, 2))
    dshapes = exact._in_shapes(dense, (3,))
    # the GGN's rows of the first Linear could go through the output (Tanh's phi'' does not
    # count) but cost 2 * 64 + 2 * 16 * 4 + 2 * 256 * 2 + 2 * 16 * 10 = 1600 > 1024
    assert exact.output_factor_cost(dense, 0, dshapes) == 1600
    assert not exact._through_output(dense, 0, dshapes, False)


@pytest.mark.parametrize("force, expected", [("identity", False), ("jacobian", False), ("output", True)])
def test_a_forced_route_through_the_output(monkeypatch, force, expected):
    model, shapes = conv_relu_conv()
    dense = rp.Sequential(rp.Linear(3, 4), rp.Tanh(), rp.Linear(4, 2))
    monkeypatch.setattr(exact, "_FORCE_SEED", force)
    assert exact._through_output(model, 2, shapes, True) == expected
    assert exact._through_output(dense, 0, exact._in_shapes(dense, (3,)), False) == expected
    assert not exact._through_output(model, 0, shapes, True)  # never where a convolution follows


def test_a_tie_does_not_go_through_the_output(monkeypatch):
    model, shapes = conv_relu_conv()
    monkeypatch.setattr(exact, "output_factor_cost", lambda *a: min(exact.seed_costs(*a)))
    assert not exact._through_output(model, 2, shapes, True)


def test_output_factor_width_by_hand():
    # 3 C for J, Phi J and the output's rows, then |z_l| C / n_l (at least 1)
    model, shapes = conv_relu_conv()
    assert exact._output_factor_width(model, 2, shapes) == 3 * 2 + 1  # 8 * 2 // 18 = 0
    wide = rp.Sequential(rp.Linear(1, 4), rp.Linear(4, 8))
    assert exact._output_factor_width(wide, 0, exact._in_shapes(wide, (1,))) == 3 * 8 + 4 * 8 // 8


@pytest.mark.parametrize("name", ["hessian", "ggn"])
def test_rows_through_the_output_of_the_layer_right_before_the_last(monkeypatch, name):
    # Linear(1, 4) - Linear(4, 8): z_0 has 4 entries, the output 8, so the mask between them
    # is read in z_0's shape, not the output's
    model = rp.Sequential(rp.Linear(1, 4), rp.Linear(4, 8))
    rng = np.random.default_rng(6)
    args = (model, model.init(6), rng.standard_normal((5, 1)), rng.integers(0, 8, 5), rp.CrossEntropyLoss())
    monkeypatch.setattr(exact, "_FORCE_SEED", "output")
    calls = spy(monkeypatch, exact, "_rows_through_output")
    M = compute(name, *args)
    assert [c[0][2] for c in calls] == [0]
    monkeypatch.undo()
    assert_rel(M, reference(name, *args))


def test_identity_seed_rows_in_units_of_more_samples_than_directions_times_parameters(monkeypatch):
    # Linear(1, 1) - Tanh - Linear(1, 1) through the per-sample gradient tangents: K = 1
    # direction, n_l = 2 parameters, 5 samples, so the samples bound the units per chunk
    model = rp.Sequential(rp.Linear(1, 1), rp.Tanh(), rp.Linear(1, 1))
    rng = np.random.default_rng(8)
    args = (model, [2.0 * p for p in model.init(8)], rng.standard_normal((5, 1)), rng.standard_normal((5, 1)),
            rp.MSELoss())
    monkeypatch.setattr(exact, "_T_ROUTE", True)
    monkeypatch.setattr(exact, "_FORCE_SEED", "identity")
    calls = spy(monkeypatch, exact, "_rows_from_identity_seed")
    H = rp.hessian(*args)
    assert len(calls) == 3
    monkeypatch.undo()
    assert_rel(H, reference("hessian", *args))


def test_widths_and_costs_where_the_next_layer_is_the_last():
    # Linear(1, 4) - Linear(4, 8): z_0 has one location, the output 8 entries.  Through the
    # output: r + 1 = 2, J 2 * 2 * 1 * 4 * 8 = 128 twice, loss 2 * 8 * 8 * 8, diagonal
    # 2 * 8 * 8 * 8, the last layer 2 * 8 * 40
    wide = rp.Sequential(rp.Linear(1, 4), rp.Linear(4, 8))
    assert exact.output_factor_cost(wide, 0, exact._in_shapes(wide, (1,))) == 256 + 1024 + 1024 + 640
    # Conv2d(1, 1, 1) on 1x3x3 (z_0: 9 entries), ReLU, Conv2d(1, 1, 3, padding=1): one channel
    # of 9 locations with 9 features each, 81 floats, wider than anything else
    model = rp.Sequential(rp.Conv2d(1, 1, 1), rp.ReLU(), rp.Conv2d(1, 1, 3, padding=1), rp.Flatten(),
                          rp.Linear(9, 2))
    assert exact._rows_width(model, 0, exact._in_shapes(model, (1, 3, 3)), 2) == 81


def test_exact_matrix_passes_every_option_on():
    args = case("dense-bias", n=4)
    assert np.array_equal(exact.exact_matrix(*args, curvature="ggn"), rp.ggn(*args))
    assert np.array_equal(exact.exact_matrix(*args), rp.hessian(*args))
    mc = dict(curvature="mc_fisher", samples=3, seed=5)
    assert np.array_equal(exact.exact_matrix(*args, **mc), rp.fisher(*args, **mc))
    assert not np.array_equal(rp.fisher(*args, **mc), rp.fisher(*args, **dict(mc, samples=1)))
    assert not np.array_equal(rp.fisher(*args, **mc), rp.fisher(*args, **dict(mc, seed=6)))
    T = np.random.default_rng(1).integers(0, 2, (2, 4))
    assert np.array_equal(exact.exact_matrix(*args, curvature="mc_fisher", targets=T),
                          rp.fisher(*args, curvature="mc_fisher", targets=T))
    assert not np.array_equal(rp.fisher(*args, curvature="mc_fisher", targets=T), rp.fisher(*args, curvature="mc_fisher"))


def test_given_targets_ask_for_no_memory_of_draws(monkeypatch):
    # Linear(1, 10), squared error, 200 samples: one draw needs two (1, 200, 10) float64
    # arrays, 32,000 bytes, more than the forward pass's 8 * 200 * (10 + 1 + 1) = 19,200 and
    # the 20 x 20 matrix with its temporaries; refused when drawn, not asked for when the
    # targets are given
    from refprune import memory

    model = rp.Sequential(rp.Linear(1, 10))
    rng = np.random.default_rng(1)
    args = (model, model.init(1), rng.standard_normal((200, 1)), rng.standard_normal((200, 10)), rp.MSELoss())
    monkeypatch.setattr(_d, "CHUNK_FLOATS", 64)
    monkeypatch.setattr(memory, "ALWAYS_FITS", 0)
    monkeypatch.setattr(memory, "available_memory", lambda: 25_000)
    with pytest.raises(rp.ArrayTooLargeError, match=r"^fisher: 1 Monte Carlo target\(s\) for each of 200 "):
        rp.fisher(*args, curvature="mc_fisher")
    T = rng.standard_normal((1, 200, 10))
    F = rp.fisher(*args, curvature="mc_fisher", targets=T)
    monkeypatch.undo()
    assert_rel(F, rp.fisher(*args, curvature="mc_fisher", targets=T))  # (chunked differently: rounding)


def test_tasks_that_write_add_their_shards_and_the_last_writes_the_mirror(tmp_path):
    # the rows of layer 0 in two shards of samples, written by the tasks themselves
    # (docs/derivations.md §11.1): the first assigns, the second adds to it (checked against
    # the first's digest) and, final by default, writes the mirror and returns both digests
    from refprune.checks import validate
    from refprune.curvature import store

    model, params, X, y, loss = small()
    scale = validate(model, params, X, y, loss).scale
    n = model.n_params
    out = np.lib.format.open_memmap(str(tmp_path / "h.npy"), mode="w+", dtype=np.float64, shape=(n, n))
    out[:] = 7.0
    writer = store.BlockWriter(out, "hessian")
    geometry = exact._layout(model, None)["layer 0"]
    o, end, _ = geometry
    after = exact.rows_task(model, params, X[:2], y[:2], loss, scale, "hessian", None, 0, None, writer, geometry,
                            final=False)
    assert isinstance(after, str) and np.all(out[end:, o:end] == 7.0)  # no mirror yet
    got = exact.rows_task(model, params, X[2:], y[2:], loss, scale, "hessian", None, 0, None, writer, geometry,
                          after=after)
    H = rp.hessian(model, params, X, y, loss)
    assert len(got) == 2
    assert_rel(out[o:end, o:], H[o:end, o:])
    assert_rel(out[end:, o:end], H[end:, o:end])


def test_the_driver_reads_back_the_first_block_a_worker_wrote_under_the_chunk_locks(tmp_path, monkeypatch):
    # workers write a sharded array store themselves (a stand-in for a local Zarr array that
    # asserts the chunk locks are held at every read and write); the driver reads the first
    # block back (a store the workers see but the driver does not is caught there), holding
    # the chunk locks, and trusts the digests of the others
    from concurrent.futures import ThreadPoolExecutor
    from refprune.curvature import store
    from test_store_mutants import Watched

    args = small()
    n = args[0].n_params
    out = Watched(str(tmp_path), n, (4, 4), shards=(8, 8))
    out.checked = 0
    calls = []
    real = store.BlockRecord.mark_written

    def recording(self, key, digests, verify=False, lock=None):
        calls.append((verify, lock))
        return real(self, key, digests, verify, lock)

    monkeypatch.setattr(store.BlockRecord, "mark_written", recording)
    with ThreadPoolExecutor(2) as ex:
        rp.hessian(*args, out=out, executor=ex, block_rows=8)
    assert len(calls) == len(exact.row_blocks(args[0], 8)) > 2
    assert [v for v, _ in calls] == [True] + [False] * (len(calls) - 1)
    assert isinstance(calls[0][1], store._ChunkLocks)
    monkeypatch.undo()
    assert out.checked > 0
    assert_rel(out.a, rp.hessian(*args))


@pytest.mark.parametrize("shards, window", [(1, None), (2, 3)])
def test_one_shard_submits_every_block_at_once_several_keep_a_window(tmp_path, monkeypatch, capsys, shards, window):
    # chained tasks that write the store: with one shard every task is a whole block and all
    # are submitted at once; with several, the pool's 2 workers plus one are kept in flight
    from concurrent.futures import ThreadPoolExecutor
    from refprune.curvature import parallel

    args = small()
    n = args[0].n_params
    out = np.lib.format.open_memmap(str(tmp_path / "h.npy"), mode="w+", dtype=np.float64, shape=(n, n))
    seen = []
    real = parallel.run
    monkeypatch.setattr(parallel, "run", lambda *a: (seen.append(a[6:]), real(*a))[1])
    with ThreadPoolExecutor(2) as ex:
        rp.hessian(*args, out=out, executor=ex, shards=shards, progress=True)
    assert seen == [(True, window)]
    err = capsys.readouterr().err.splitlines()  # progress asked for: a line per block
    assert len(err) == len(exact._param_layers(args[0])) and all(line.startswith("hessian: ") for line in err)


@pytest.mark.parametrize("curvature", ["fisher", "mc_fisher", "empirical_fisher"])
def test_fisher_s_refusals_name_the_call_and_its_curvature(curvature, tmp_path):
    """``mc_fisher`` and ``empirical_fisher`` are choices of ``refprune.fisher``, not
    functions: its refusals name ``fisher(curvature=...)``."""
    model = rp.Sequential(rp.Linear(3, 4), rp.Tanh(), rp.Linear(4, 3))
    params, X, y = model.init(0), np.ones((5, 3)), np.array([0, 1, 2, 0, 1])
    where = "fisher" if curvature == "fisher" else f"fisher(curvature={curvature!r})"

    def call(**kw):
        return lambda: rp.fisher(model, params, X, y, rp.CrossEntropyLoss(), curvature=curvature, **kw)
    for kw, error, text in [
            (dict(shards=0), ValueError, "shards must be a positive int, got 0"),
            (dict(out=np.zeros((2, 2))), ValueError, "out must be a float64 array of shape (31, 31), got ndarray "
                                                     "(2, 2) float64"),
            (dict(out=np.zeros(3), block_rows=4), ValueError, "out must be a float64 array of shape (31, 31), got "
                                                               "ndarray (3,) float64"),
            (dict(max_bytes=31 * 31 * 8 - 1), rp.CurvatureTooLargeError, "the 31 x 31 float64 matrix would need 0.00 GiB "
             "(7,688 bytes) but only 0.00 GiB (7,687 bytes) may be used (max_bytes); pass out=numpy.memmap(path, dtype='float64', mode='w+', "
             "shape=(31, 31)) to write it to disk")]:
        with pytest.raises(error) as e:
            call(**kw)()
        assert str(e.value) == f"{where}: {text}"
    # a memmap's rows that workers cannot reopen: refused by the writer the tasks would use
    big = np.lib.format.open_memmap(str(tmp_path / "big.npy"), mode="w+", dtype=np.float64, shape=(40, 31))
    with concurrent.futures.ThreadPoolExecutor(2) as ex, pytest.raises(ValueError) as e:
        call(out=big[:31], executor=ex)()
    assert str(e.value) == (f"{where}: out is a view of a numpy.memmap of {tmp_path / 'big.npy'}, which workers cannot "
                            "reopen by its file name; pass the numpy.memmap of the whole matrix "
                            "(numpy.lib.format.open_memmap(path, mode='w+', ...) or numpy.load(path, mmap_mode='r+'))")
    H = rp.fisher(model, params, X, y, rp.CrossEntropyLoss(), curvature=curvature, max_bytes=31 * 31 * 8)
    assert H.shape == (31, 31)  # exactly the matrix's bytes fit
