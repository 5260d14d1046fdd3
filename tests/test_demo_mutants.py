"""refprune.demo piece by piece against independent expectations: the spirals' geometry
(radius t, angle 3.5 t + 2 pi k / classes, noise proportional to t), the bars drawn
where their label says, full-batch heavy-ball training written out here, the spectrum
summary counted here, and a whole (tiny) run whose every printed line is rebuilt from
the library's own functions called by this test."""

import io
import re
import warnings
from contextlib import redirect_stdout

import numpy as np
import pytest

import refprune as rp
from refprune import demo


def test_spirals_lie_on_their_arms():
    X, y = demo.spirals(n_per_class=7, classes=4, noise=0.0, seed=2)
    assert X.shape == (28, 2) and y.tolist() == [k for k in range(4) for _ in range(7)]
    t = np.hypot(X[:, 0], X[:, 1])
    assert np.all((t >= np.sqrt(0.05) - 1e-12) & (t <= 1.0)) and t.min() < 0.6 and t.max() > 0.9
    # the angle is 3.5 t + 2 pi k / classes, up to whole turns
    diff = np.arctan2(X[:, 1], X[:, 0]) - (3.5 * t + 2 * np.pi * y / 4)
    assert np.allclose(np.angle(np.exp(1j * diff)), 0.0, atol=1e-12)
    # the noise: noise * t * (the same standard normal draws at every noise level)
    Xa, _ = demo.spirals(n_per_class=7, classes=4, noise=0.2, seed=2)
    Xb, _ = demo.spirals(n_per_class=7, classes=4, noise=0.5, seed=2)
    za, zb = (Xa - X) / (0.2 * t[:, None]), (Xb - X) / (0.5 * t[:, None])
    assert np.allclose(za, zb, rtol=1e-9, atol=1e-9) and 0.3 < za.std() < 2.0
    assert not np.allclose(za[:, 0], za[:, 1])  # each coordinate its own draw
    # added (not subtracted): the generator's normal draws that follow the radii
    rng = np.random.default_rng(2)
    rng.uniform(size=(4, 7))
    assert np.allclose(za, rng.standard_normal((28, 2)), rtol=1e-9, atol=1e-9)


def test_spirals_defaults():
    X, y = demo.spirals()
    X0, y0 = demo.spirals(n_per_class=60, classes=3, noise=0.35, seed=0)
    assert np.array_equal(X, X0) and np.array_equal(y, y0) and X.shape == (180, 2)
    assert not np.array_equal(X, demo.spirals(seed=1)[0])


def test_bars_defaults_positions_and_noise():
    X, y = demo.bars()
    X0, y0 = demo.bars(n_per_class=40, size=8, noise=0.3, seed=0)
    assert np.array_equal(X, X0) and np.array_equal(y, y0) and X.shape == (120, 1, 8, 8)
    assert not np.array_equal(X, demo.bars(seed=1)[0])
    clean, labels = demo.bars(n_per_class=30, size=6, noise=0.0, seed=3)
    assert clean.shape == (90, 1, 6, 6) and labels.tolist() == [k for k in range(3) for _ in range(30)]
    positions = []
    for img, label in zip(clean[:, 0], labels):
        assert set(np.unique(img)) == {0.0, 1.0} and img.sum() == 6.0
        if label == 0:
            (rows,) = np.nonzero(img.sum(axis=1) == 6)
            positions.append(int(rows[0]))
        elif label == 1:
            (cols,) = np.nonzero(img.sum(axis=0) == 6)
            positions.append(int(cols[0]))
        else:  # the wrapped diagonal through (0, p): column (row + p) mod size
            p = int(np.nonzero(img[0])[0][0])
            assert all(img[r, (r + p) % 6] == 1.0 for r in range(6))
            positions.append(p)
    # positions 1 .. size - 2 (never on the border), each of them drawn
    assert set(positions) == {1, 2, 3, 4}
    noisy, _ = demo.bars(n_per_class=30, size=6, noise=0.5, seed=3)
    z = (noisy - clean) / 0.5
    assert abs(z.std() - 1.0) < 0.1 and abs(z.mean()) < 0.1
    assert np.all(z[clean == 1.0] != 0.0)  # the bar is added to the noise, not written over it


