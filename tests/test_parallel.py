"""Exact curvature as independent tasks (docs/derivations.md §11) against the one-process
result: the same bits for one block per layer over all samples (the same arithmetic in
the same order), agreement to rounding for finer blocks and for sample shards (the same
sums, grouped differently); restarts compute only the missing blocks."""

import concurrent.futures as cf
import json
import os
import re
import signal

import numpy as np
import pytest

import refprune as rp
from refprune.curvature import exact, parallel, store

from cases import make

# Regrouping a sum of at most 20 per-sample terms changes each entry by a few units in
# the last place of the largest term; with cancellation between terms of up to 100x
# that stays below 1e-12 of max|H| (measured: below 5e-16).
RTOL = 1e-12

MATRICES = {
    "hessian": lambda *a, **k: rp.hessian(*a, **k),
    "ggn": lambda *a, **k: rp.ggn(*a, **k),
    "residual": lambda *a, **k: rp.residual(*a, **k),
    "fisher": lambda *a, **k: rp.fisher(*a, curvature="fisher", **k),
    "mc_fisher": lambda *a, **k: rp.fisher(*a, curvature="mc_fisher", samples=3, seed=7, **k),
    "empirical_fisher": lambda *a, **k: rp.fisher(*a, curvature="empirical_fisher", **k),
}
ARCHS = ["mlp-sigmoid-softplus", "conv-tanh-avgpool", "conv-conv-softplus", "conv-relu-maxpool-stride"]


def rel(a, b):
    return np.abs(np.asarray(a) - b).max() / np.abs(b).max()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("loss", ["ce-mean", "mse-sum"])
@pytest.mark.parametrize("name", list(MATRICES))
def test_every_decomposition_against_one_process(arch, loss, name):
    m, p, X, y, l = make(arch, loss, n=9)
    fn = MATRICES[name]
    H = fn(m, p, X, y, l)
    assert np.array_equal(fn(m, p, X, y, l, out=parallel_out(H)), H)  # one block per layer, all samples
    assert rel(fn(m, p, X, y, l, block_rows=3), H) <= RTOL
    assert rel(fn(m, p, X, y, l, shards=4), H) <= RTOL
    assert rel(fn(m, p, X, y, l, block_rows=2, shards=3), H) <= RTOL


class ArrayStore(np.ndarray):
    """A NumPy array that looks like a chunked store (has ``attrs``), so that the task
    path runs in this process without Zarr."""


def parallel_out(H):
    out = np.full_like(H, np.nan).view(ArrayStore)
    out.attrs = {}
    return out


def test_process_pool_gives_the_same_bits():
    m, p, X, y, l = make("conv-tanh-avgpool", "ce-mean", n=12)
    with cf.ProcessPoolExecutor(2) as ex:
        for name in ("hessian", "ggn", "mc_fisher"):
            H = MATRICES[name](m, p, X, y, l)
            assert np.array_equal(MATRICES[name](m, p, X, y, l, executor=ex), H)
            assert rel(MATRICES[name](m, p, X, y, l, executor=ex, block_rows=4, shards=2), H) <= RTOL
        d = rp.hessian_diagonal(m, p, X, y, l)
        assert rel(rp.hessian_diagonal(m, p, X, y, l, executor=ex, shards=3), d) <= RTOL


@pytest.mark.parametrize("curvature", rp.CURVATURES)
def test_diagonals_over_shards(curvature):
    m, p, X, y, l = make("conv-conv-softplus", "ce-mean", n=8)
    kw = dict(samples=2, seed=5) if curvature == "mc_fisher" else {}
    d = rp.curvature_diagonal(m, p, X, y, l, curvature=curvature, **kw)
    assert rel(rp.curvature_diagonal(m, p, X, y, l, curvature=curvature, shards=3, **kw), d) <= RTOL
    # and the diagonal of the sharded matrix
    if curvature == "mc_fisher":
        H = rp.fisher(m, p, X, y, l, curvature="mc_fisher", samples=2, seed=5, shards=2)
    else:
        H = MATRICES[curvature](m, p, X, y, l, shards=2)
    assert rel(np.diag(H), d) <= RTOL


