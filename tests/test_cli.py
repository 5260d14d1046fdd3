"""The command line: every misuse is one line and exit status 2; the hessian subcommand
writes the same matrix as the library, estimates before it starts and refuses what will
not fit; the fixtures and check subcommands run."""

import json
import os

import numpy as np
import pytest

import refprune as rp
from refprune.cli import main, parse_model


def run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv, words", [
    (("demo", "--steps", "-5"), "--steps must be a positive int, got -5"),
    (("demo", "--lr", "nan"), "--lr must be a finite number > 0, got nan"),
    (("hessian",), "one of the arguments --model --model-json is required"),
    (("hessian", "--model", "Linear(3,4) Gelu"), "unknown layer 'Gelu'"),
    (("hessian", "--model", "Linear(3,4) Tanh Linear(5,2)", "--input-shape", "3"), "expects per-sample input"),
    (("hessian", "--model", "Linear(3,"), "cannot read the model"),
    (("hessian", "--model", "Linear(3,2)"), "give --data FILE.npz or --input-shape"),
    (("hessian", "--model", "Linear(3,2)", "--input-shape", "3", "--curvature", "kfac"),
     "--curvature must be one of ('hessian', 'ggn', 'residual', 'fisher', 'mc_fisher', 'empirical_fisher'), got 'kfac'"),
    (("hessian", "--model", "Linear(3,2)", "--data", "/nonexistent.npz"),
     "--data /nonexistent.npz: no such file; it must be an existing .npz file"),
    (("frobnicate",), "invalid choice: 'frobnicate'"),
])
def test_misuse_is_one_line(capsys, argv, words):
    code, out, err = run(capsys, *argv)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and words in lines[0], err
    assert "Traceback" not in err