def _heavy_ball(model, theta, X, y, loss, steps, lr, momentum):
    """Full-batch gradient descent with momentum (Polyak's heavy ball): every iterate."""
    vel, out = np.zeros_like(theta), [theta]
    for _ in range(steps):
        vel = momentum * vel - lr * rp.grad(model, rp.unflatten_params(model, theta), X, y, loss)
        theta = theta + vel
        out.append(theta)
    return out


def _log_line(model, theta, X, y, loss, step):
    p = rp.unflatten_params(model, theta)
    acc = np.mean(np.argmax(model(p, X), axis=1) == y)
    return f"  step {step:5d}  loss {rp.loss(model, p, X, y, loss):.4f}  accuracy {acc:.3f}"


def test_train_is_heavy_ball_and_logs_every_log_every_steps_and_the_last():
    X, y = demo.spirals(n_per_class=5, seed=1)
    model = rp.Sequential(rp.Linear(2, 3), rp.Tanh(), rp.Linear(3, 3))
    loss = rp.CrossEntropyLoss()
    init = model.init(seed=2)
    buf = io.StringIO()
    got = demo.train(model, init, X, y, loss, steps=5, lr=0.3, momentum=0.8, log_every=2, out=buf)
    path = _heavy_ball(model, rp.flatten_params(init), X, y, loss, 5, 0.3, 0.8)
    assert np.allclose(rp.flatten_params(got), path[-1], rtol=1e-13, atol=1e-14)
    assert buf.getvalue().splitlines() == [_log_line(model, path[k], X, y, loss, k) for k in (0, 2, 4, 5)]
    # to stdout when no stream is given
    out = io.StringIO()
    with redirect_stdout(out):
        demo.train(model, init, X, y, loss, steps=1, lr=0.3, momentum=0.8, log_every=3)
    assert out.getvalue().splitlines() == [_log_line(model, path[k], X, y, loss, k) for k in (0, 1)]


def test_summarise_counts_negative_and_zero_eigenvalues():
    eig = np.array([-2.0, -1e-13, 0.0, 3e-13, 0.5, 4.0])  # 4e-10 is the rounding threshold here
    buf = io.StringIO()
    demo.summarise("Hessian", eig, out=buf)
    assert buf.getvalue() == ("  Hessian   trace    2.5000  largest    4.0000  smallest   -2.0000  "
                              "negative    1 (sum  -2.0000)  zero    3\n")
    eig = np.array([-1e-11, 0.0, 1e-11, 0.1])  # below 1: the threshold is 1e-10 itself
    out = io.StringIO()
    with redirect_stdout(out):
        demo.summarise("GGN", eig)
    assert out.getvalue() == ("  GGN       trace    0.1000  largest    0.1000  smallest   -0.0000  "
                              "negative    0 (sum   0.0000)  zero    3\n")
    buf = io.StringIO()
    demo.summarise("y", np.array([-1.5e-10, 0.5]), out=buf)  # largest below 1: the threshold is 1e-10
    assert "negative    1" in buf.getvalue() and "zero    0" in buf.getvalue()
    buf = io.StringIO()
    demo.summarise("x", np.array([-1e-10, 1.0]), out=buf)  # exactly at the threshold: zero
    assert "negative    0" in buf.getvalue() and "zero    1" in buf.getvalue()


_RUNS = [  # the demo's pruning table (README "Demo")
    ("magnitude 50%", dict(method="magnitude", sparsity=0.5)),
    ("OBD (exact diag) 50%", dict(method="obd", sparsity=0.5, diagonal="exact")),
    ("OBS (GGN) 50%", dict(method="obs", sparsity=0.5, curvature="ggn", damping=1e-4)),
    ("WoodFisher 50%", dict(method="woodfisher", sparsity=0.5, damping=1e-4)),
    ("layer-wise OBS 50%", dict(method="layer_obs", sparsity=0.5, damping=1e-6)),
    ("Kron-OBS 25% units", dict(method="kron_obs", sparsity=0.25, damping=1e-4)),
    ("EigenDamage 40% dirs", dict(method="eigendamage", sparsity=0.4)),
]


