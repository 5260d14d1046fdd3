"""Pieces of refprune.cli called in-process (the subprocess tests of test_cli.py are
invisible to a mutation run): ``check`` with pytest and the self-check replaced by
recorders, the Ctrl-C handler with a stand-in pool and ``os`` calls recorded, the
small helpers against their documented rules.  No test name here may contain the words
that setup.cfg's mutmut section deselects (``ctrl_c``, ``as_tasks``, ...): these tests
start no process."""

import argparse
import os
import signal
import sys
from pathlib import Path

import pytest

import refprune
from refprune import cli


def _run(capsys, *argv):
    try:
        code = cli.main(list(argv))
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_check_runs_the_fast_profile_of_the_tests_next_to_the_package(capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(pytest, "main", lambda args: calls.append(args) or pytest.ExitCode.TESTS_FAILED)
    code, _, _ = _run(capsys, "check")
    tests = str(Path(refprune.__file__).resolve().parent.parent / "tests")
    assert code == 1 and type(cli.cmd_check(argparse.Namespace(builtin=False))) is int
    assert calls[0] == ["-q", "-p", "no:cacheprovider", "--hypothesis-profile=ci", tests]


@pytest.mark.parametrize("passed", [True, False])
def test_check_builtin_runs_the_self_check(capsys, monkeypatch, passed):
    from refprune import selfcheck

    calls = []
    monkeypatch.setattr(selfcheck, "run", lambda **kw: calls.append(kw) or passed)
    monkeypatch.setattr(pytest, "main", lambda args: pytest.fail("the test suite must not run"))
    code, _, _ = _run(capsys, "check", "--builtin")
    assert code == (0 if passed else 1) and calls == [{"verbose": True}]
    # without the tests next to the package: the self-check too
    real_isdir = os.path.isdir
    tests = str(Path(refprune.__file__).resolve().parent.parent / "tests")
    monkeypatch.setattr(os.path, "isdir", lambda p: False if os.path.abspath(p) == tests else real_isdir(p))
    code, _, _ = _run(capsys, "check")
    assert code == (0 if passed else 1) and calls == [{"verbose": True}] * 2


def test_check_without_pytest_says_what_to_install(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pytest", None)
    code, _, err = _run(capsys, "check")
    assert code == 2
    assert err == ("refprune check: error: the test suite needs pytest and hypothesis: pip install "
                   "'refprune[test]' (or run refprune check --builtin)\n")


class _Pool:
    def __init__(self, pids=()):
        self.pids, self.stops = list(pids), []

    def worker_pids(self):
        return list(self.pids)

    def stop(self, wait=True):
        self.stops.append(wait)


class _Exit(BaseException):
    pass


@pytest.fixture
def recorded_os(monkeypatch):
    rec = {"kill": [], "write": [], "exit": []}

    def kill(pid, sig):
        rec["kill"].append((pid, sig))
        if pid == 111:
            raise ProcessLookupError(pid)  # already gone: the others are still killed

    def _exit(code):
        rec["exit"].append(code)
        raise _Exit

    monkeypatch.setattr(os, "kill", kill)
    monkeypatch.setattr(os, "write", lambda fd, data: rec["write"].append((fd, data)))
    monkeypatch.setattr(os, "_exit", _exit)
    return rec


def _second_press(it):
    """A later Ctrl-C must end the process; a KeyboardInterrupt raised instead is a test
    failure here (pytest would take it for the user stopping the run)."""
    try:
        it._handler(signal.SIGINT, None)
    except KeyboardInterrupt:
        pytest.fail("a later Ctrl-C raised KeyboardInterrupt instead of stopping the workers")


def test_the_first_interrupt_raises_and_the_second_kills_the_workers(recorded_os):
    pool = _Pool([111, 222])
    it = cli._Interrupts(pool, "the line")
    assert (it.count, it.reported, it.previous, it.pids) == (0, False, None, set())
    with pytest.raises(KeyboardInterrupt):
        it._handler(signal.SIGINT, None)
    assert it.count == 1 and it.pids == {111, 222} and recorded_os["kill"] == []
    pool.pids = [333]  # a worker started since: killed too
    with pytest.raises(_Exit):
        _second_press(it)
    assert it.count == 2
    assert sorted(recorded_os["kill"]) == [(111, signal.SIGKILL), (222, signal.SIGKILL), (333, signal.SIGKILL)]
    assert recorded_os["write"] == [(2, b"the line\n")] and recorded_os["exit"] == [130]
    # once reported, the line is not written again
    it.reported = True
    with pytest.raises(_Exit):
        _second_press(it)
    assert it.count == 3 and recorded_os["write"] == [(2, b"the line\n")] and recorded_os["exit"] == [130, 130]


def test_report_once_and_leave_only_after_a_real_interrupt(capsys, recorded_os):
    it = cli._Interrupts(_Pool(), "stopped; resume with --resume")
    it.report()
    it.report()
    assert capsys.readouterr().err == "stopped; resume with --resume\n" and it.reported is True
    it.leave()  # no Ctrl-C was pressed: the command returns normally
    assert recorded_os["exit"] == []
    it.count = 1
    with pytest.raises(_Exit):
        it.leave()
    assert recorded_os["exit"] == [130]


def test_the_reported_line_is_out_at_once_on_a_block_buffered_stderr(monkeypatch):
    """The line must be visible while the workers are still being stopped, which may take
    seconds, even when stderr is not line-buffered (a stream that a parent process or a
    test harness put there): ``report`` flushes it."""
    import io

    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(raw, encoding="utf-8", line_buffering=False))
    cli._Interrupts(_Pool(), "stopped; resume with --resume").report()
    assert raw.getvalue() == b"stopped; resume with --resume\n"


def test_the_handler_is_installed_only_with_a_pool_and_restored_unless_pressed():
    before = signal.getsignal(signal.SIGINT)
    it = cli._Interrupts(_Pool(), "x")
    with it as entered:
        assert entered is it and signal.getsignal(signal.SIGINT) == it._handler and it.previous is before
    assert signal.getsignal(signal.SIGINT) is before
    with cli._Interrupts(None, "x") as it:
        assert signal.getsignal(signal.SIGINT) is before and it.previous is None
    it = cli._Interrupts(_Pool(), "x")
    try:
        with it:
            it.count = 1  # pressed: the handler stays for the rest of the process
        assert signal.getsignal(signal.SIGINT) == it._handler
    finally:
        signal.signal(signal.SIGINT, before)
    assert it.__exit__(None, None, None) is False


def test_workers_ignore_interrupts():
    before = signal.getsignal(signal.SIGINT)
    try:
        cli._ignore_interrupts()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_stop_waits_only_when_not_forced():
    pool = _Pool()
    cli._stop(pool)
    cli._stop(pool, force=False)
    cli._stop(None)
    assert pool.stops == [False, True]
    assert cli._pool(0) is None and cli._pool(None) is None


def test_small_helpers():
    assert cli._error_text(KeyError("network")) == "missing key 'network'"
    assert cli._error_text(ValueError("bad value")) == "bad value"
    assert cli._error_text(IndexError(3)) == "3"
    assert cli._seconds(0.04) == "0.0 s" and cli._seconds(599.94) == "599.9 s"
    assert cli._seconds(600) == "10 min" and cli._seconds(3000) == "50 min"
    ns = dict(workers=0, block_rows=None, shards=1, resume=False)
    assert cli._runs_as_tasks(argparse.Namespace(**ns)) is False
    for k, v in (("workers", 2), ("block_rows", 5), ("shards", 2), ("resume", True)):
        assert cli._runs_as_tasks(argparse.Namespace(**{**ns, k: v})) is True


def test_split_layers_at_spaces_and_dashes_outside_parentheses():
    assert cli._split_layers("Linear(3, -4)-Tanh  Conv2d(1,2,3,padding=(1, 1))\tFlatten") == [
        "Linear(3, -4)", "Tanh", "Conv2d(1,2,3,padding=(1, 1))", "Flatten"]
    assert cli._split_layers(" - ") == [] and cli._split_layers("ReLU") == ["ReLU"]


def test_the_subcommands_and_their_help(capsys):
    ap = cli.build_parser()
    assert ap.prog == "refprune" and set(ap.commands) == {"hessian", "fixtures", "check"}
    help_ = ap.format_help()
    for line in ("train, inspect and prune a small net on built-in spirals (--help for options)",
                 "an exact Hessian, GGN, residual or Fisher into an .npy file",
                 "write the golden fixtures (.npz + manifest.json) into DIR",
                 "run the fast tests (or the built-in self-check) of the installed package"):
        assert " ".join(line.split()) in " ".join(help_.split()), line
    assert "Ground-truth second-order quantities for pruning." in help_
    code, _, err = _run(capsys)
    assert code == 2 and err == ("refprune: error: the following arguments are required: COMMAND "
                                 "(see refprune --help)\n")
    for name, sub in ap.commands.items():
        assert isinstance(sub, cli.OneLineParser) and sub.prog == f"refprune {name}"


@pytest.mark.parametrize("curvature", ["hessian", "mc_fisher"])
@pytest.mark.parametrize("data", [None, "d.npz"])
@pytest.mark.parametrize("params", [None, "p.npz"])
@pytest.mark.parametrize("out, dry_run", [(None, False), ("H.npy", False), ("H.npy", True)])
def test_hessian_mode_words(curvature, data, params, out, dry_run):
    """The mode of refprune.options' CLI section, written out: the curvature, "data",
    "out", "dry-run" when given, and "draws" when something is drawn at random (the data,
    the parameters or the Monte Carlo targets)."""
    v = dict(curvature=curvature, data=data, params=params, out=out, dry_run=dry_run, samples=32)
    want = {f"curvature {curvature}"}
    want |= {"data"} if data else set()
    want |= {"out"} if out else set()
    want |= {"dry-run"} if dry_run else set()
    if data is None or params is None or curvature == "mc_fisher":
        want.add("draws")
    got = cli.hessian_mode(v)
    assert got == frozenset(want) and isinstance(got, frozenset)


def test_parse_model_builds_the_layers_named():
    model = cli.parse_model("Conv2d(1, 2, 3, padding=1)-Tanh AvgPool2d(2) Flatten Linear(8, 3)")
    by_hand = refprune.Sequential(refprune.Conv2d(1, 2, 3, padding=1), refprune.Tanh(), refprune.AvgPool2d(2),
                                  refprune.Flatten(), refprune.Linear(8, 3))
    assert str(model) == str(by_hand) and model.param_shapes() == by_hand.param_shapes()
    assert isinstance(model, refprune.Sequential)
    for name in cli._LAYER_NAMES:  # each name is a layer of refprune.nn
        assert name in dir(refprune.nn)


@pytest.mark.parametrize("spec, message", [
    ("Linear(3,", "cannot read the model 'Linear(3,': "),
    ("Gelu", "unknown layer 'Gelu' in the model; known: Linear, Conv2d, ReLU, Tanh, Sigmoid, Softplus, AvgPool2d, "
             "MaxPool2d, Flatten"),
    ("nn.Linear(2, 3)", "unknown layer 'nn.Linear' in the model; known: Linear, Conv2d, ReLU, Tanh, Sigmoid, "
                        "Softplus, AvgPool2d, MaxPool2d, Flatten"),
    ("", "the model has no layers"),
    ("Linear(2, bias=3, nope=1)", "layer Linear(2, bias=3, nope=1): "),
    ("Linear(x, 2)", "layer Linear(x, 2): malformed node or string"),
])
def test_parse_model_refusals(spec, message):
    with pytest.raises(cli.UsageError) as e:
        cli.parse_model(spec)
    assert str(e.value).startswith(message), str(e.value)
    assert e.value.__cause__ is None and (e.value.__context__ is None or e.value.__suppress_context__)


def test_npz_reads_named_arrays_and_refuses_the_rest(tmp_path):
    import numpy as np

    np.savez(tmp_path / "a.npz", X=np.arange(3.0), y=np.array([1, 2]))
    got = cli._npz(str(tmp_path / "a.npz"), "--data")
    assert sorted(got) == ["X", "y"] and np.array_equal(got["X"], np.arange(3.0)) and type(got) is dict
    np.save(tmp_path / "b.npy", np.arange(3.0))
    with pytest.raises(cli.UsageError) as e:
        cli._npz(str(tmp_path / "b.npy"), "--params")
    assert str(e.value) == f"--params {tmp_path / 'b.npy'}: expected an .npz file of named arrays, got an .npy array"
    (tmp_path / "c.npz").write_bytes(b"not a zip file")
    with pytest.raises(cli.UsageError) as e:
        cli._npz(str(tmp_path / "c.npz"), "--data")
    assert str(e.value).startswith(f"--data {tmp_path / 'c.npz'}: cannot be read as an .npz file (")


@pytest.mark.parametrize("quiet", [False, True])
def test_fixtures_subcommand_reports_what_was_written(capsys, monkeypatch, tmp_path, quiet):
    from refprune import fixtures

    calls = []
    monkeypatch.setattr(fixtures, "write_fixtures",
                        lambda d, progress: calls.append((d, progress)) or {"cases": [{}, {}, {}]})
    code, out, _ = _run(capsys, "fixtures", str(tmp_path), *(["--quiet"] if quiet else []))
    assert code == 0 and out == f"wrote 3 cases and manifest.json to {tmp_path}\n"
    assert calls == [(str(tmp_path), not quiet)]


def test_store_seconds_times_the_flush_and_two_hashings_of_the_whole_matrix(monkeypatch):
    """docs/derivations.md §11: the flush once, every row and column hashed twice,
    timed on about 16 MB (2**21 doubles) of rows and of columns and scaled to n."""
    import numpy as np

    from refprune.curvature import store

    now, digested = [0.0], []

    class Dest:
        def flush(self):
            now[0] += 0.25

        def __getitem__(self, index):
            return np.zeros((n, n))[index]

    def digest(a):
        digested.append(a.shape)
        now[0] += 0.125

    monkeypatch.setattr(cli.time, "perf_counter", lambda: now[0])
    monkeypatch.setattr(store, "digest", digest)
    for n, m in ((1, 1), (6, 6), (1600, 2**21 // 1600), (3000, 2**21 // 3000)):
        digested.clear()
        assert cli._store_seconds(Dest(), n) == pytest.approx(0.25 + 2 * 0.25 * n / m)
        assert digested == [(m, n), (m, n)]


def test_samples_per_chunk_by_hand():
    """docs/derivations.md §4: ``CHUNK_FLOATS // (K_l x width)`` samples for the layer that
    takes the most, ``K_l`` the smaller of its parameters and outputs, at least one."""
    import numpy as np

    from refprune import derivatives

    assert derivatives.CHUNK_FLOATS == 2**23
    X = np.zeros((3, 4))
    # width 5 (Linear(4, 5)'s output); K = 5 for the first layer, 3 for the second
    assert cli._samples_per_chunk(cli.parse_model("Linear(4, 5) Tanh Linear(5, 3)"), X) == 2**23 // (3 * 5)
    # width 4096, K = 4096: 2**24 floats a sample, more than one chunk holds
    assert cli._samples_per_chunk(cli.parse_model("Linear(2048, 4096)"), np.zeros((1, 2048))) == 1


def test_the_subcommands_exactly():
    ap = cli.build_parser()
    assert ap.description == "Ground-truth second-order quantities for pruning."
    (action,) = ap._subparsers._group_actions
    assert action.dest == "command" and action.required is True and action.metavar == "COMMAND"
    assert [(a.dest, a.help) for a in action._choices_actions] == [
        ("demo", "train, inspect and prune a small net on built-in spirals (--help for options)"),
        ("hessian", "an exact Hessian, GGN, residual or Fisher into an .npy file"),
        ("fixtures", "write the golden fixtures (.npz + manifest.json) into DIR"),
        ("check", "run the fast tests (or the built-in self-check) of the installed package")]
    # the demo's options are its own parser's (refprune.demo): no -h of the command line's
    assert action.choices["demo"]._actions == [] and isinstance(action.choices["demo"], cli.OneLineParser)
    assert ap.commands == {k: action.choices[k] for k in ("hessian", "fixtures", "check")}
    (group,) = ap.commands["hessian"]._mutually_exclusive_groups
    assert group.required is True and [a.option_strings for a in group._group_actions] == [["--model"],
                                                                                            ["--model-json"]]


def test_main_reads_sys_argv_hands_the_demo_its_arguments_and_reports_an_interrupt(capsys, monkeypatch, tmp_path):
    from refprune import demo

    seen = []
    monkeypatch.setattr(demo, "main", lambda argv: seen.append(argv) or 7)
    assert cli.main(["demo", "--steps", "3"]) == 7 and seen == [["--steps", "3"]]
    monkeypatch.setattr(sys, "argv", ["refprune", "demo", "--lr", "0.1"])
    assert cli.main() == 7 and seen[-1] == ["--lr", "0.1"]

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_fixtures", interrupted)
    code, _, err = _run(capsys, "fixtures", str(tmp_path))
    assert code == 130 and err == "refprune fixtures: interrupted\n"


def _interrupted(capsys, monkeypatch, argv, after):
    """Run ``argv`` and stop it with Ctrl-C once ``after`` blocks are recorded (0: before any)."""
    from refprune.curvature import store

    real, marked = store.BlockRecord.mark, []

    def mark_then_stop(self, key, block):
        if self.persistent and len(marked) == after:
            raise KeyboardInterrupt
        real(self, key, block)
        if self.persistent:
            marked.append(key)

    monkeypatch.setattr(store.BlockRecord, "mark", mark_then_stop)
    assert _run(capsys, *argv)[0] == 130
    monkeypatch.setattr(store.BlockRecord, "mark", real)


def _reference(seed=0):
    import numpy as np

    model = cli.parse_model("Linear(4, 5) Tanh Linear(5, 3)")
    rng = np.random.default_rng(seed)
    X, y = rng.standard_normal((8, 4)), rng.integers(0, 3, 8)
    return refprune.hessian(model, model.init(seed=seed), X, y, refprune.CrossEntropyLoss())


def test_resume_names_what_differs_from_the_interrupted_run(capsys, monkeypatch, tmp_path):
    import json
    import warnings

    import numpy as np

    out = tmp_path / "H.npy"
    partial = f"{out}.partial"
    common = ("hessian", "--model", "Linear(4, 5) Tanh Linear(5, 3)", "--input-shape", "4", "--samples", "8",
              "--out", str(out))
    _interrupted(capsys, monkeypatch, (*common, "--block-rows", "5", "--shards", "2"), after=2)
    layout = sorted(json.loads(open(partial + ".refprune.json").read())["blocks"])
    assert layout == sorted(f"layer {l} units {u}-{u + 1}" for l, units in ((0, 5), (2, 3)) for u in range(units))
    theirs = ", ".join(layout[:3]) + (", ..." if len(layout) > 3 else "")
    tail = "to keep its 2 finished blocks, or run without --resume to start again\n"
    code, _, err = _run(capsys, *common, "--resume", "--block-rows", "5", "--shards", "1")
    assert code == 2 and err == (f"refprune hessian: error: --resume with --shards 1: {partial} was written with "
                                 f"--shards 2; give --shards 2 {tail}")
    code, _, err = _run(capsys, *common, "--resume", "--block-rows", "10", "--shards", "2")
    assert code == 2 and err == (f"refprune hessian: error: --resume: {partial} was written in other blocks "
                                 f"({theirs}) than --block-rows 10 gives; give the --block-rows of the interrupted "
                                 f"run {tail}")
    code, _, err = _run(capsys, *common, "--resume", "--shards", "2")
    assert code == 2 and f"than whole layers gives; give the --block-rows of the interrupted run {tail}" in err
    code, _, err = _run(capsys, *common, "--resume", "--block-rows", "5", "--shards", "2", "--seed", "1")
    assert code == 2 and err == (f"refprune hessian: error: --resume: {partial} was written for another computation "
                                 "(other data, parameters, loss, --curvature, --seed, --block-rows or --shards than "
                                 f"these); give the options of the interrupted run {tail}")
    # a record that cannot be read: said in one line, every block computed again, no warning besides
    with open(partial + ".refprune.json", "w") as fh:
        fh.write("{not json")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, err = _run(capsys, *common, "--resume", "--block-rows", "5", "--shards", "2")
    assert code == 0 and [w for w in caught if issubclass(w.category, RuntimeWarning)] == []
    from refprune.curvature import store

    with pytest.raises(ValueError) as e:
        store.parse_record(b"{not json", partial + ".refprune.json", "refprune hessian", n=43)
    assert f"hessian: the record of {partial} cannot be used ({e.value}); every block is computed again\n" in err
    assert partial + ".refprune.json" in str(e.value) and "refprune hessian" in str(e.value)
    assert np.abs(np.load(out) - _reference()).max() <= 1e-12 * np.abs(_reference()).max()


def test_resume_of_a_run_stopped_before_its_first_block(capsys, monkeypatch, tmp_path):
    import warnings

    import numpy as np

    out = tmp_path / "H.npy"
    common = ("hessian", "--model", "Linear(4, 5) Tanh Linear(5, 3)", "--input-shape", "4", "--samples", "8",
              "--out", str(out))
    _interrupted(capsys, monkeypatch, (*common, "--block-rows", "2"), after=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, err = _run(capsys, *common, "--resume", "--seed", "1", "--block-rows", "2")
    assert code == 0 and [w for w in caught if issubclass(w.category, RuntimeWarning)] == []
    assert f"hessian: {out}.partial records no finished block; every block is computed\n" in err
    assert np.abs(np.load(out) - _reference(1)).max() <= 1e-12 * np.abs(_reference(1)).max()


@pytest.mark.parametrize("curvature", ["residual", "mc_fisher"])
def test_hessian_subcommand_prints_the_spectrum_of_the_library_matrix(capsys, curvature):
    import numpy as np

    code, out, _ = _run(capsys, "hessian", "--model", "Linear(3, 4) Tanh Linear(4, 2)", "--input-shape", "3",
                        "--samples", "6", "--seed", "2", "--curvature", curvature,
                        *(["--mc-samples", "3"] if curvature == "mc_fisher" else []))
    model = cli.parse_model("Linear(3, 4) Tanh Linear(4, 2)")
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((6, 3)), rng.integers(0, 2, 6)
    args = (model, model.init(seed=2), X, y, refprune.CrossEntropyLoss())
    M = refprune.residual(*args) if curvature == "residual" else refprune.fisher(
        *args, curvature="mc_fisher", samples=3, seed=2)
    ev = np.linalg.eigvalsh(M)
    assert code == 0 and out == f"trace {ev.sum():.6g}, eigenvalues from {ev[0]:.6g} to {ev[-1]:.6g}\n"


def test_compute_hands_the_pool_to_the_library_as_its_executor():
    import concurrent.futures

    import numpy as np

    submitted = []

    class Recording(concurrent.futures.ThreadPoolExecutor):
        def submit(self, fn, *a, **k):
            submitted.append(fn)
            return super().submit(fn, *a, **k)

    model = cli.parse_model("Linear(3, 4) Tanh Linear(4, 2)")
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((6, 3)), rng.integers(0, 2, 6)
    loss = refprune.CrossEntropyLoss()
    params = model.init(seed=0)
    ref = refprune.hessian(model, params, X, y, loss)
    for tasks in (dict(workers=0, block_rows=4, shards=1), dict(workers=0, block_rows=None, shards=2)):
        args = argparse.Namespace(curvature="hessian", resume=False, mc_samples=1, seed=0, **tasks)
        with Recording(1) as pool:
            submitted.clear()
            M = cli._compute(refprune, args, model, params, X, y, loss, np.empty((model.n_params,) * 2), False, pool)
        assert submitted and np.abs(M - ref).max() <= 1e-12 * np.abs(ref).max()


def test_resume_of_a_monte_carlo_fisher_keeps_its_one_block(capsys, monkeypatch, tmp_path):
    import numpy as np

    out = tmp_path / "F.npy"
    common = ("hessian", "--model", "Linear(4, 5) Tanh Linear(5, 3)", "--input-shape", "4", "--samples", "8",
              "--out", str(out), "--curvature", "mc_fisher", "--mc-samples", "2", "--seed", "3", "--block-rows", "5")
    _interrupted(capsys, monkeypatch, common, after=1)
    code, _, err = _run(capsys, *common, "--resume", "--shards", "2")
    assert code == 2 and err.endswith(f"{out}.partial was written with --shards 1; give --shards 1 to keep its "
                                      "1 finished block, or run without --resume to start again\n")
    code, _, err = _run(capsys, *common, "--resume")  # the same draws: the record is this computation's
    assert code == 0 and "resuming" in err
    model = cli.parse_model("Linear(4, 5) Tanh Linear(5, 3)")
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((8, 4)), rng.integers(0, 3, 8)
    ref = refprune.fisher(model, model.init(seed=3), X, y, refprune.CrossEntropyLoss(), curvature="mc_fisher",
                          samples=2, seed=3)
    assert np.abs(np.load(out) - ref).max() <= 1e-12 * np.abs(ref).max()


def test_a_refused_value_is_reported_by_the_subcommand(capsys):
    code, _, err = _run(capsys, "hessian", "--model", "Linear(3,2)", "--input-shape", "3", "--samples", "0")
    assert code == 2 and err.startswith("refprune hessian: error: --samples ") and err.endswith(
        " (see refprune hessian --help)\n")


def test_the_pool_has_the_workers_asked_for_and_they_ignore_interrupts(monkeypatch):
    """``--workers k``: a WorkerPool of k processes whose initializer makes Ctrl-C
    ignored in each (the driver stops them); a stand-in records the call, no process starts."""
    from refprune.curvature import parallel

    made = []

    class Recorded:
        def __init__(self, *args, **kwargs):
            made.append((args, kwargs))

    monkeypatch.setattr(parallel, "WorkerPool", Recorded)
    pool = cli._pool(3)
    assert isinstance(pool, Recorded) and made == [((3,), {"initializer": made[0][1].get("initializer")})]
    before = signal.getsignal(signal.SIGINT)
    try:
        made[0][1]["initializer"]()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def _record(path):
    import json

    with open(path) as fh:
        return json.load(fh)


def test_resume_lists_at_most_three_of_the_recorded_blocks(capsys, monkeypatch, tmp_path):
    """The refusal names the interrupted run's blocks, the first three in order and
    ", ..." only when there are more."""
    common = ("hessian", "--model", "Linear(2, 3) Tanh Linear(3, 1)", "--input-shape", "2", "--samples", "4",
              "--loss", "mse")
    for block_rows, count in (("6", 3), ("1", 4)):
        out = tmp_path / f"H{block_rows}.npy"
        _interrupted(capsys, monkeypatch, (*common, "--out", str(out), "--block-rows", block_rows), after=1)
        names = sorted(_record(f"{out}.partial.refprune.json")["blocks"])
        assert len(names) == count
        theirs = ", ".join(names[:3]) + (", ..." if count == 4 else "")
        code, _, err = _run(capsys, *common, "--out", str(out), "--block-rows", "9", "--resume")
        assert code == 2 and err == (f"refprune hessian: error: --resume: {out}.partial was written in other blocks "
                                     f"({theirs}) than --block-rows 9 gives; give the --block-rows of the interrupted "
                                     "run to keep its 1 finished block, or run without --resume to start again\n")


def test_resume_names_the_shards_of_the_interrupted_run_up_to_64(capsys, monkeypatch, tmp_path):
    """The --shards of the interrupted run are searched from 1 to min(samples, 64): the
    largest possible (one sample per shard) is named; 65 is beyond the search, and the
    refusal is the general one."""
    tail = "to keep its 1 finished block, or run without --resume to start again\n"
    for samples, shards in ((6, 6), (65, 65)):
        out = tmp_path / f"H{samples}.npy"
        common = ("hessian", "--model", "Linear(2, 2)", "--input-shape", "2", "--samples", str(samples),
                  "--loss", "mse", "--out", str(out), "--block-rows", "1")
        _interrupted(capsys, monkeypatch, (*common, "--shards", str(shards)), after=1)
        code, _, err = _run(capsys, *common, "--shards", "1", "--resume")
        if samples <= 64:
            assert code == 2 and err == (f"refprune hessian: error: --resume with --shards 1: {out}.partial was "
                                         f"written with --shards {shards}; give --shards {shards} {tail}")
        else:
            assert code == 2 and err == (f"refprune hessian: error: --resume: {out}.partial was written for another "
                                         "computation (other data, parameters, loss, --curvature, --seed, "
                                         "--block-rows or --shards than these); give the options of the interrupted "
                                         f"run {tail}")


def _resume_quietly(capsys, argv):
    """Run ``argv``; its exit status, stderr and the RuntimeWarnings that reached the caller."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, err = _run(capsys, *argv)
    return code, err, [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


def test_resume_with_a_record_that_is_not_text_or_of_another_size(capsys, monkeypatch, tmp_path):
    """A record whose bytes are not UTF-8 is reported as the store reads it (not valid
    JSON), and one for a matrix of another size as damaged: either way one line, every
    block computed again, and the store's own warning about it not shown."""
    import json

    import numpy as np

    from refprune.curvature import store

    out = tmp_path / "H.npy"
    rec = f"{out}.partial.refprune.json"
    common = ("hessian", "--model", "Linear(4, 5) Tanh Linear(5, 3)", "--input-shape", "4", "--samples", "8",
              "--out", str(out), "--block-rows", "5")
    ref = _reference()
    for damage in ("bytes", "size"):
        _interrupted(capsys, monkeypatch, common, after=2)
        raw = open(rec, "rb").read()
        if damage == "bytes":
            raw = raw.replace(b'"hessian"', b'"hessian\xff"', 1)
        else:
            saved = json.loads(raw)
            saved["n"] = 44
            raw = json.dumps(saved).encode()
        with open(rec, "wb") as fh:
            fh.write(raw)
        with pytest.raises(ValueError) as e:
            store.parse_record(raw, rec, "refprune hessian", n=43)
        assert ("is not valid JSON" if damage == "bytes" else "it is for a 44 x 44 matrix") in str(e.value)
        code, err, warned = _resume_quietly(capsys, (*common, "--resume"))
        assert code == 0 and warned == []
        assert f"hessian: the record of {out}.partial cannot be used ({e.value}); every block is computed again\n" in err
        assert np.abs(np.load(out) - ref).max() <= 1e-12 * np.abs(ref).max()
        out.unlink()


def test_resume_hides_only_the_warning_it_has_said_in_its_own_line(capsys, monkeypatch, tmp_path):
    """After the one line about an unusable record, or about a record with no finished
    block, the store's warning saying the same is not shown; any other RuntimeWarning
    of the run still is."""
    out = tmp_path / "H.npy"
    common = ("hessian", "--model", "Linear(4, 5) Tanh Linear(5, 3)", "--input-shape", "4", "--samples", "8",
              "--out", str(out), "--block-rows", "5")
    real = refprune.hessian

    def hessian(*args, **kwargs):
        import warnings

        warnings.warn("some other warning of the run", RuntimeWarning)
        return real(*args, **kwargs)

    for case in ("unreadable", "nothing finished"):
        _interrupted(capsys, monkeypatch, common, after=2 if case == "unreadable" else 0)
        if case == "unreadable":
            with open(f"{out}.partial.refprune.json", "w") as fh:
                fh.write("{not json")
        monkeypatch.setattr(refprune, "hessian", hessian)
        code, err, warned = _resume_quietly(capsys, (*common, "--resume", "--seed", "1"))
        monkeypatch.setattr(refprune, "hessian", real)
        assert code == 0 and warned == ["some other warning of the run"], (case, warned)
        assert ("cannot be used" if case == "unreadable" else "records no finished block") in err
        out.unlink()


def _calibrate(monkeypatch, N, seconds, saturates=None):
    """``cli._estimate`` over ``N`` samples with a clock that advances by ``seconds(k)``
    per run on ``k`` samples (the warm-up on 2 samples takes 9 s): the estimate and the
    sample counts run, warm-up first."""
    now, calls = [0.0], []

    def timed(k):
        now[0] += 9.0 if not calls else seconds(k)
        calls.append(k)

    monkeypatch.setattr(cli.time, "perf_counter", lambda: now[0])
    return cli._estimate(timed, N, saturates=saturates), calls


def test_the_calibration_runs_documented(monkeypatch):
    """cli._estimate's calibration as its docstring gives it (least = 0.5 s, fraction
    1/16): k = ceil(N / 16) samples, at least one, doubled while a run takes less than
    least; then 2k and 4k; a run below N shorter than 2 least is timed twice, a run on
    all N once; an 8k run only when the time per sample grew by more than 30% from the
    first pair of points to the second.  Clocks of whole binary fractions of a second,
    so that the comparisons with least and 1.3 are exact."""
    # each run takes 2 s or more: k = ceil(10 / 16) = 1, 2, 4, each timed once; 4 < N, and
    # the time is linear: the line through the points, at N
    est, calls = _calibrate(monkeypatch, 10, lambda k: 1.75 + 0.25 * k)
    assert calls == [2, 1, 2, 4] and est == pytest.approx(1.75 + 0.25 * 10)
    # a run taking exactly least is long enough: no doubling (timed twice, below 2 least; 1.25 s once)
    est, calls = _calibrate(monkeypatch, 64, lambda k: 0.5 if k == 4 else 0.25 + k / 16)
    assert calls == [2, 4, 4, 8, 8, 16] and est == pytest.approx(0.25 + 64 / 16)
    # 2k and 4k below N and short: each timed twice
    est, calls = _calibrate(monkeypatch, 160, lambda k: 0.5 + k / 160)
    assert calls == [2, 10, 10, 20, 20, 40, 40] and est == pytest.approx(1.5)
    # 4k = N: the whole run timed once, even when short, and it is the estimate
    est, calls = _calibrate(monkeypatch, 4, lambda k: 0.75)
    assert calls == [2, 1, 1, 2, 2, 4] and est == 0.75
    # a first run shorter than least: k doubled until a run takes least (each short run
    # below N timed twice), then 2k and 4k as before
    est, calls = _calibrate(monkeypatch, 64, lambda k: k / 16)
    assert calls == [2, 4, 4, 8, 8, 16, 32] and est == pytest.approx(4.0)
    # doubled up to N, whose run is timed once and is the estimate however short
    est, calls = _calibrate(monkeypatch, 8, lambda k: k / 64)
    assert calls == [2, 1, 1, 2, 2, 4, 4, 8] and est == 0.125
    # growth, and 2k = 16 still below N = 20: the 8k run
    cost = lambda k: 1.0 + 0.01 * k + 0.005 * k * k  # noqa: E731
    est, calls = _calibrate(monkeypatch, 20, cost)
    assert calls == [2, 2, 4, 8, 16] and est == pytest.approx(cost(20), rel=1e-9)
    # growth, but 2k = 32 is past N = 20 (k doubled once at the start): no 8k run
    cost = lambda k: 0.25 + 0.01 * k + 0.015 * k * k  # noqa: E731
    est, calls = _calibrate(monkeypatch, 20, cost)
    assert calls == [2, 2, 2, 4, 4, 8, 16] and est == pytest.approx(cost(20), rel=1e-9)
    # ... nor when 2k = 32 is N itself (that run would be the whole computation)
    est, calls = _calibrate(monkeypatch, 32, cost)
    assert calls == [2, 2, 2, 4, 4, 8, 16] and est == pytest.approx(cost(32), rel=1e-9)
    # a single sample: the first run is already on all N, timed once although short
    est, calls = _calibrate(monkeypatch, 1, lambda k: 0.25)
    assert calls == [1, 1] and est == 0.25
    # linear, but not through the origin: no growth, no 8k run
    est, calls = _calibrate(monkeypatch, 160, lambda k: 1.0 + 0.2 * k)
    assert calls == [2, 10, 20, 40] and est == pytest.approx(33.0)
    # growth exactly 30%: (37 - 11) / 20 = 1.3 * (11 - 1) / 10, not more: no 8k run
    est, calls = _calibrate(monkeypatch, 160, {10: 1.0, 20: 11.0, 40: 37.0}.__getitem__)
    assert calls == [2, 10, 20, 40]
    # time per sample doubled (a + b k + c k^2): the 8k run, timed once, and the curve
    # through the three largest points gives the cost at N
    cost = lambda k: 1.0 + 0.01 * k + 0.005 * k * k  # noqa: E731
    est, calls = _calibrate(monkeypatch, 160, cost)
    assert calls == [2, 10, 20, 40, 80] and est == pytest.approx(cost(160), rel=1e-9)


class _StandInPool:
    """In place of ``WorkerPool(workers, initializer=...)``: an executor that runs each
    task at submission, in this process, recording the SIGINT handler each task sees;
    ``stop(wait)`` recorded."""

    made, stops, handlers = [], [], []

    def __init__(self, workers, initializer=None):
        import concurrent.futures as cf

        type(self).made.append((workers, initializer))
        self.executor = cf.Executor()

    def submit(self, fn, *args, **kwargs):
        import concurrent.futures as cf

        type(self).handlers.append(signal.getsignal(signal.SIGINT))
        fut = cf.Future()
        fut.set_result(fn(*args, **kwargs))
        return fut

    def worker_pids(self):
        return []

    def stop(self, wait=True):
        type(self).stops.append(wait)


def test_hessian_with_workers_hands_a_pool_to_the_library_and_stops_it(capsys, monkeypatch, tmp_path):
    """``--workers 2`` in this process (a stand-in pool, no process started): the pool of
    2 is built once, the library's tasks are submitted to it with the command's Ctrl-C
    handler installed, the pool is stopped, waiting, at the end, the previous handler is
    back, and the matrix is the library's; interrupted, the pool is stopped at once
    (then waited for) and the line names --resume."""
    import concurrent.futures as cf

    import numpy as np

    from refprune.curvature import parallel

    pool_class = type("Pool", (_StandInPool, cf.Executor), {"made": [], "stops": [], "handlers": []})
    monkeypatch.setattr(parallel, "WorkerPool", pool_class)
    before = signal.getsignal(signal.SIGINT)
    out = tmp_path / "H.npy"
    common = ("hessian", "--model", "Linear(4, 5) Tanh Linear(5, 3)", "--input-shape", "4", "--samples", "8",
              "--out", str(out), "--workers", "2")
    real, executors = refprune.hessian, []

    def hessian(*args, **kw):
        executors.append(kw.get("executor"))
        return real(*args, **kw)

    monkeypatch.setattr(refprune, "hessian", hessian)
    code, _, err = _run(capsys, *common)
    monkeypatch.setattr(refprune, "hessian", real)
    assert code == 0 and "block 2/2" in err
    # the estimate's runs and the real one, all on the pool
    assert len(executors) >= 2 and all(isinstance(e, pool_class) for e in executors)
    assert len(pool_class.made) == 1 and pool_class.made[0][0] == 2 and pool_class.stops == [True]
    assert pool_class.handlers and all(getattr(h, "__func__", None) is cli._Interrupts._handler
                                       for h in pool_class.handlers)
    assert signal.getsignal(signal.SIGINT) is before
    ref = _reference()
    assert np.abs(np.load(out) - ref).max() <= 1e-12 * np.abs(ref).max()
    pool_class.stops.clear()
    from refprune.curvature import store

    def stop_after_one(self, key, block, **kw):  # the workers write; the driver records
        raise KeyboardInterrupt

    monkeypatch.setattr(store.BlockRecord, "mark_written", stop_after_one)
    code, _, err = _run(capsys, *common[:-4], "--out", str(tmp_path / "H2.npy"), "--workers", "2")
    assert code == 130 and pool_class.stops == [False, True] and signal.getsignal(signal.SIGINT) is before
    assert err.splitlines()[-1] == (f"refprune hessian: interrupted; the finished blocks are recorded in "
                                    f"{tmp_path / 'H2.npy'}.partial: run the same command with --resume to continue")


_SMALL = ("hessian", "--model", "Linear(4, 5) Tanh Linear(5, 3)", "--input-shape", "4", "--samples", "8")


def test_what_fits_is_computed_and_what_does_not_is_refused_in_gib(capsys, monkeypatch, tmp_path):
    """The matrix needs 8 n^2 bytes: exactly that much memory or disk is enough, a byte
    less is refused, the message in GiB (2**30 bytes) with two decimals; an estimate
    line with three (the calibration and the file's time stand-ins here: nothing of
    the 6,040-parameter model is computed)."""
    import shutil
    from collections import namedtuple

    import refprune.curvature.exact as exact

    usage = namedtuple("usage", "total used free")
    need = 8 * 43 * 43
    monkeypatch.setattr(exact, "available_memory", lambda: need)
    assert _run(capsys, *_SMALL, "--dry-run")[0] == 0
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 * need, 9 * need, need))
    assert _run(capsys, *_SMALL, "--dry-run", "--out", str(tmp_path / "H.npy"))[0] == 0
    big = ("hessian", "--model", "Linear(150, 40)", "--input-shape", "150", "--samples", "2", "--loss", "mse")
    n = 150 * 40 + 40
    need = 8 * n * n
    monkeypatch.setattr(exact, "available_memory", lambda: need - 1)
    code, _, err = _run(capsys, *big)
    # a byte short: the GiB read the same, so the bytes are given too
    assert code == 2 and err == (f"refprune hessian: error: the {n} x {n} matrix needs 0.27 GiB (291,852,800 bytes) "
                                 "but only 0.27 GiB (291,852,799 bytes) of memory are available; give --out FILE.npy "
                                 "to write it to disk\n")
    assert need == 291_852_800
    free = 2**28  # 0.25 GiB
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2**40, 2**40 - free, free))
    code, _, err = _run(capsys, *big, "--out", str(tmp_path / "B.npy"))
    assert code == 2 and err == (f"refprune hessian: error: the {n} x {n} matrix needs 0.27 GiB but the disk has "
                                 "0.25 GiB free\n")
    monkeypatch.setattr(exact, "available_memory", lambda: need)
    monkeypatch.setattr(cli, "_estimate", lambda timed, N, saturates: 200.0)
    code, out, err = _run(capsys, *big, "--dry-run")
    assert code == 0 and out == "" and err == f"hessian: n = {n} parameters, N = 2 samples: 0.272 GiB, about 200.0 s\n"


