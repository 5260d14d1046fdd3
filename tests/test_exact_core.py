"""Edges of the exact assembly and its task driver, from a mutation run: messages that
name the function and what was passed, the memory limit on every path, silence unless
progress is asked for, every part of a problem's fingerprint, caller-supplied Monte Carlo
targets through tasks, the block plan counted by hand, and the mirror image past the
128 x 128 tiles in rows and in columns."""

import os

import numpy as np
import pytest

import refprune as rp
from refprune.curvature import exact, parallel

from cases import make


def problem(n=6):
    return make("mlp-tanh", "ce-mean", n=n)


@pytest.mark.parametrize("fn", [rp.hessian, rp.ggn, rp.residual])
def test_out_of_the_wrong_kind_is_described(fn):
    m, p, X, y, l = problem()
    n = m.n_params
    name = fn.__name__
    with pytest.raises(ValueError, match=rf"^{name}: out must be a float64 array of shape \({n}, {n}\), got ndarray "
                                         rf"\(3, 3\) float32$"):
        fn(m, p, X, y, l, out=np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match=rf"^{name}: out must be .*, got list  $"):
        fn(m, p, X, y, l, out=[1.0, 2.0])
    # the same on the task path
    with pytest.raises(ValueError, match=rf"^{name}: out must be a float64 array"):
        fn(m, p, X, y, l, out=np.zeros((3, 3)), shards=2)


@pytest.mark.parametrize("tasks", [{}, {"shards": 2}, {"block_rows": 4}])
@pytest.mark.parametrize("name", ["hessian", "ggn", "residual", "fisher"])
def test_memory_limit_and_silence_on_every_path(capsys, name, tasks):
    m, p, X, y, l = problem()
    fn = getattr(rp, name)
    with pytest.raises(rp.CurvatureTooLargeError, match=rf"^{name}: the {m.n_params} x {m.n_params} float64"):
        fn(m, p, X, y, l, max_bytes=8, **tasks)
    fn(m, p, X, y, l, **tasks)
    assert capsys.readouterr().err == ""  # no progress unless asked
    fn(m, p, X, y, l, progress=True, **tasks)
    err = capsys.readouterr().err
    assert ("block" in err) == bool(tasks) and ("rows of layer" in err) == (not tasks)


def test_option_errors_name_the_function():
    m, p, X, y, l = problem()
    with pytest.raises(ValueError, match="^ggn: shards=9 is more than the 6 samples"):
        rp.ggn(m, p, X, y, l, shards=9)
    with pytest.raises(TypeError, match="^residual: executor must be"):
        rp.residual(m, p, X, y, l, executor=object())

    class Store(np.ndarray):
        pass

    bad = np.zeros((2, 2)).view(Store)
    bad.attrs = {}
    with pytest.raises(ValueError, match="^hessian: out must be a float64 store"):
        rp.hessian(m, p, X, y, l, out=bad)


def test_exact_matrix_defaults_names_and_options():
    m, p, X, y, l = problem()
    args = (m, p, X, y, l)
    assert np.array_equal(exact.exact_matrix(*args), rp.hessian(*args))
    assert np.array_equal(exact.exact_matrix(*args, curvature="mc_fisher"), rp.fisher(*args, curvature="mc_fisher"))
    with pytest.raises(ValueError, match="^exact_matrix: curvature must be one of"):
        exact.exact_matrix(*args, curvature="bogus")
    for curvature in ("hessian", "ggn", "empirical_fisher"):
        with pytest.raises(rp.CurvatureTooLargeError):
            exact.exact_matrix(*args, curvature=curvature, max_bytes=8)


def test_caller_targets_through_tasks():
    m, p, X, y, l = problem()
    t = np.random.default_rng(1).integers(0, 3, (2, len(X)))
    F = rp.fisher(m, p, X, y, l, curvature="mc_fisher", targets=t)
    assert np.abs(rp.fisher(m, p, X, y, l, curvature="mc_fisher", targets=t, shards=3) - F).max() <= 1e-12 * \
        np.abs(F).max()
    assert not np.allclose(F, rp.fisher(m, p, X, y, l, curvature="mc_fisher", samples=2))


def test_block_plan_counted_by_hand():
    m = make("mlp-tanh", "ce-mean")[0]  # Linear(3, 4): 4 rows per unit; Linear(4, 3): 5 per unit
    # block_rows 10 -> 2 units a block: units (0,2),(2,4) and (0,2),(2,3)
    assert [(l, u) for l, u, _ in exact.row_blocks(m, 10)] == [(0, (0, 2)), (0, (2, 4)), (2, (0, 2)), (2, (2, 3))]
    # block_rows 1 -> one unit a block: 4 + 3 blocks; rows of unit 1 of the second layer
    blocks = exact.row_blocks(m, 1)
    assert len(blocks) == 7
    assert blocks[5][2] == [(16 + 4, 16 + 8), (16 + 12 + 1, 16 + 12 + 2)]