def _expected_output(model, X, y, what, steps, lr, seed):
    loss = rp.CrossEntropyLoss()
    lines = [f"refprune demo: {what}", *str(model).splitlines(), f"parameters: {model.n_params}",
             f"training ({steps} full-batch steps, momentum 0.9):"]
    path = _heavy_ball(model, rp.flatten_params(model.init(seed)), X, y, loss, steps, lr, 0.9)
    every = max(1, steps // 5)
    lines += [_log_line(model, path[k], X, y, loss, k) for k in range(steps + 1) if k % every == 0 or k == steps]
    params = rp.unflatten_params(model, path[-1])
    H, G, R = (f(model, params, X, y, loss) for f in (rp.hessian, rp.ggn, rp.residual))
    lines.append(f"exact Hessian, GGN and residual ({H.shape[0]} x {H.shape[0]}) in TIME s")
    lines.append("spectra at the trained point:")
    eigs = {}
    for name, M in (("Hessian", H), ("GGN", G), ("residual", R)):
        eigs[name] = np.linalg.eigvalsh(M)
        buf = io.StringIO()
        demo.summarise(name, eigs[name], out=buf)
        lines.append(buf.getvalue().rstrip("\n"))
    lines.append(f"  |H - (GGN + residual)|_max = {np.abs(H - G - R).max():.1e};  "
                 f"||residual||_F / ||H||_F = {np.linalg.norm(R) / np.linalg.norm(H):.3f}")
    lines.append(f"one-shot pruning of the trained net (loss {rp.loss(model, params, X, y, loss):.4f}):")
    lines.append(f"  {'method':22s} {'removed':>8s} {'predicted':>10s} {'actual':>10s} {'no update':>10s} "
                 f"{'accuracy':>8s} {'params':>6s}")
    for name, kw in _RUNS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rp.PruningWarning)
            r = rp.prune(model, params, X, y, loss, **kw)
        if not r.steps:
            lines.append(f"  {name:22s} nothing to remove at this size")
            continue
        st = r.steps[-1]
        acc = np.mean(np.argmax(r.model(r.params, X), axis=1) == y)
        lines.append(f"  {name:22s} {len(st.removed):8d} {st.predicted:10.3g} {st.actual:10.3g} "
                     f"{st.actual_without_update:10.3g} {acc:8.3f} {r.model.n_params:6d}")
    lines += demo.LEGEND.splitlines()
    return lines, params, eigs


def _run(argv):
    buf = io.StringIO()
    with redirect_stdout(buf):
        code = demo.main(argv)
    lines = buf.getvalue().splitlines()
    return code, [re.sub(r"in \d+\.\d{3} s$", "in TIME s", line) for line in lines]