def counting_run(monkeypatch):
    """Record how many blocks each call submits."""
    submitted = []
    real = parallel.run

    def run(executor, jobs, *args):
        submitted.append(len(jobs))
        return real(executor, jobs, *args)

    monkeypatch.setattr(parallel, "run", run)
    return submitted


def memmap(tmp_path, n, name="h.npy"):
    return np.lib.format.open_memmap(str(tmp_path / name), mode="w+", dtype=np.float64, shape=(n, n))


def interrupt_after_two_blocks(monkeypatch, compute):
    """Run ``compute`` and stop it (KeyboardInterrupt) once two blocks are recorded;
    returns the keys of the recorded blocks."""
    real_mark, marks = store.BlockRecord.mark, []

    def mark_then_stop(self, key, block):
        real_mark(self, key, block)
        marks.append(key)
        if len(marks) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(store.BlockRecord, "mark", mark_then_stop)
    with pytest.raises(KeyboardInterrupt):
        compute()
    monkeypatch.setattr(store.BlockRecord, "mark", real_mark)
    return marks


def test_interrupted_run_restarts_with_only_the_missing_blocks(tmp_path, monkeypatch):
    m, p, X, y, l = make("mlp-sigmoid-softplus", "ce-mean", n=10)
    H = rp.hessian(m, p, X, y, l)
    out = memmap(tmp_path, m.n_params)
    submitted = counting_run(monkeypatch)
    interrupt_after_two_blocks(monkeypatch, lambda: rp.hessian(m, p, X, y, l, out=out, block_rows=4))
    out2 = np.load(str(tmp_path / "h.npy"), mmap_mode="r+")
    rp.hessian(m, p, X, y, l, out=out2, block_rows=4)
    total = len(exact.row_blocks(m, 4))
    assert submitted == [total, total - 2]
    assert rel(out2, H) <= RTOL
    # everything recorded: a third call computes nothing
    rp.hessian(m, p, X, y, l, out=out2, block_rows=4)
    assert submitted[-1] == 0


def test_a_store_overwritten_or_of_another_problem_is_recomputed(tmp_path, monkeypatch):
    m, p, X, y, l = make("mlp-tanh", "ce-mean", n=6)
    submitted = counting_run(monkeypatch)
    out = memmap(tmp_path, m.n_params)
    rp.hessian(m, p, X, y, l, out=out, block_rows=3)
    out[:] = 0.0  # the bytes recorded are gone
    rp.hessian(m, p, X, y, l, out=out, block_rows=3)
    assert submitted[0] == submitted[1] > 0
    q = [2 * a for a in p]  # another problem in the same store: said, then recomputed
    with pytest.warns(RuntimeWarning, match=r"^hessian: the record in .*h\.npy\.refprune\.json is for another "
                                            r"computation .*; every block is computed again$"):
        rp.hessian(m, q, X, y, l, out=out, block_rows=3)
    assert submitted[2] == submitted[0]
    assert rel(out, rp.hessian(m, q, X, y, l)) <= RTOL


class CrashingPool(cf.ProcessPoolExecutor):
    """One worker that runs the tasks in order and dies at the ``crash_at``-th."""

    def __init__(self, crash_at):
        super().__init__(1)
        self.submitted, self.crash_at = 0, crash_at

    def submit(self, fn, *args, **kwargs):
        self.submitted += 1
        if self.submitted == self.crash_at:
            return super().submit(os._exit, 1)
        return super().submit(fn, *args, **kwargs)