FINGERPRINT_CHANGES = {
    "matrix": lambda kw: dict(kw, fn=rp.ggn),
    "params": lambda kw: dict(kw, p=[2 * a for a in kw["p"]]),
    "X": lambda kw: dict(kw, X=kw["X"] + 0.5),
    "y": lambda kw: dict(kw, y=(kw["y"] + 1) % 3),
    "model": lambda kw: dict(kw, m=rp.Sequential(rp.Linear(3, 4), rp.Sigmoid(), rp.Linear(4, 3))),
    "block_rows": lambda kw: dict(kw, block_rows=8),
    "shards": lambda kw: dict(kw, shards=3),
    "loss": lambda kw: dict(kw, loss=rp.CrossEntropyLoss("sum")),  # the same targets, another scale
}


@pytest.mark.parametrize("change", list(FINGERPRINT_CHANGES))
def test_every_part_of_the_problem_is_in_the_fingerprint(tmp_path, monkeypatch, change):
    m, p, X, y, l = problem()
    submitted = []
    real = parallel.run
    monkeypatch.setattr(parallel, "run", lambda ex, jobs, *a: (submitted.append(len(jobs)), real(ex, jobs, *a)))
    out = np.lib.format.open_memmap(str(tmp_path / "h.npy"), mode="w+", dtype=np.float64, shape=(m.n_params,) * 2)
    base = dict(fn=rp.hessian, m=m, p=p, X=X, y=y, block_rows=4, shards=2)

    def call(kw):
        return kw["fn"](kw["m"], kw["p"], kw["X"], kw["y"], kw.get("loss", l), out=out, block_rows=kw["block_rows"],
                        shards=kw["shards"])

    call(base)
    call(base)
    assert submitted[1] == 0  # the same problem: nothing to do
    other = FINGERPRINT_CHANGES[change](base)
    call(other)
    assert submitted[2] == len(exact.row_blocks(other["m"], other["block_rows"]))
    one = other["fn"](other["m"], other["p"], other["X"], other["y"], other.get("loss", l))
    assert np.abs(out - one).max() <= 1e-12 * np.abs(one).max()


def test_mc_targets_are_in_the_fingerprint(tmp_path, monkeypatch):
    m, p, X, y, l = problem()
    out = np.lib.format.open_memmap(str(tmp_path / "f.npy"), mode="w+", dtype=np.float64, shape=(m.n_params,) * 2)
    rp.fisher(m, p, X, y, l, curvature="mc_fisher", seed=1, out=out, shards=2)
    rp.fisher(m, p, X, y, l, curvature="mc_fisher", seed=2, out=out, shards=2)
    F = rp.fisher(m, p, X, y, l, curvature="mc_fisher", seed=2)
    assert np.abs(out - F).max() <= 1e-12 * np.abs(F).max()


@pytest.mark.parametrize("d_in, hidden, c", [(2, 30, 20), (30, 10, 3)])
def test_mirror_image_past_the_tiles(d_in, hidden, c):
    # the mirror is copied in 128 x 128 tiles: (2, 30, 20) has a second layer of 620
    # parameters (five row tiles), (30, 10, 3) a first layer of 310 (three column tiles)
    rng = np.random.default_rng(0)
    m = rp.Sequential(rp.Linear(d_in, hidden), rp.Tanh(), rp.Linear(hidden, c))
    p = m.init(0)
    X, y = rng.standard_normal((4, d_in)), rng.integers(0, c, 4)
    H = rp.ggn(m, p, X, y, rp.CrossEntropyLoss())
    k = (d_in + 1) * hidden
    assert np.array_equal(H[k:, :k], H[:k, k:].T)
    rows = exact.rows_task(m, p, X, y, rp.CrossEntropyLoss(), 1 / 4, "ggn", None, 0, None)
    assert np.abs(H[:k] - rows).max() <= 1e-12 * np.abs(H).max()


def test_available_memory_reads_meminfo_then_sysconf(monkeypatch):
    import io

    real_open = open
    fake = "MemTotal:       4000 kB\nMemAvailable:   1000 kB\n"
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: io.StringIO(fake) if path == "/proc/meminfo"
                        else real_open(path, *a, **k))
    assert exact.available_memory() == 1000 * 1024

    def no_file(*a, **k):
        raise OSError("no /proc")

    monkeypatch.setattr("builtins.open", no_file)
    monkeypatch.setattr(os, "sysconf", lambda name: {"SC_AVPHYS_PAGES": 3, "SC_PAGE_SIZE": 4096}[name])
    assert exact.available_memory() == 3 * 4096
    monkeypatch.setattr(os, "sysconf", lambda name: (_ for _ in ()).throw(ValueError(name)))
    assert exact.available_memory() == 2**63