def test_a_whole_tiny_run_prints_what_the_library_computes(monkeypatch, tmp_path):
    from refprune import plot

    drawn = {}
    # the figures are recorded, not drawn: the run must not need matplotlib (CI has none)
    monkeypatch.setattr(plot, "pyplot", lambda: None)
    monkeypatch.setattr(plot, "spectra", lambda eigs, path, linthresh: drawn.update(spectra=(eigs, path, linthresh)))
    monkeypatch.setattr(plot, "heatmaps", lambda mats, path: drawn.update(heatmaps=(mats, path)))
    pic, heat = str(tmp_path / "s.png"), str(tmp_path / "h.png")
    # each pruning run is called with the table's options exactly (a damping of 1e-6 or 0 may
    # print alike); only the PruningWarnings are silenced, any other warning still shows
    real_prune, calls = rp.prune, []

    def prune(*args, **kw):
        calls.append(kw)
        warnings.warn("a pruning note", rp.PruningWarning)
        warnings.warn("another warning", RuntimeWarning)
        return real_prune(*args, **kw)

    monkeypatch.setattr(demo.rp, "prune", prune)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, lines = _run(["--steps", "6", "--hidden", "2", "--seed", "3", "--lr", "0.1", "--plot", pic,
                            "--heatmaps", heat])
    monkeypatch.setattr(demo.rp, "prune", real_prune)
    assert calls == [kw for _, kw in _RUNS]
    assert [str(w.message) for w in caught] == ["another warning"] * len(_RUNS)
    X, y = demo.spirals(seed=3)
    model = rp.Sequential(rp.Linear(2, 2), rp.Tanh(), rp.Linear(2, 2), rp.Tanh(), rp.Linear(2, 3))
    want, params, eigs = _expected_output(model, X, y, "180 spiral points, 3 classes", 6, 0.1, 3)
    want += [f"spectra plotted to {pic}", f"heatmaps of the Hessian and its approximations drawn to {heat}"]
    assert code == 0
    assert lines == want
    got_eigs, path, linthresh = drawn["spectra"]
    assert path == pic and linthresh == 1e-4 and list(got_eigs) == ["Hessian", "GGN", "residual"]
    assert all(np.array_equal(got_eigs[k], eigs[k]) for k in eigs)
    mats, path = drawn["heatmaps"]
    args = (model, params, X, y, rp.CrossEntropyLoss())
    assert path == heat and list(mats) == ["Hessian", "GGN", "K-FAC", "EKFAC", "diagonal"]
    for got, ref in zip(mats.values(), (rp.hessian(*args), rp.ggn(*args), rp.kfac(*args).to_dense(),
                                        rp.ekfac(*args).to_dense(), np.diag(rp.hessian_diagonal(*args)))):
        assert np.allclose(got, ref, rtol=1e-10, atol=1e-12)


def test_a_tiny_conv_run_and_one_with_only_heatmaps(monkeypatch, tmp_path):
    from refprune import plot

    drawn = {}
    monkeypatch.setattr(plot, "pyplot", lambda: None)  # recorded, not drawn: no matplotlib needed
    monkeypatch.setattr(plot, "spectra", lambda *a, **k: drawn.update(spectra=True))
    monkeypatch.setattr(plot, "heatmaps", lambda mats, path: drawn.update(heatmaps=path))
    code, lines = _run(["--net", "conv", "--steps", "2", "--hidden", "1", "--seed", "1",
                        "--heatmaps", str(tmp_path / "h.png")])
    X, y = demo.bars(seed=1)
    model = rp.Sequential(rp.Conv2d(1, 1, 3), rp.Tanh(), rp.AvgPool2d(2), rp.Flatten(), rp.Linear(9, 3))
    want, _, _ = _expected_output(model, X, y, "120 images of bars (8x8), 3 classes", 2, 0.05, 1)
    assert code == 0 and lines[:len(want)] == want and drawn == {"heatmaps": str(tmp_path / "h.png")}


class _Stop(Exception):
    pass


@pytest.mark.parametrize("net, params", [("mlp", 2 * 16 + 16 + 16 * 16 + 16 + 16 * 3 + 3),
                                         ("conv", 8 * 9 + 8 + 8 * 9 * 3 + 3)])
def test_the_default_width(monkeypatch, net, params):
    def stop(*a, **k):
        raise _Stop

    monkeypatch.setattr(demo.rp, "hessian", stop)
    buf = io.StringIO()
    with redirect_stdout(buf), pytest.raises(_Stop):
        demo.main(["--net", net, "--steps", "1"])
    assert f"\nparameters: {params}\n" in buf.getvalue()