def test_worker_lost_in_a_process_pool_then_restart(tmp_path, monkeypatch):
    m, p, X, y, l = make("conv-tanh-avgpool", "mse-mean", n=10)
    H = rp.ggn(m, p, X, y, l)
    out = memmap(tmp_path, m.n_params)
    submitted = counting_run(monkeypatch)
    total = len(exact.row_blocks(m, 2))
    marks = []
    for method in ("mark", "mark_written"):  # the driver's record of a block written by itself or a worker
        real = getattr(store.BlockRecord, method)

        def recording(self, key, *args, _real=real, **kwargs):
            _real(self, key, *args, **kwargs)
            marks.append(key)

        monkeypatch.setattr(store.BlockRecord, method, recording)
    with CrashingPool(crash_at=4) as pool, \
            pytest.raises(parallel.WorkerLostError, match="call ggn again with the same out="):
        rp.ggn(m, p, X, y, l, out=out, executor=pool, block_rows=2)
    # the worker runs the tasks in order, so at most the three before the crash finished;
    # a finished task whose result was still in the pool's queue when the pool broke is
    # lost and not recorded (concurrent.futures fails every pending future at once)
    assert 1 <= len(marks) <= 3
    recorded = len(marks)
    with cf.ProcessPoolExecutor(2) as ex:
        rp.ggn(m, p, X, y, l, out=out, executor=ex, block_rows=2)
    # the restart skips exactly the blocks recorded before the crash
    assert submitted == [total, total - recorded]
    assert rel(out, H) <= RTOL


def test_wrong_stores_and_options_are_refused(tmp_path):
    m, p, X, y, l = make("mlp-tanh", "ce-mean", n=6)
    n = m.n_params
    bad = np.zeros((n, n + 1)).view(ArrayStore)
    bad.attrs = {}
    with pytest.raises(ValueError, match=rf"out must be a float64 store of shape \({n}, {n}\), got shape \({n}, {n + 1}\)"):
        rp.hessian(m, p, X, y, l, out=bad)
    bad32 = np.zeros((n, n), np.float32).view(ArrayStore)
    bad32.attrs = {}
    with pytest.raises(ValueError, match="dtype float32"):
        rp.hessian(m, p, X, y, l, out=bad32)
    with pytest.raises(ValueError, match="out must be a float64 array of shape"):
        rp.hessian(m, p, X, y, l, out=memmap(tmp_path, n - 1), shards=2)
    with pytest.raises(TypeError, match="executor must be None, a concurrent.futures.Executor"):
        rp.hessian(m, p, X, y, l, executor="processes")
    with pytest.raises(ValueError, match="shards must be a positive int"):
        rp.ggn(m, p, X, y, l, shards=0)
    with pytest.raises(ValueError, match="shards=7 is more than the 6 samples"):
        rp.ggn_diagonal(m, p, X, y, l, shards=7)
    with pytest.raises(ValueError, match="block_rows must be a positive int"):
        rp.fisher(m, p, X, y, l, block_rows=0)


def test_zarr_store_written_block_by_block(tmp_path, monkeypatch):
    zarr = pytest.importorskip("zarr")
    m, p, X, y, l = make("conv-relu-maxpool-stride", "ce-mean", n=8)
    n = m.n_params
    H = rp.hessian(m, p, X, y, l)
    z = zarr.open_array(store=str(tmp_path / "h.zarr"), mode="w", shape=(n, n), chunks=(8, 8), dtype="float64")
    assert np.array_equal(rp.hessian(m, p, X, y, l, out=z)[:], H)
    assert "refprune" in z.attrs
    # a restart on the same store computes nothing more
    submitted = counting_run(monkeypatch)
    rp.hessian(m, p, X, y, l, out=zarr.open_array(store=str(tmp_path / "h.zarr"), mode="r+"))
    assert submitted == [0]
    wrong = zarr.open_array(store=str(tmp_path / "w.zarr"), mode="w", shape=(n, n - 1), dtype="float64")
    with pytest.raises(ValueError, match="out must be a float64 store of shape"):
        rp.hessian(m, p, X, y, l, out=wrong)