def test_the_estimate_adds_the_files_time_and_a_dry_run_leaves_no_file(capsys, monkeypatch, tmp_path):
    """With --out the estimate is the calibration's plus the file's (flush and hashing);
    --dry-run then removes the partial file it made, and its record."""
    monkeypatch.setattr(cli, "_estimate", lambda timed, N, saturates: 200.0)
    monkeypatch.setattr(cli, "_store_seconds", lambda dest, n: 1000.0)
    out = tmp_path / "H.npy"
    code, _, err = _run(capsys, *_SMALL, "--out", str(out), "--dry-run")
    assert code == 0 and err.endswith(", about 20 min\n")  # 1,200 s
    assert sorted(os.listdir(tmp_path)) == []


def test_the_calibration_writes_into_the_destination_not_a_new_matrix(capsys, monkeypatch, tmp_path):
    """The calibration runs (the estimate) are the same computation on the first k samples,
    written into a plain view of the destination (so nothing more than the matrix is
    allocated and no record is kept), without progress, on the same pool; the real run
    writes into the memmap with progress; the estimate's model saturates at the samples
    of one chunk times the shards."""
    import numpy as np

    calls, seen = [], {}
    real = refprune.hessian

    def hessian(model, params, X, y, loss, out=None, progress=False, **kw):
        calls.append((len(X), out, progress, kw.get("executor")))
        return real(model, params, X, y, loss, out=out, progress=progress, **kw)

    real_estimate = cli._estimate

    def estimate(timed, N, saturates):
        seen["saturates"] = saturates
        return real_estimate(timed, N, saturates=saturates)

    monkeypatch.setattr(refprune, "hessian", hessian)
    monkeypatch.setattr(cli, "_estimate", estimate)
    out = tmp_path / "H.npy"
    code, _, _ = _run(capsys, *_SMALL, "--out", str(out), "--shards", "2")
    assert code == 0
    *calibration, final = calls
    assert calibration and final[0] == 8 and isinstance(final[1], np.memmap) and final[2] is True
    for k, scratch, progress, executor in calibration:
        assert type(scratch) is np.ndarray and scratch.shape == (43, 43) and progress is False and executor is None
        assert np.shares_memory(scratch, final[1])
    model = cli.parse_model("Linear(4, 5) Tanh Linear(5, 3)")
    X = np.random.default_rng(0).standard_normal((8, 4))
    assert seen["saturates"] == cli._samples_per_chunk(model, X) * 2


