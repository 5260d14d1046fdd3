"""The task driver's own parts (``refprune.curvature.parallel``) without worker
processes: a stand-in for a dask ``Client`` (module ``distributed``), progress lines, a
lost worker's message, shard ranges, what a restart's fingerprint covers and the
store checks."""

import concurrent.futures as cf
from concurrent.futures.process import BrokenProcessPool
import re

import numpy as np
import pytest

import refprune as rp
from refprune.curvature import exact, parallel, store

from cases import make


class FakeClient:
    """Looks like ``distributed.Client`` to the driver: ``submit`` (a task, or a shared
    array sent once as the data of a task that returns it)."""

    def __init__(self):
        self.shared = []
        self.pool = cf.ThreadPoolExecutor(2)

    def submit(self, fn, *args, **kwargs):
        # impure: a task that writes the store must run each time; a key of its own for each call
        assert kwargs == {"pure": False}
        if fn is parallel._held:
            self.shared.append(args[0].shape)
            return args[0]  # what a dask Future given to a task resolves to
        return self.pool.submit(fn, *args)


FakeClient.__module__ = "distributed.client"


class NotAClient:
    def get_executor(self):
        raise AssertionError("never called")


def test_a_cluster_client_stand_in_runs_the_tasks_and_shares_each_shard_once():
    m, p, X, y, l = make("mlp-tanh", "ce-mean", n=6)
    client = FakeClient()
    H = rp.hessian(m, p, X, y, l, executor=client, shards=2, block_rows=3)
    assert np.abs(H - rp.hessian(m, p, X, y, l)).max() <= 1e-12 * np.abs(H).max()
    # X and y of each of the 2 shards, once each; no targets outside mc_fisher
    assert client.shared == [(3,) + X.shape[1:], (3,)] * 2
    client.pool.shutdown()
    assert parallel.sharer(client)(None) is None
    assert parallel.sharer(None)(X) is X


def test_executors_that_are_not_are_refused_by_name():
    m, p, X, y, l = make("mlp-tanh", "ce-mean", n=4)
    for bad, name in ((NotAClient(), "NotAClient"), (object(), "object")):
        with pytest.raises(TypeError, match=rf"^hessian: executor must be None, a concurrent.futures.Executor or a "
                                            rf"dask.distributed.Client, got {name}$"):
            rp.hessian(m, p, X, y, l, executor=bad)
    odd = type("Client", (), {})()
    type(odd).__module__ = "distributed.client"  # no submit: not usable
    with pytest.raises(TypeError, match="got Client$"):
        rp.hessian(m, p, X, y, l, executor=odd)


def test_an_error_inside_a_task_reaches_the_caller():
    """A task's own exception propagates (the driver only turns a lost process into
    :class:`WorkerLostError`), also when no process pool was ever imported."""
    m, p, X, y, l = make("mlp-tanh", "ce-mean", n=6)
    with pytest.raises(ZeroDivisionError):
        with cf.ThreadPoolExecutor(1) as ex:
            parallel.run(ex, [("k", [(divmod, (1, 0))])], lambda key, block: None, False, "f")


class SerialExecutor(cf.Executor):
    """Runs each task at submission; ``broken`` makes every result a lost worker."""

    def __init__(self, broken=False):
        self.broken = broken

    def submit(self, fn, *args, **kwargs):
        fut = cf.Future()
        if self.broken:
            fut.set_exception(BrokenProcessPool("gone"))
        else:
            fut.set_result(fn(*args, **kwargs))
        return fut


def test_progress_lines_count_the_blocks(capsys, monkeypatch):
    """A clock that advances one second per reading: after ``i`` of ``total`` blocks in
    ``t`` seconds, about ``t / i * (total - i)`` are left."""
    import itertools

    m, p, X, y, l = make("mlp-tanh", "ce-mean", n=6)
    total = len(exact.row_blocks(m, 4))
    for executor in (None, SerialExecutor()):
        clock = itertools.count()
        monkeypatch.setattr(parallel.time, "perf_counter", lambda: float(next(clock)))
        rp.ggn(m, p, X, y, l, executor=executor, block_rows=4, progress=True)
        monkeypatch.undo()
        lines = [s for s in capsys.readouterr().err.splitlines() if ": block " in s]
        assert len(lines) == total
        for i, line in enumerate(lines, start=1):
            g = re.fullmatch(rf"ggn: block {i}/{total} \(layer \d+( units \d+-\d+)?\) done "
                             rf"\[(\d+)\.0 s, about (\d+) s left\]", line)
            assert g, line
            elapsed = int(g.group(2))
            assert elapsed >= i and int(g.group(3)) == round(elapsed / i * (total - i)), line