@pytest.mark.parametrize("name", ["hessian", "ggn", "mc_fisher"])
def test_dask_local_cluster(dask_client, name):
    m, p, X, y, l = make("conv-conv-softplus", "ce-mean", n=10)
    H = MATRICES[name](m, p, X, y, l)
    assert np.array_equal(MATRICES[name](m, p, X, y, l, executor=dask_client), H)
    assert rel(MATRICES[name](m, p, X, y, l, executor=dask_client, block_rows=3, shards=2), H) <= RTOL


def test_dask_workers_write_a_zarr_store_themselves(dask_client, tmp_path, monkeypatch):
    """On a cluster the workers write their blocks into the Zarr store (chunks that follow
    neither layers nor blocks) and the driver records digests only (docs §11.1)."""
    zarr = pytest.importorskip("zarr")
    m, p, X, y, l = make("conv-conv-softplus", "ce-mean", n=10)
    n = m.n_params
    z = zarr.create_array(store=str(tmp_path / "h.zarr"), shape=(n, n), chunks=(7, 9), dtype="f8")
    ref = rp.hessian(m, p, X, y, l, block_rows=3)
    monkeypatch.setattr(store.BlockRecord, "mark", lambda *a: pytest.fail("the driver received a block's rows"))
    rp.hessian(m, p, X, y, l, executor=dask_client, block_rows=3, out=z)
    assert np.array_equal(z[:], ref)
    assert np.array_equal(rp.load_matrix(str(tmp_path / "h.zarr"))[:], ref)


def test_a_zarr_result_is_read_back_read_only(tmp_path):
    """The real counterpart of the stand-in in test_store_mutants.py: ``load_matrix`` opens
    a Zarr directory with ``mode="r"``, so the result it verified cannot be changed through
    it, and the store is left as it was."""
    zarr = pytest.importorskip("zarr")
    m, p, X, y, l = make("mlp-tanh", "ce-mean", n=6)
    n = m.n_params
    rp.hessian(m, p, X, y, l, out=zarr.create_array(store=str(tmp_path / "h.zarr"), shape=(n, n), chunks=(5, 5),
                                                    dtype="f8"))
    got = rp.load_matrix(str(tmp_path / "h.zarr"))
    with pytest.raises(ValueError, match="read-only"):
        got[0, 0] = 1.0
    assert np.array_equal(rp.load_matrix(str(tmp_path / "h.zarr"))[:], rp.hessian(m, p, X, y, l))


def test_dask_worker_killed_mid_run(dask_client, monkeypatch):
    m, p, X, y, l = make("conv-tanh-avgpool", "ce-mean", n=12)
    H = rp.hessian(m, p, X, y, l)
    real_mark = store.BlockRecord.mark
    killed = []

    def mark_then_kill(self, key, block):
        real_mark(self, key, block)
        if not killed:
            pid = next(iter(dask_client.run(os.getpid).values()))
            os.kill(pid, signal.SIGKILL)  # the nanny restarts it; its tasks are rescheduled
            killed.append(pid)

    monkeypatch.setattr(store.BlockRecord, "mark", mark_then_kill)
    out = rp.hessian(m, p, X, y, l, executor=dask_client, block_rows=2, shards=2)
    assert killed and rel(out, H) <= RTOL


class CountingExecutor(cf.Executor):
    """Runs each task here at once and counts them: shows which executor and how many
    shards a call really used."""

    def __init__(self):
        self.calls = 0

    def submit(self, fn, *args, **kwargs):
        self.calls += 1
        fut = cf.Future()
        fut.set_result(fn(*args, **kwargs))
        return fut


@pytest.mark.parametrize("curvature", rp.CURVATURES)
def test_executor_and_shards_reach_the_tasks(curvature):
    m, p, X, y, l = make("mlp-tanh", "ce-mean", n=6)
    ex = CountingExecutor()
    d = rp.curvature_diagonal(m, p, X, y, l, curvature=curvature, executor=ex, shards=3)
    assert ex.calls == 3 and d.shape == (m.n_params,)
    ex = CountingExecutor()
    MATRICES[curvature](m, p, X, y, l, executor=ex, shards=2, block_rows=6)
    assert ex.calls == 2 * len(exact.row_blocks(m, 6))