def test_lines_of_a_run_to_a_file_and_of_its_resumptions(capsys, monkeypatch, tmp_path):
    """On stderr, nothing on stdout: "wrote FILE (record FILE.refprune.json)" at the end,
    "resuming" when continuing, "is complete; nothing to resume" (exit 0) once done; a
    FILE that is there without a verified record is refused with the reason; a new run
    over an interrupted one's partial file starts clean (its old record removed: no
    warning that it is for another computation)."""
    import warnings

    import numpy as np

    out = tmp_path / "H.npy"
    common = (*_SMALL, "--out", str(out), "--block-rows", "5")
    _interrupted(capsys, monkeypatch, common, after=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, stdout, err = _run(capsys, *common, "--seed", "1")
    assert code == 0 and stdout == "" and [str(w.message) for w in caught] == []
    assert err.splitlines()[-1] == f"wrote {out} (record {out}.refprune.json)"
    ref = _reference(1)
    assert np.abs(np.load(out) - ref).max() <= 1e-12 * np.abs(ref).max()
    code, stdout, err = _run(capsys, *common, "--seed", "1", "--resume")
    assert (code, stdout, err) == (0, "", f"hessian: {out} is complete; nothing to resume\n")
    _interrupted(capsys, monkeypatch, common, after=2)
    code, stdout, err = _run(capsys, *common, "--resume")
    assert code == 0 and stdout == ""
    assert err.splitlines()[0] == f"hessian: resuming {out}.partial (blocks recorded as done are kept)"
    os.remove(f"{out}.refprune.json")
    with pytest.raises(refprune.IncompleteResultError) as e:
        refprune.load_matrix(str(out))
    code, stdout, err = _run(capsys, *common, "--resume")
    assert (code, stdout) == (2, "") and err == (f"refprune hessian: error: {out} is there but not a verified result "
                                                 f"({e.value}); run without --resume to compute it again\n")


def test_an_interrupted_run_without_a_file_says_nothing_was_kept(capsys, monkeypatch):
    real = cli._compute

    def compute(rp, args, model, params, X, y, loss, out, progress, pool, shards=None):
        if progress:  # the real run, after the estimate's
            raise KeyboardInterrupt
        return real(rp, args, model, params, X, y, loss, out, progress, pool, shards=shards)

    monkeypatch.setattr(cli, "_compute", compute)
    code, stdout, err = _run(capsys, *_SMALL)
    assert code == 130 and stdout == "" and err.splitlines()[-1] == (
        "refprune hessian: interrupted; nothing was kept (without --out); give --out FILE.npy to keep finished "
        "blocks for --resume")


def test_model_json_data_and_params_files_and_their_refusals(capsys, tmp_path):
    """--model-json: a list of layer specifications or an object with one under
    "network"; a missing key named as such.  --data and --params: what a file lacks or
    has too many of, in full."""
    import json

    import numpy as np

    layers = [{"type": "Linear", "in_features": 3, "out_features": 2}]
    for name, spec in (("list.json", layers), ("object.json", {"network": layers})):
        (tmp_path / name).write_text(json.dumps(spec))
        code, out, _ = _run(capsys, "hessian", "--model-json", str(tmp_path / name), "--input-shape", "3",
                            "--samples", "4", "--loss", "mse")
        model = cli.parse_model("Linear(3, 2)")
        rng = np.random.default_rng(0)
        X, y = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
        ev = np.linalg.eigvalsh(refprune.hessian(model, model.init(seed=0), X, y, refprune.MSELoss()))
        assert code == 0 and out == f"trace {ev.sum():.6g}, eigenvalues from {ev[0]:.6g} to {ev[-1]:.6g}\n", name
    (tmp_path / "bad.json").write_text(json.dumps({"layers": layers}))
    code, _, err = _run(capsys, "hessian", "--model-json", str(tmp_path / "bad.json"), "--input-shape", "3")
    assert code == 2 and err == (f"refprune hessian: error: --model-json {tmp_path / 'bad.json'}: cannot build the "
                                 "model: missing key 'network'\n")
    code, _, err = _run(capsys, "hessian", "--model", "Linear(3, 2)")
    assert code == 2 and err == ("refprune hessian: error: give --data FILE.npz or --input-shape (and --samples) for "
                                 "random data\n")
    np.savez(tmp_path / "empty.npz")
    code, _, err = _run(capsys, "hessian", "--model", "Linear(3, 2)", "--data", str(tmp_path / "empty.npz"))
    assert code == 2 and err == (f"refprune hessian: error: --data {tmp_path / 'empty.npz'} must hold arrays 'X' (N, "
                                 "per-sample input shape) and 'y' (N labels or N x outputs); it holds nothing\n")
    common = ("hessian", "--model", "Linear(3, 2) Tanh Linear(2, 2)", "--input-shape", "3", "--params")
    expected = "the model expects param0 (2, 3), param1 (2,), param2 (2, 2), param3 (2,)"
    for arrays, what in (
            ({"param0": np.zeros((2, 3)), "param1": np.zeros(2)}, " lacks param2, param3;"),
            ({f"param{i}": np.zeros(s) for i, s in enumerate([(2, 3), (2,), (2, 2), (2,)])} | {"w": np.zeros(1)},
             " has arrays the model does not: w;"),
            ({"param0": np.zeros((2, 3)), "b": np.zeros(1), "a": np.zeros(1)},
             " lacks param1, param2, param3; has arrays the model does not: a, b;"),
            ({f"param{i}": np.zeros(s) for i, s in enumerate([(2, 3), (2,), (2, 3), (2,)])},
             ": param2 has shape (2, 3);")):
        np.savez(tmp_path / "p.npz", **arrays)
        code, _, err = _run(capsys, *common, str(tmp_path / "p.npz"))
        assert code == 2 and err == f"refprune hessian: error: --params {tmp_path / 'p.npz'}{what} {expected}\n"


def test_an_overflow_at_the_initial_parameters_names_them(capsys, monkeypatch):
    """Without --data or --params the refusal of an overflowing forward pass names the
    initial parameters (a stand-in loss raises, as refprune's does, FloatingPointError)."""
    def overflow(*args, **kwargs):
        raise FloatingPointError("the network's output is not finite")

    monkeypatch.setattr(refprune, "loss", overflow)
    code, _, err = _run(capsys, *_SMALL)
    assert code == 2 and err == ("refprune hessian: error: the model at its initial parameters: the network's output "
                                 "is not finite\n")


def test_an_overflow_at_given_parameters_is_one_line_without_numpys_warnings(capsys, tmp_path):
    """Parameters that overflow the first layer to +-inf make the second layer's product
    inf - inf: NumPy's "overflow" and "invalid value" warnings would only repeat what the
    refusal says, so neither is shown."""
    import warnings

    import numpy as np

    arrays = dict(param0=np.full((3, 4), 1e308), param1=np.zeros(3),
                  param2=np.array([[1.0, -1.0, 0.0], [0.0, 0.0, 0.0]]), param3=np.zeros(2))
    np.savez(tmp_path / "p.npz", **arrays)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        code, _, err = _run(capsys, "hessian", "--model", "Linear(4, 3) Linear(3, 2)", "--input-shape", "4",
                            "--samples", "3", "--params", str(tmp_path / "p.npz"))
    assert code == 2 and err.startswith(f"refprune hessian: error: the model at --params {tmp_path / 'p.npz'}: the "
                                        "network's output is not finite (")
    assert err.count("\n") == 1 and [str(w.message) for w in seen] == []


def test_the_estimate_when_every_calibration_run_is_past_saturation(monkeypatch):
    """``saturates`` at or below the smallest calibration run (a layer whose chunk holds
    fewer samples than N / 16, as a conv net on 28x28 images with 4,000 samples): the time
    is the line a + (b + c s) k from there to N.  It used to stop the command with
    "Singular matrix" (the curve's third column was s times the second)."""
    now = [0.0]
    monkeypatch.setattr(cli.time, "perf_counter", lambda: now[0])
    for s in (1, 8, 10):
        cost = lambda k: 1.0 + 0.25 * k + 0.0625 * k * min(k, s)  # noqa: E731
        calls = []

        def timed(k):
            now[0] += 9.0 if not calls else cost(k)
            calls.append(k)

        assert cli._estimate(timed, 160, saturates=s) == pytest.approx(cost(160), rel=1e-9)
        assert calls == [2, 10, 20, 40]
    # saturation within the calibration (between its first and last runs): the curve
    cost = lambda k: 1.0 + 0.01 * k + 0.005 * k * min(k, 30)  # noqa: E731
    calls = []

    def timed(k):
        now[0] += 9.0 if not calls else cost(k)
        calls.append(k)

    assert cli._estimate(timed, 160, saturates=30) == pytest.approx(cost(160), rel=1e-9)
    assert calls == [2, 10, 20, 40, 80]


def test_the_estimate_uses_the_saturation_it_is_given(monkeypatch):
    """Where ``saturates`` falls decides the model: past the last calibration run (60, runs
    of 20, 40, 80 samples) the curve bends there, not at N; between the first two runs (15,
    runs of 10, 20, 40) the curve is still fitted, not a line; at one sample with a first
    run of one sample (N = 8) every run is past it, so the times are fitted by a line."""
    for s, calls_expected in ((60, [2, 10, 20, 40, 80]), (15, [2, 10, 20, 40])):
        cost = lambda k: 1.0 + 0.01 * k + 0.005 * k * min(k, s)  # noqa: E731
        est, calls = _calibrate(monkeypatch, 160, cost, saturates=s)
        assert calls == calls_expected and est == pytest.approx(cost(160), rel=1e-9)
    # times 1, 2.5 and 4 s for 1, 2 and 4 samples: the least-squares line t = 1/4 + 27/28 k
    est, calls = _calibrate(monkeypatch, 8, {1: 1.0, 2: 2.5, 4: 4.0}.__getitem__, saturates=1)
    assert calls == [2, 1, 2, 4] and est == pytest.approx(0.25 + 27 / 28 * 8, rel=1e-12)


def test_the_estimate_when_the_last_two_runs_take_equal_time(monkeypatch):
    """1.0 s on 64 samples, 2.0 s on 128 and on 256: the curve through them has c < 0
    (c = -1/12288), so the estimate falls back to the line through the last two points,
    whose slope is 0; the time is then taken as proportional to the samples from the
    last run, 2.0 x 1024 / 256."""
    times = {64: 1.0, 128: 2.0, 256: 2.0}
    est, calls = _calibrate(monkeypatch, 1024, times.__getitem__)
    assert calls == [2, 64, 128, 256] and est == 8.0


def test_the_estimate_accepts_a_fitted_coefficient_of_exactly_zero(monkeypatch):
    """A coefficient of 0 is a valid time model (no constant part, no growth): the fit is
    used, not the fallback line.  The solvers' results are stood in for, since a
    floating-point fit rarely gives exactly 0."""
    seconds = {64: 1.0, 128: 2.5, 256: 7.0, 512: 20.0}.__getitem__  # a time per sample that grows
    monkeypatch.setattr(cli.np.linalg, "solve", lambda a, b: cli.np.array([0.5, 0.0, 1e-5]))
    est, _ = _calibrate(monkeypatch, 1024, seconds)
    assert est == 0.5 + 1e-5 * 1024 * 1024
    monkeypatch.setattr(cli.np.linalg, "lstsq", lambda a, b, rcond=None: (cli.np.array([3.0, 0.0]), None, None, None))
    est, _ = _calibrate(monkeypatch, 1024, seconds, saturates=8)
    assert est == 3.0