def test_divergence_is_refused_in_one_line(capsys, monkeypatch):
    with pytest.raises(SystemExit) as e:
        demo.main(["--steps", "3", "--hidden", "2", "--lr", "1e3"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert re.fullmatch(r"refprune demo: error: --lr 1000: training diverged \(the loss rose from \S+ to \S+ in 3 "
                        r"steps, and every later result would describe a broken network\); give a smaller --lr "
                        r"\(see refprune demo --help\)\n", err), err

    def overflow(*a, **k):
        raise FloatingPointError("the output overflows")

    monkeypatch.setattr(demo, "train", overflow)
    with pytest.raises(SystemExit) as e:
        demo.main(["--steps", "3", "--hidden", "2", "--lr", "2.5"])
    assert e.value.code == 2
    assert capsys.readouterr().err == ("refprune demo: error: --lr 2.5: training diverged (the output overflows); "
                                       "give a smaller --lr (see refprune demo --help)\n")


def test_train_returns_float64_parameters():
    """The iterate stays float64 (the velocity starts as float64 zeros of theta's shape)."""
    X, y = demo.spirals(n_per_class=4, seed=0)
    model = rp.Sequential(rp.Linear(2, 2), rp.Tanh(), rp.Linear(2, 3))
    got = demo.train(model, model.init(seed=0), X, y, rp.CrossEntropyLoss(), steps=2, lr=0.1, momentum=0.9,
                     log_every=5, out=io.StringIO())
    assert [p.dtype for p in got] == [np.float64] * len(got)
    assert [p.shape for p in got] == [tuple(s) for s in model.param_shapes()]


def test_summarise_threshold_scales_with_the_largest_eigenvalue():
    """The zero threshold is 1e-10 times the largest |eigenvalue| when that exceeds 1:
    with 4.0 the largest, 1e-10 and -3e-10 lie within it (zero, not negative)."""
    buf = io.StringIO()
    demo.summarise("H", np.array([-3e-10, 1e-10, 4.0]), out=buf)
    assert "negative    0 (sum   0.0000)  zero    2" in buf.getvalue()
    buf = io.StringIO()
    demo.summarise("H", np.array([-5e-10, 5e-10, 4.0]), out=buf)  # beyond 4e-10: counted
    assert "negative    1 (sum  -0.0000)  zero    0" in buf.getvalue()


def test_help_describes_the_demo_in_the_first_paragraph_of_its_docstring(capsys):
    with pytest.raises(SystemExit) as e:
        demo.main(["--help"])
    assert e.value.code == 0
    first = ("Demo: train a small network on built-in data, summarise its exact Hessian and compare pruning "
             "criteria by predicted and actual loss change.")
    out = " ".join(capsys.readouterr().out.split())
    assert out.startswith("usage: refprune demo ") and f" {first} " in out
    assert "three interleaved spirals" not in out  # the second paragraph is not part of it


@pytest.mark.parametrize("option", ["--plot", "--heatmaps"])
def test_a_picture_without_matplotlib_is_refused_before_the_run(capsys, monkeypatch, tmp_path, option):
    """--plot or --heatmaps without matplotlib: one line naming the option, the path and
    plot's reason, exit status 2, before anything is printed; without either option the
    run does not need matplotlib."""
    from refprune import plot

    def missing():
        raise ImportError("refprune.plot needs matplotlib")

    monkeypatch.setattr(plot, "pyplot", missing)
    path = str(tmp_path / "x.png")
    with pytest.raises(SystemExit) as e:
        demo.main(["--steps", "1", "--hidden", "2", option, path])
    out, err = capsys.readouterr()
    assert e.value.code == 2 and out == ""
    assert err == f"refprune demo: error: {option} {path}: refprune.plot needs matplotlib (see refprune demo --help)\n"

    def stop(*a, **k):
        raise _Stop

    monkeypatch.setattr(demo.rp, "hessian", stop)
    with pytest.raises(_Stop):
        demo.main(["--steps", "1", "--hidden", "2"])
    assert "training (1 full-batch steps" in capsys.readouterr().out


def test_parameters_that_overflow_are_a_divergence_in_one_line(capsys):
    """A step that overflows the parameters (here the first layer's, behind a tanh that
    saturates, so the output stays finite) is refused as a divergence, one line and exit
    status 2, with no NumPy warning; it used to end in a traceback (the next gradient
    refused the parameters with a ValueError).  The step is the first at which the
    heavy-ball iterate written out here is not finite."""
    X, y = demo.spirals(seed=2)
    model = rp.Sequential(rp.Linear(2, 1), rp.Tanh(), rp.Linear(1, 1), rp.Tanh(), rp.Linear(1, 3))
    loss = rp.CrossEntropyLoss()
    theta, vel, step = rp.flatten_params(model.init(2)), 0.0, 0
    with np.errstate(all="ignore"):
        while np.all(np.isfinite(theta)):
            vel = 0.9 * vel - 1e308 * rp.grad(model, rp.unflatten_params(model, theta), X, y, loss)
            theta, step = theta + vel, step + 1
    assert 1 <= step < 20
    with warnings.catch_warnings(record=True) as caught, pytest.raises(SystemExit) as e:
        warnings.simplefilter("always")
        demo.main(["--steps", "20", "--hidden", "1", "--seed", "2", "--lr", "1e308"])
    assert e.value.code == 2 and [str(w.message) for w in caught] == []
    assert capsys.readouterr().err == (f"refprune demo: error: --lr 1e+308: training diverged (the parameters "
                                       f"overflowed to inf or NaN at step {step}); give a smaller --lr (see refprune "
                                       "demo --help)\n")
    with pytest.raises(FloatingPointError, match=f"^the parameters overflowed to inf or NaN at step {step}$"), \
            np.errstate(all="ignore"):
        demo.train(model, model.init(2), X, y, loss, 20, 1e308, 0.9, 100, out=io.StringIO())


def test_training_logs_a_fifth_of_the_steps_apart_and_a_loss_that_stays_is_not_a_divergence(monkeypatch):
    """Ten steps are logged every second step (steps // 5); a learning rate so small that
    no parameter moves leaves the loss exactly where it started, which is no divergence:
    the run goes on to the Hessian."""
    def stop(*a, **k):
        raise _Stop

    monkeypatch.setattr(demo.rp, "hessian", stop)
    buf = io.StringIO()
    with redirect_stdout(buf), pytest.raises(_Stop):
        demo.main(["--steps", "10", "--hidden", "2", "--lr", "1e-300"])
    steps = [int(m) for m in re.findall(r"^  step +(\d+) ", buf.getvalue(), re.M)]
    losses = set(re.findall(r"^  step +\d+  loss (\S+) ", buf.getvalue(), re.M))
    assert steps == [0, 2, 4, 6, 8, 10] and len(losses) == 1
    model = rp.Sequential(rp.Linear(2, 2), rp.Tanh(), rp.Linear(2, 2), rp.Tanh(), rp.Linear(2, 3))
    X, y = demo.spirals(seed=0)
    got = demo.train(model, model.init(0), X, y, rp.CrossEntropyLoss(), 10, 1e-300, 0.9, 100, out=io.StringIO())
    assert all(np.array_equal(a, b) for a, b in zip(got, model.init(0)))  # not one bit moved


def test_the_time_printed_is_that_of_the_three_matrices(monkeypatch):
    """The seconds between the clock readings before and after the Hessian, GGN and
    residual (a stand-in clock for the demo alone: 10.0 s, then 10.375 s)."""
    from types import SimpleNamespace

    def stop(*a, **k):
        raise _Stop

    readings = iter([10.0, 10.375])
    monkeypatch.setattr(demo, "time", SimpleNamespace(perf_counter=lambda: next(readings)))
    monkeypatch.setattr(demo.rp, "prune", stop)  # the pruning that follows is not needed here
    buf = io.StringIO()
    with redirect_stdout(buf), pytest.raises(_Stop):
        demo.main(["--steps", "1", "--hidden", "2", "--seed", "3"])
    n = 2 * 2 + 2 + 2 * 2 + 2 + 2 * 3 + 3
    assert f"\nexact Hessian, GGN and residual ({n} x {n}) in 0.375 s\n" in buf.getvalue()