def test_hessian_subcommand_writes_the_library_matrix(capsys, tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((7, 1, 4, 4)), rng.integers(0, 3, 7)
    np.savez(tmp_path / "data.npz", X=X, y=y)
    spec = "Conv2d(1, 2, 3, padding=1) Tanh AvgPool2d(2) Flatten Linear(8, 3)"
    model = parse_model(spec)
    params = model.init(seed=4)
    np.savez(tmp_path / "params.npz", **{f"param{i}": p for i, p in enumerate(params)})
    for curvature in ("hessian", "ggn", "empirical_fisher"):
        out = tmp_path / f"{curvature}.npy"
        code, _, err = run(capsys, "hessian", "--model", spec, "--data", str(tmp_path / "data.npz"), "--params",
                           str(tmp_path / "params.npz"), "--curvature", curvature, "--out", str(out))
        assert code == 0 and "GiB, about" in err and "rows of layer" in err
        ref = rp.hessian(model, params, X, y, rp.CrossEntropyLoss()) if curvature == "hessian" else \
            rp.ggn(model, params, X, y, rp.CrossEntropyLoss()) if curvature == "ggn" else \
            rp.fisher(model, params, X, y, rp.CrossEntropyLoss(), curvature="empirical_fisher")
        assert np.array_equal(np.load(out), ref)
    code, _, err = run(capsys, "hessian", "--model", spec, "--input-shape", "1", "4", "4", "--dry-run")
    assert code == 0 and "n = 47 parameters, N = 32 samples" in err


def test_hessian_subcommand_refuses_what_will_not_fit(capsys, monkeypatch):
    import refprune.curvature.exact as exact

    monkeypatch.setattr(exact, "available_memory", lambda: 1000)
    code, _, err = run(capsys, "hessian", "--model", "Linear(30, 20)", "--input-shape", "30", "--loss", "mse")
    # 620 parameters: 8 x 620^2 = 3,075,200 bytes, which reads 0.00 GiB like the 1,000 bytes free
    assert code == 2 and ("the 620 x 620 matrix needs 0.00 GiB (3,075,200 bytes) but only 0.00 GiB (1,000 bytes) "
                          "of memory are available; give --out FILE.npy") in err


def test_fixtures_and_check_subcommands(capsys, tmp_path):
    code, out, _ = run(capsys, "fixtures", str(tmp_path), "--quiet")
    assert code == 0 and "wrote 21 cases" in out
    assert rp.testing.load_fixtures(str(tmp_path))
    from refprune.selfcheck import run as selfcheck
    from refprune.conformance import make_case

    assert selfcheck(verbose=False, cases=[make_case("mlp-tanh", "ce-mean"), make_case("mlp-relu", "mse-sum")])


def test_hessian_subcommand_as_tasks_and_resumed(capsys, tmp_path, monkeypatch):
    from refprune.curvature import exact, parallel, store

    spec = "Linear(5, 6) Tanh Linear(6, 3)"
    common = ("hessian", "--model", spec, "--input-shape", "5", "--samples", "12", "--seed", "3")
    model = parse_model(spec)
    rng = np.random.default_rng(3)
    X = rng.standard_normal((12, 5))
    y = rng.integers(0, 3, 12)
    ref = rp.hessian(model, model.init(seed=3), X, y, rp.CrossEntropyLoss())
    out = tmp_path / "H.npy"
    code, _, err = run(capsys, *common, "--out", str(out), "--workers", "2")
    assert code == 0 and "block 2/2" in err
    assert np.array_equal(np.load(out), ref)  # whole layers over all samples: the same bits
    assert np.array_equal(rp.load_matrix(str(out)), ref)
    assert not (tmp_path / "H.npy.partial").exists()
    # interrupted after one block of the real run (not the estimate's, which keeps no record)
    real_mark, submitted = store.BlockRecord.mark, []

    def mark_then_stop(self, key, block):
        real_mark(self, key, block)
        if self.persistent:
            raise KeyboardInterrupt

    monkeypatch.setattr(store.BlockRecord, "mark", mark_then_stop)
    out2 = tmp_path / "H2.npy"
    code, _, err = run(capsys, *common, "--out", str(out2), "--block-rows", "7", "--shards", "2")
    assert code == 130
    assert err.splitlines()[-1] == (f"refprune hessian: interrupted; the finished blocks are recorded in "
                                    f"{out2}.partial: run the same command with --resume to continue")
    assert not out2.exists()  # only ever there complete
    with pytest.raises(rp.IncompleteResultError, match="blocks missing: layer"):
        rp.load_matrix(f"{out2}.partial")
    monkeypatch.setattr(store.BlockRecord, "mark", real_mark)
    real_run = parallel.run
    monkeypatch.setattr(parallel, "run", lambda ex, jobs, *a: (submitted.append(len(jobs)), real_run(ex, jobs, *a)))
    code, _, err = run(capsys, *common, "--out", str(out2), "--block-rows", "7", "--shards", "2", "--resume")
    assert code == 0 and "resuming" in err
    assert submitted == [len(exact.row_blocks(model, 7)) - 1]  # no estimate on resume; one block was kept
    assert np.abs(np.load(out2) - ref).max() <= 1e-12 * np.abs(ref).max()
    assert not (tmp_path / "H2.npy.partial").exists() and not (tmp_path / "H2.npy.partial.refprune.json").exists()
    assert json.loads((tmp_path / "H2.npy.refprune.json").read_text())["complete"] is True
    code, _, err = run(capsys, *common, "--out", str(out2), "--resume")
    assert code == 0 and "is complete; nothing to resume" in err
    code, _, err = run(capsys, *common, "--resume")
    assert code == 2 and "give the --out FILE.npy" in err


def test_hessian_subcommand_in_one_pass_renames_only_when_complete(capsys, tmp_path, monkeypatch):
    """No --workers, --block-rows or --shards: one pass into FILE.npy.partial (the
    library's own memmap path), renamed when done; interrupted, it says that --resume
    computes it again; the destination never exists before the end."""
    from refprune.curvature import exact

    spec = "Linear(4, 5) Tanh Linear(5, 2)"
    common = ("hessian", "--model", spec, "--input-shape", "4", "--samples", "9", "--loss", "mse")
    model = parse_model(spec)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((9, 4))
    y = rng.standard_normal((9, 2))
    ref = rp.hessian(model, model.init(seed=0), X, y, rp.MSELoss())
    out = tmp_path / "H.npy"
    real, seen = exact._assemble, []

    def assemble(inp, *a, **kw):
        seen.append(out.exists())
        if inp.n_samples == 9 and kw.get("rows_of") is None and isinstance(a[2].out, np.memmap):
            raise KeyboardInterrupt  # the real run, not the estimate's scratch runs
        return real(inp, *a, **kw)

    monkeypatch.setattr(exact, "_assemble", assemble)
    code, _, err = run(capsys, *common, "--out", str(out))
    assert code == 130 and not out.exists() and seen and not any(seen)
    assert err.splitlines()[-1] == (f"refprune hessian: interrupted; {out}.partial is unfinished (a run without "
                                    "--workers, --block-rows or --shards records no blocks before its end): run the "
                                    "same command with --resume to compute it again")
    with pytest.raises(rp.IncompleteResultError, match="blocks missing: layer 0"):
        rp.load_matrix(f"{out}.partial")
    monkeypatch.setattr(exact, "_assemble", real)
    code, _, err = run(capsys, *common, "--out", str(out), "--resume")
    assert code == 0 and np.array_equal(np.load(out), ref)
    assert np.array_equal(rp.load_matrix(str(out)), ref)
    code, _, err = run(capsys, *common, "--out", str(out))  # a new run replaces the old result at the end
    assert code == 0 and np.array_equal(rp.load_matrix(str(out)), ref)


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="needs POSIX process groups to send Ctrl-C as a terminal does")
@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_with_workers_is_one_line_exit_130_and_resumes(capsys, tmp_path, presses):
    """A real ``refprune hessian --workers 2`` in its own process group gets SIGINT (as
    from a terminal: the driver and its workers) once its first block is done, once or
    twice in a row: one line naming --resume and the partial file, exit status 130,
    within a bounded time, no process left; --resume then finishes the matrix, which
    equals the library's in one process."""
    import queue
    import signal
    import subprocess
    import sys
    import threading
    import time

    spec = "Linear(6, 24) Tanh Linear(24, 24) Tanh Linear(24, 4)"
    common = ["hessian", "--model", spec, "--input-shape", "6", "--samples", "200", "--block-rows", "20",
              "--out", str(tmp_path / "H.npy")]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "refprune", *common, "--workers", "2"], cwd=str(tmp_path),
                            env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(s) for s in proc.stderr] and None, daemon=True).start()
    try:
        deadline, seen = time.monotonic() + 60, []
        while not any(": block 1/" in s for s in seen):
            seen.append(lines.get(timeout=max(0.1, deadline - time.monotonic())))
        for _ in range(presses):
            os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    time.sleep(0.2)
    rest = []
    while not lines.empty():
        rest.append(lines.get())
    rest = [s for s in rest if s.strip() and ": block " not in s]
    assert code == 130, rest
    assert rest == [f"refprune hessian: interrupted; the finished blocks are recorded in {tmp_path / 'H.npy'}.partial: "
                    "run the same command with --resume to continue\n"], rest
    for _ in range(50):  # the workers are gone too (SIGKILL is delivered at once, reaping takes a moment)
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("worker processes outlived the driver")
    assert not (tmp_path / "H.npy").exists() and (tmp_path / "H.npy.partial").exists()
    code, _, err = run(capsys, *common, "--resume")
    assert code == 0 and "resuming" in err
    model = parse_model(spec)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 6))
    y = rng.integers(0, 4, 200)
    ref = rp.hessian(model, model.init(seed=0), X, y, rp.CrossEntropyLoss())
    assert np.abs(rp.load_matrix(str(tmp_path / "H.npy")) - ref).max() <= 1e-12 * np.abs(ref).max()