def test_the_memory_limit_keeps_room_for_the_temporaries(monkeypatch):
    # the limit is the memory available less 4 chunks of CHUNK_FLOATS float64 temporaries;
    # the refusal is memory.check_fits's (function, what, GiB needed, GiB available)
    from refprune import derivatives, memory

    m, p, X, y, l = problem()
    n = m.n_params
    need = n ** 2 * 8
    room = 8 * 4 * derivatives.CHUNK_FLOATS
    monkeypatch.setattr(memory, "available_memory", lambda: need + room)
    assert rp.hessian(m, p, X, y, l).shape == (n,) * 2  # exactly enough
    monkeypatch.setattr(memory, "available_memory", lambda: need + room - 1)
    with pytest.raises(rp.CurvatureTooLargeError, match=rf"^hessian: the {n} x {n} float64 matrix and 256 MiB of "
                       rf"temporaries would need 0.25 GiB \({need + room:,} bytes\) but only 0.25 GiB "
                       rf"\({need + room - 1:,} bytes\) are available; pass out=numpy.memmap"):
        rp.hessian(m, p, X, y, l)
    # a 16,385-parameter layer: its Hessian needs 2.0002 GiB, refused before any work
    big = rp.Sequential(rp.Linear(16384, 1))
    args = (big, [np.zeros((1, 16384)), np.zeros(1)], np.zeros((1, 16384)), np.zeros((1, 1)), rp.MSELoss())
    monkeypatch.setattr(memory, "available_memory", lambda: 2**31 + room)
    with pytest.raises(rp.CurvatureTooLargeError, match=r"would need 2.25 GiB \(2,416,181,256 bytes\) but only "
                       r"2.25 GiB \(2,415,919,104 bytes\) are available"):
        rp.hessian(*args)
    with pytest.raises(rp.CurvatureTooLargeError, match=r"^hessian: the 16385 x 16385 float64 matrix would need "
                       r"2.00 GiB but only 1.50 GiB may be used \(max_bytes\)"):
        rp.hessian(*args, max_bytes=3 * 2**29)  # max_bytes wins over the memory available
    monkeypatch.setattr(memory, "available_memory", lambda: room - 2**30)
    with pytest.raises(rp.CurvatureTooLargeError, match="but only 0.00 GiB are available"):
        rp.hessian(m, p, X, y, l)


def test_progress_lines_name_the_matrix(capsys):
    m, p, X, y, l = problem()
    rp.ggn(m, p, X, y, l, progress=True)
    rp.ggn(m, p, X, y, l, progress=True, shards=2)
    err = capsys.readouterr().err.splitlines()
    assert err and all(line.startswith("ggn: ") for line in err)
    rp.block_diagonal(m, p, X, y, l)
    assert capsys.readouterr().err == ""
    with pytest.raises(ValueError, match="^ggn: shards must be a positive int"):
        rp.ggn(m, p, X, y, l, shards=0)


def test_progress_counts_layers_and_times_from_the_start(capsys, monkeypatch):
    import types

    m, p, X, y, l = problem()
    ticks = iter([100.0, 101.5, 104.0])
    monkeypatch.setattr(exact, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks)))
    rp.hessian(m, p, X, y, l, progress=True)
    assert capsys.readouterr().err.splitlines() == [
        "hessian: rows of layer 0 (Linear(3, 4, bias=True)) done [1/2, 1.5 s]",
        "hessian: rows of layer 2 (Linear(4, 3, bias=True)) done [2/2, 4.0 s]",
    ]


def test_task_progress_names_each_block_of_rows(capsys):
    m, p, X, y, l = problem()
    rp.hessian(m, p, X, y, l, progress=True, block_rows=8)  # 2 units of 4 rows, then 1 of 5
    keys = [line.split("(")[1].split(")")[0] for line in capsys.readouterr().err.splitlines()]
    assert keys == ["layer 0 units 0-2", "layer 0 units 2-4", "layer 2 units 0-1", "layer 2 units 1-2",
                    "layer 2 units 2-3"]
    rp.hessian(m, p, X, y, l, progress=True, shards=2)
    keys = [line.split("(")[1].split(")")[0] for line in capsys.readouterr().err.splitlines()]
    assert keys == ["layer 0", "layer 2"]