def test_a_lost_worker_names_the_function_and_advice_that_fits_it(tmp_path):
    """A matrix with a store: the finished blocks are in the store named, call again
    with the same out=; a matrix without one: nothing was kept; a diagonal (no out=):
    just call it again.  Each message names the function called."""
    m, p, X, y, l = make("mlp-tanh", "ce-mean", n=6)
    total = len(exact.row_blocks(m, 4))
    out = np.lib.format.open_memmap(str(tmp_path / "g.npy"), mode="w+", dtype=np.float64, shape=(m.n_params,) * 2)
    with pytest.raises(parallel.WorkerLostError, match="^" + re.escape(
            f"ggn: a worker process died after 0 of {total} blocks; the finished blocks are recorded in "
            f"{tmp_path / 'g.npy'}.refprune.json: call ggn again with the same out= and a new executor to compute "
            "only the missing ones") + "$"):
        rp.ggn(m, p, X, y, l, executor=SerialExecutor(broken=True), block_rows=4, out=out)
    with pytest.raises(parallel.WorkerLostError, match="^" + re.escape(
            f"hessian: a worker process died after 0 of {total} blocks; nothing was kept (out= is not a Zarr array "
            "or a numpy.memmap of a file, which record the finished blocks): call hessian again with a new "
            "executor") + "$"):
        rp.hessian(m, p, X, y, l, executor=SerialExecutor(broken=True), block_rows=4)
    for f, name in ((rp.hessian_diagonal, "hessian_diagonal"), (rp.ggn_diagonal, "ggn_diagonal"),
                    (rp.fisher_diagonal, "fisher_diagonal")):
        with pytest.raises(parallel.WorkerLostError) as err:
            f(m, p, X, y, l, executor=SerialExecutor(broken=True), shards=2)
        assert str(err.value) == (f"{name}: a worker process died after 0 of 1 blocks; nothing was kept: call {name} "
                                  "again with a new executor")


def test_shard_ranges():
    assert parallel.shard_ranges(5, 5, "f") == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    assert parallel.shard_ranges(7, 3, "f") == [(0, 2), (2, 5), (5, 7)]
    assert all(isinstance(a, int) and isinstance(b, int) for a, b in parallel.shard_ranges(7, 3, "f"))
    with pytest.raises(ValueError, match=r"^f: shards=6 is more than the 5 samples$"):
        parallel.shard_ranges(5, 6, "f")


def test_fingerprint_covers_values_shapes_dtypes_and_whole_arrays():
    fp = store.fingerprint
    assert fp(np.zeros((2, 3))) != fp(np.zeros((3, 2)))
    assert fp(np.zeros(4)) != fp(np.zeros(8, dtype=np.float32))
    big = np.zeros(5000)
    changed = big.copy()
    changed[2500] = 1.0  # beyond what repr shows
    assert fp(big) != fp(changed)
    assert fp("hessian", rp.MSELoss(), 3) == fp("hessian", rp.MSELoss(), 3)
    assert fp(rp.MSELoss()) != fp(rp.MSELoss("sum"))


def test_a_store_from_another_loss_is_recomputed(tmp_path, monkeypatch):
    m, p, X, y, _ = make("mlp-tanh", "mse-mean", n=6)
    out = np.lib.format.open_memmap(str(tmp_path / "h.npy"), mode="w+", dtype=np.float64, shape=(m.n_params,) * 2)
    rp.hessian(m, p, X, y, rp.MSELoss(), out=out, block_rows=4)
    submitted = []
    real = parallel.run
    monkeypatch.setattr(parallel, "run", lambda ex, jobs, *a: submitted.append(len(jobs)) or real(ex, jobs, *a))
    rp.hessian(m, p, X, y, rp.MSELoss(), out=out, block_rows=4)  # a new but equal loss: nothing to do
    with pytest.warns(RuntimeWarning, match="is for another computation"):
        H = rp.hessian(m, p, X, y, rp.MSELoss("sum"), out=out, block_rows=4)
    assert submitted == [0, len(exact.row_blocks(m, 4))]
    assert np.abs(H - rp.hessian(m, p, X, y, rp.MSELoss("sum"))).max() <= 1e-12 * np.abs(H).max()
    assert (tmp_path / "h.npy.refprune.json").exists()


def test_store_checks_name_what_was_given():
    """Shape and dtype are checked each on its own: a store wrong in one only is refused."""
    class Store:
        def __init__(self, shape, dtype):
            self.shape, self.dtype, self.attrs = shape, np.dtype(dtype), {}

        def __setitem__(self, key, value):
            raise AssertionError("never written")

    assert store.check_store(Store((3, 3), "f8"), 3, "hessian").shape == (3, 3)
    with pytest.raises(ValueError, match=r"^hessian: out must be a float64 store of shape \(3, 3\), got shape \(3, 4\) "
                                         r"and dtype float64$"):
        store.check_store(Store((3, 4), "f8"), 3, "hessian")
    with pytest.raises(ValueError, match=r"^ggn: out must be a float64 store of shape \(3, 3\), got shape \(3, 3\) and "
                                         r"dtype float32$"):
        store.check_store(Store((3, 3), "f4"), 3, "ggn")
    with pytest.raises(ValueError, match=r"got shape \(3, 3\) and dtype int64$"):
        store.check_store(Store((3, 3), "i8"), 3, "ggn")
    with pytest.raises(ValueError, match=r"got shape \(\) and dtype object$"):
        store.check_store(object(), 3, "hessian")