def test_demo_checks_the_picture_before_the_run(capsys, monkeypatch, tmp_path):
    """Without matplotlib, or into a directory that is not there, --plot and --heatmaps
    stop at once (one line, exit 2), before any training is printed."""
    import sys

    for k in [k for k in sys.modules if k == "matplotlib" or k.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, k)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    code, out, err = run(capsys, "demo", "--plot", str(tmp_path / "x.png"))
    assert code == 2 and out == ""
    assert err == (f"refprune demo: error: --plot {tmp_path / 'x.png'}: refprune.plot needs matplotlib: pip install "
                   "matplotlib (or pip install 'refprune[validation]') (see refprune demo --help)\n")
    monkeypatch.undo()
    pytest.importorskip("matplotlib")
    code, out, err = run(capsys, "demo", "--heatmaps", str(tmp_path / "no" / "h.png"))
    assert code == 2 and out == "" and f"the directory {tmp_path / 'no'} does not exist" in err


def test_cli_and_demo_do_not_import_each_other():
    """demo takes its argparse pieces from cli_parsing; only cli imports demo (to run it)."""
    import ast
    import inspect

    import refprune.cli_parsing
    import refprune.demo

    def imported(module):
        names = set()
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if isinstance(node, ast.ImportFrom):
                names.add(("." * node.level) + (node.module or ""))
                names.update(("." * node.level) + a.name for a in node.names if not node.module)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        return names

    assert not {"refprune.cli", ".cli"} & imported(refprune.demo)
    assert not {"refprune.cli", ".cli", "refprune.demo", ".demo"} & imported(refprune.cli_parsing)
    assert "refprune.cli_parsing" in imported(refprune.demo)