def test_restart_recomputes_a_block_whose_mirror_was_overwritten(tmp_path, monkeypatch):
    """The reported case: a Zarr store written whole, then ``z[16:, :16] = 0`` (the mirror
    of layer 0, rows 0:16, below the diagonal).  A restart must recompute that block,
    and only it, and give the in-memory Hessian's bits again."""
    zarr = pytest.importorskip("zarr")
    m, p, X, y, l = make("mlp-tanh", "ce-mean", n=6)
    H = rp.hessian(m, p, X, y, l)
    z = zarr.open_array(store=str(tmp_path / "h.zarr"), mode="w", shape=(31, 31), chunks=(8, 8), dtype="f8")
    rp.hessian(m, p, X, y, l, out=z)
    z[16:, :16] = 0
    submitted = counting_run(monkeypatch)
    again = rp.hessian(m, p, X, y, l, out=z)[:]
    assert submitted == [1]
    assert np.array_equal(again, H)
    assert np.array_equal(again[16:, :16], again[:16, 16:].T)
    assert z.attrs["refprune"]["complete"] is True
    assert np.array_equal(rp.load_matrix(str(tmp_path / "h.zarr"))[:], H)


def test_an_interrupted_store_is_refused_until_finished(tmp_path, monkeypatch):
    """After an interruption the record is not complete and names the blocks still
    missing; load_matrix refuses it by their names; the restart completes it."""
    m, p, X, y, l = make("mlp-sigmoid-softplus", "mse-sum", n=7)
    H = rp.hessian(m, p, X, y, l)
    out = memmap(tmp_path, m.n_params)
    marks = interrupt_after_two_blocks(monkeypatch, lambda: rp.hessian(m, p, X, y, l, out=out, block_rows=3))
    keys = [f"layer {l_}" + ("" if u is None else f" units {u[0]}-{u[1]}") for l_, u, _ in exact.row_blocks(m, 3)]
    rec = json.loads((tmp_path / "h.npy.refprune.json").read_text())
    assert rec["complete"] is False and sorted(rec["blocks"]) == sorted(keys)
    assert [k for k in keys if rec["blocks"][k]["digest"] is not None] == marks
    missing = [k for k in keys if k not in marks]
    with pytest.raises(rp.IncompleteResultError, match="blocks missing: " + re.escape(missing[0] + " (rows ")):
        rp.load_matrix(str(tmp_path / "h.npy"))
    rp.hessian(m, p, X, y, l, out=np.load(str(tmp_path / "h.npy"), mmap_mode="r+"), block_rows=3)
    assert rel(rp.load_matrix(str(tmp_path / "h.npy")), H) <= RTOL


def test_a_memmap_written_in_one_pass_is_recorded_like_tasks(tmp_path, monkeypatch):
    """Without tasks a memmap gets the record of one block per layer (the same bits), so
    a restart as tasks finds nothing to do, and a later one-pass call over a store of
    another problem replaces the record."""
    m, p, X, y, l = make("conv-tanh-avgpool", "ce-mean", n=5)
    H = rp.hessian(m, p, X, y, l)
    out = memmap(tmp_path, m.n_params)
    rp.hessian(m, p, X, y, l, out=out)
    assert np.array_equal(rp.load_matrix(str(tmp_path / "h.npy")), H)
    submitted = counting_run(monkeypatch)
    ex = CountingExecutor()
    rp.hessian(m, p, X, y, l, out=out, executor=ex)  # as tasks: one block per layer, one shard
    assert submitted == [0] and ex.calls == 0
    q = [0.5 * a for a in p]
    with pytest.warns(RuntimeWarning, match="is for another computation"):
        rp.hessian(m, q, X, y, l, out=out)
    assert np.array_equal(rp.load_matrix(str(tmp_path / "h.npy")), rp.hessian(m, q, X, y, l))