def test_the_estimate_follows_its_model_from_three_calibrations(monkeypatch):
    """A run costing ``a + b k + c k min(k, s)`` on ``k`` samples (a clock that advances by
    exactly that; the model of ``cli._estimate``): the estimate is that cost at ``N``,
    where one sample times ``N`` would give ``(a + b + c) N`` and a line would miss the
    curvature; a warm-up slower than the rest does not count; the calibration's work on samples costs
    less than half the run once a run on N/16 takes ``least`` seconds; a run on
    few samples is timed whole; ``N = 1`` is one sample's time."""
    from refprune import cli

    now = [0.0]
    monkeypatch.setattr(cli.time, "perf_counter", lambda: now[0])
    for a, b, c, s, N in ((2.0, 0.01, 0.0, None, 1000), (0.05, 0.02, 1e-4, None, 3000), (1.0, 0.5, 0.0, None, 7),
                          (0.5, 0.01, 1e-3, 400, 5000), (0.3, 0.03, 2e-5, 10**6, 640)):
        calls = []
        cap = N if s is None else s

        def timed(k):
            now[0] += a + b * k + c * k * min(k, cap) + (3.0 if not calls else 0.0)  # the first run also imports
            calls.append(k)

        cost = lambda k: a + b * k + c * k * min(k, cap)  # noqa: E731
        assert cli._estimate(timed, N, saturates=s) == pytest.approx(cost(N), rel=1e-9)
        if cost(N / 16) >= 0.5 and N >= 64:
            assert sum(cost(k) - a for k in calls[1:]) <= 0.45 * (cost(N) - a)  # each run also pays a
    calls = []
    # N = 1: the warm-up, then the whole run timed once (a second would cost another whole run)
    assert cli._estimate(lambda k: now.__setitem__(0, now[0] + 0.5) or calls.append(k), 1) == 0.5 and calls == [1] * 2
    calls = []
    assert cli._estimate(lambda k: now.__setitem__(0, now[0] + 0.01 * k) or calls.append(k), 32) == pytest.approx(0.32)
    assert calls == [2, 2, 2, 4, 4, 8, 8, 16, 16, 32]  # short runs below N twice, the run on all N once
    # noise that makes the curve bend down: a line through the last two points, never below them
    times = iter([9.0, 1.0, 1.9, 2.2])
    assert cli._estimate(lambda k: now.__setitem__(0, now[0] + next(times)), 640) == pytest.approx(
        1.6 + 0.3 / 80 * 640)


def test_the_estimate_grows_with_the_samples(monkeypatch):
    """The same calibration clock, more samples: never a smaller estimate (the model's
    terms are all non-negative)."""
    from refprune import cli

    now = [0.0]
    monkeypatch.setattr(cli.time, "perf_counter", lambda: now[0])
    clock = lambda k: now.__setitem__(0, now[0] + 0.2 + 0.004 * k + 3e-6 * k * k)  # noqa: E731
    estimates = [cli._estimate(clock, N) for N in (10, 100, 400, 1000, 4000, 16000)]
    assert all(x < y for x, y in zip(estimates, estimates[1:])), estimates


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_hessian_subcommand_with_binary_cross_entropy(capsys, tmp_path, reduction):
    """--loss bce: random 0/1 targets of the outputs' shape drawn after X from the seed, and
    the Hessian of rp.BCEWithLogitsLoss."""
    spec = "Linear(3, 4) Tanh Linear(4, 2)"
    out = tmp_path / "H.npy"
    code, _, _ = run(capsys, "hessian", "--model", spec, "--input-shape", "3", "--samples", "5", "--loss", "bce",
                     "--reduction", reduction, "--out", str(out))
    assert code == 0
    model = parse_model(spec)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5, 3))
    y = rng.integers(0, 2, (5, 2)).astype(float)
    ref = rp.hessian(model, model.init(seed=0), X, y, rp.BCEWithLogitsLoss(reduction))
    np.testing.assert_array_equal(np.load(out), ref)
