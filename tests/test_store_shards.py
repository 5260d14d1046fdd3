"""Several shards of samples added up by the workers in the store (docs/derivations.md
§11.1): the bits of the driver's sum in shard order, element for element, with process
and thread pools and the stand-in executors (a dask-like client, tasks run twice as after
a lost worker, lost workers); what the driver receives; a worker killed while adding its
shard, and the restart after it; memmap and Zarr (skipped without zarr)."""

import concurrent.futures as cf
from concurrent.futures.process import BrokenProcessPool
import os
import signal
import time

import numpy as np
import pytest

import refprune as rp
from refprune.curvature import exact, parallel, store

from test_store_workers import FORK, PicklingExecutor, memmap, problem, zarr_store

RTOL = 1e-12  # as tests/test_parallel.py: regrouped sums agree to rounding


def make_store(tmp_path, kind, n, name, chunks=(32, 24)):
    # chunks that align with neither the layers (columns 0, 54, 124) nor the blocks
    if kind == "zarr":
        return zarr_store(tmp_path, n, name + ".zarr", chunks=chunks)
    return memmap(tmp_path, n, name + ".npy")


def driver_sum(tmp_path, f, args, shards, block_rows, **kw):
    """The reference: the driver sums the shards in order and writes (no executor)."""
    n = args[0].n_params
    return np.array(f(*args, out=memmap(tmp_path, n, f"ref-{shards}-{block_rows}.npy"), shards=shards,
                      block_rows=block_rows, **kw))


def refuse_rows_at_driver(monkeypatch):
    """Fail if the driver is handed a block's rows."""
    def mark(self, *a, **k):
        raise AssertionError("the driver received a block's rows")

    monkeypatch.setattr(store.BlockRecord, "mark", mark)


@pytest.mark.parametrize("kind, pool", [("memmap", "processes"), ("memmap", "threads"), ("zarr", "processes"),
                                        ("zarr", "threads")])
def test_shards_added_by_workers_give_the_bits_of_the_drivers_sum(tmp_path, monkeypatch, kind, pool):
    m, p, X, y, l = problem(N=9)
    n = m.n_params
    args = (m, p, X, y, l)
    refs = {(k, b): driver_sum(tmp_path, rp.hessian, args, k, b) for k, b in ((2, None), (3, 4))}
    with_executor = rp.hessian(*args, executor=cf.ThreadPoolExecutor(2), shards=3, block_rows=4)  # in memory
    assert np.array_equal(with_executor, refs[3, 4])
    H = rp.hessian(*args)
    refuse_rows_at_driver(monkeypatch)
    ex = cf.ProcessPoolExecutor(2) if pool == "processes" else cf.ThreadPoolExecutor(3)
    with ex:
        for (k, b), ref in refs.items():
            out = make_store(tmp_path, kind, n, f"w-{k}-{b}", chunks=(16, 12))
            got = np.asarray(rp.hessian(*args, out=out, executor=ex, shards=k, block_rows=b)[:])
            assert np.array_equal(got, ref), (k, b)
            assert np.abs(got - H).max() <= RTOL * np.abs(H).max()  # and the one-process matrix, to rounding
            assert np.array_equal(np.asarray(rp.load_matrix(out)[:]), ref)


@pytest.mark.parametrize("name", ["ggn", "residual", "fisher", "mc_fisher", "empirical_fisher"])
def test_every_matrix_written_by_workers_with_shards(tmp_path, monkeypatch, name):
    m, p, X, y, l = problem(N=8)
    if name in ("ggn", "residual"):
        f = getattr(rp, name)
    else:
        def f(*a, **k):
            mc = dict(samples=2, seed=3) if name == "mc_fisher" else {}
            return rp.fisher(*a, curvature=name, **mc, **k)
    ref = driver_sum(tmp_path, f, (m, p, X, y, l), 3, 4)
    refuse_rows_at_driver(monkeypatch)
    with cf.ThreadPoolExecutor(2) as ex:
        got = f(m, p, X, y, l, out=memmap(tmp_path, m.n_params), executor=ex, shards=3, block_rows=4)
    assert np.array_equal(np.asarray(got), ref)


def test_the_driver_receives_a_digest_per_shard_and_two_per_block(tmp_path):
    """Per block: one digest (a 64-character string) for each shard but the last, then the
    two digests of the rows and the mirror, against ``rows x (n - o) x 8`` bytes for each
    shard when the driver sums (an array in its memory)."""
    m, p, X, y, l = problem()
    n = m.n_params
    blocks = exact.row_blocks(m, 4)
    for shards in (2, 3):
        to_driver = PicklingExecutor()
        rp.hessian(m, p, X, y, l, executor=to_driver, block_rows=4, shards=shards)
        assert len(to_driver.sizes) == shards * len(blocks) and min(to_driver.sizes) > 1000
        for kind in ("memmap", "zarr"):
            out = make_store(tmp_path, kind, n, f"s{shards}")
            ex = PicklingExecutor()
            rp.hessian(m, p, X, y, l, executor=ex, block_rows=4, shards=shards, out=out)
            assert len(ex.sizes) == shards * len(blocks)
            assert sum(ex.sizes) < len(blocks) * (shards * 100 + 100), ex.sizes


class FakeClient:
    """Looks like ``distributed.Client`` to the driver: ``submit`` and ``nthreads``; it
    counts the tasks outstanding at each submission."""

    def __init__(self, threads=2):
        self.pool, self.threads = cf.ThreadPoolExecutor(threads), threads
        self.futures, self.most = [], 0

    def submit(self, fn, *args, pure=True):
        assert pure is False
        if fn is parallel._held:
            return args[0]  # a shared array: what a dask Future given to a task resolves to
        self.futures.append(self.pool.submit(fn, *args))
        self.most = max(self.most, sum(not f.done() for f in self.futures))
        return self.futures[-1]

    def nthreads(self):
        return {f"worker {i}": 1 for i in range(self.threads)}


FakeClient.__module__ = "distributed.client"


@pytest.mark.parametrize("kind", ["memmap", "zarr"])
def test_a_cluster_client_stand_in_keeps_a_window_of_blocks(tmp_path, monkeypatch, kind):
    m, p, X, y, l = problem()
    ref = driver_sum(tmp_path, rp.ggn, (m, p, X, y, l), 2, 4)
    refuse_rows_at_driver(monkeypatch)
    client = FakeClient(threads=2)
    assert parallel.chain_window(client) == 3
    got = rp.ggn(m, p, X, y, l, out=make_store(tmp_path, kind, m.n_params, "g"), executor=client, shards=2,
                 block_rows=4)
    client.pool.shutdown()
    assert np.array_equal(np.asarray(got[:]), ref)
    assert client.most <= 3  # one task per block in flight, 2 workers + 1 blocks


def test_chain_window_of_pools_and_unknown_executors():
    with cf.ThreadPoolExecutor(3) as a, parallel.WorkerPool(2, threads=1) as b:
        assert parallel.chain_window(a) == 4 and parallel.chain_window(b) == 3
    assert parallel.chain_window(PicklingExecutor()) is None


class TwiceExecutor(cf.Executor):
    """Runs chosen tasks twice, as a cluster does when the worker that ran one is lost
    before it reports (the task is run again elsewhere, on the store as the first run left
    it); ``torn``: the first run dies half-way through its write instead."""

    def __init__(self, which, torn=False):
        self.which, self.torn, self.adds, self.stale = which, torn, 0, 0

    def submit(self, fn, *args, **kwargs):
        self.adds += adding(args)
        fut = cf.Future()
        try:
            if adding(args) and self.which(self.adds):
                if self.torn:
                    with half_write():
                        try:
                            fn(*args, **kwargs)
                        except Died:
                            pass
                else:
                    fn(*args, **kwargs)
            fut.set_result(fn(*args, **kwargs))
        except store.StaleBlockError as err:
            self.stale += 1
            fut.set_exception(err)
        return fut


class Died(Exception):
    pass


class half_write:
    """While open, the first ``store.write_block`` writes half of its first rows, then dies."""

    def __enter__(self):
        self.real = store.write_block

        def write_block(out, o, end, rows, block, lock=None):
            store.write_block = self.real
            a, b = rows[0]
            store._put(out, a, o, block[: (b - a + 1) // 2], lock)
            raise Died

        store.write_block = write_block

    def __exit__(self, *exc):
        store.write_block = self.real
        return False


def adding(args):
    """A task that adds to the rows of earlier shards (the last positional argument is the
    digest they left)."""
    return len(args) == 14


@pytest.mark.parametrize("kind", ["memmap", "zarr"])
@pytest.mark.parametrize("torn", [False, True], ids=["run twice", "torn then run again"])
def test_a_task_run_again_after_a_lost_worker_restarts_its_block(tmp_path, kind, torn):
    """The second run of an adding task finds the store not as the earlier shards left it
    (already added to, or torn half-way): it writes nothing, and the driver computes the
    block again from its first shard; the result keeps the bits of the driver's sum."""
    m, p, X, y, l = problem()
    ref = driver_sum(tmp_path, rp.hessian, (m, p, X, y, l), 3, 4)
    blocks = len(exact.row_blocks(m, 4))
    # no window (the stand-in tells no worker count): every block's first shard, then every
    # block's second in order (adds 1 to blocks), then the third (the last): the second shard
    # of block 0 and the last of block 1
    targets = {1, blocks + 1}
    ex = TwiceExecutor(lambda add: add in targets, torn=torn)
    out = make_store(tmp_path, kind, m.n_params, "h")
    got = rp.hessian(m, p, X, y, l, out=out, executor=ex, shards=3, block_rows=4)
    assert ex.stale == 2  # both were detected, and both blocks restarted
    assert np.array_equal(np.asarray(got[:]), ref)
    rp.load_matrix(out)


def test_a_store_that_keeps_changing_gives_up_after_the_restarts(tmp_path):
    m, p, X, y, l = problem()
    ex = TwiceExecutor(lambda add: True)
    with pytest.raises(store.StaleBlockError, match=r"^hessian: rows 0:54 \(columns from 0\) of .*h\.npy do not hold "
                                                    "the sum of the earlier shards"):
        rp.hessian(m, p, X, y, l, out=memmap(tmp_path, m.n_params), executor=ex, shards=2)
    # the stand-in runs each task at submission: the three blocks restarted alongside each
    # failed once more before block 0 exceeded the restarts
    assert ex.stale == 3 * (parallel.CHAIN_RESTARTS + 1)


class LosingExecutor(cf.Executor):
    """Runs tasks here; from the ``lose_at``-th submission on, every worker is lost."""

    def __init__(self, lose_at):
        self.lose_at, self.count = lose_at, 0

    def submit(self, fn, *args, **kwargs):
        self.count += 1
        fut = cf.Future()
        if self.count >= self.lose_at:
            fut.set_exception(BrokenProcessPool("gone"))
        else:
            fut.set_result(fn(*args, **kwargs))
        return fut


def recorded(out, tmp_path, name):
    raw = out.attrs["refprune"] if hasattr(out, "attrs") else open(str(tmp_path / f"{name}.refprune.json")).read()
    rec = store.parse_record(raw, "", "test")
    return [k for k, d in rec["digests"].items() if d is not None]


def counting_run(monkeypatch):
    submitted = []
    real = parallel.run
    monkeypatch.setattr(parallel, "run", lambda ex, jobs, *a: (submitted.append(len(jobs)), real(ex, jobs, *a))[1])
    return submitted


@pytest.mark.parametrize("kind", ["memmap", "zarr"])
def test_lost_workers_mid_chain_then_a_restart_does_exactly_the_rest(tmp_path, monkeypatch, kind):
    m, p, X, y, l = problem()
    n = m.n_params
    keys = [exact._block_key(li, u) for li, u, _ in exact.row_blocks(m, 4)]
    ref = driver_sum(tmp_path, rp.hessian, (m, p, X, y, l), 2, 4)
    out = make_store(tmp_path, kind, n, "h")
    # no window (the stand-in tells no worker count): the first shard of every block runs,
    # then the second shards of blocks 0-3; everything after is lost
    with pytest.raises(parallel.WorkerLostError, match="call hessian again with the same out="):
        rp.hessian(m, p, X, y, l, out=out, executor=LosingExecutor(len(keys) + 5), shards=2, block_rows=4)
    done = recorded(out, tmp_path, "h.npy")
    assert done == keys[:4]  # every other block holds its first shard only, and is not recorded
    with pytest.raises(rp.IncompleteResultError, match=f"blocks missing: {keys[4]} "):
        rp.load_matrix(out)
    submitted = counting_run(monkeypatch)
    with cf.ThreadPoolExecutor(2) as ex:
        again = rp.hessian(m, p, X, y, l, out=out, executor=ex, shards=2, block_rows=4)
    assert submitted == [len(keys) - 4]
    assert np.array_equal(np.asarray(again[:]), ref)


def _die_adding(which):
    """``BlockWriter.write`` whose ``which``-th call that adds to earlier shards writes half
    of its first rows (the sum) and kills its process."""
    real, calls = store.BlockWriter.write, []

    def write(self, o, end, rows, block, final=True, after=None):
        if after is not None:
            calls.append(1)
            if len(calls) == which:
                out = self.open()
                a, b = rows[0]
                store._put(out, a, o, block[: (b - a + 1) // 2], self.lock)  # not even summed: torn garbage
                if self.file is not None:
                    out.flush()
                os._exit(1)
        return real(self, o, end, rows, block, final, after)

    return write


@pytest.mark.skipif(FORK is None, reason="needs fork (the worker inherits the patched writer)")
@pytest.mark.parametrize("kind", ["memmap", "zarr"])
@pytest.mark.parametrize("which", [5, 7], ids=["middle shard", "last shard"])
def test_a_worker_killed_while_adding_leaves_its_block_unrecorded(tmp_path, monkeypatch, kind, which):
    """A worker killed half-way through adding its shard: the block's rows are torn in the
    store, never recorded, and a restart (whose verification of the recorded blocks sees
    one of them damaged meanwhile) computes exactly those two blocks and the ones not
    done, with the bits of the driver's sum."""
    m, p, X, y, l = problem()
    n = m.n_params
    layout = exact._layout(m, 4)
    keys = list(layout)
    ref = driver_sum(tmp_path, rp.hessian, (m, p, X, y, l), 3, 4)
    out = make_store(tmp_path, kind, n, "h")
    monkeypatch.setattr(store.BlockWriter, "write", _die_adding(which))
    with cf.ProcessPoolExecutor(1, mp_context=FORK) as pool, \
            pytest.raises(parallel.WorkerLostError, match="call hessian again with the same out="):
        rp.hessian(m, p, X, y, l, out=out, executor=pool, shards=3, block_rows=4)
    monkeypatch.undo()
    done = recorded(out, tmp_path, "h.npy")
    # one worker and a window of 2 blocks (A, B, then C, D when they end) run the shards in
    # the order A0 B0 A1 B1 A2 B2 C0 D0 C1 D1 C2: adds 5 and 7 are block C's second and last
    assert done == keys[:2]
    o, end, rows = layout[keys[2]]
    torn = np.asarray(out[rows[0][0] : rows[0][1], o:])
    assert not np.array_equal(torn, ref[rows[0][0] : rows[0][1], o:])  # half-accumulated, and not recorded
    with pytest.raises(rp.IncompleteResultError, match=f"blocks missing: {keys[2]} "):
        rp.load_matrix(out)
    o, end, rows = layout[keys[0]]
    out[rows[0][0], o] = 1.0  # a recorded block damaged since: the restart's check finds it
    if kind == "memmap":
        out.flush()
    submitted = counting_run(monkeypatch)
    with cf.ProcessPoolExecutor(2) as pool:
        again = rp.hessian(m, p, X, y, l, out=out, executor=pool, shards=3, block_rows=4)
    assert submitted == [len(keys) - 1]  # block 1 kept; block 0, the torn block and the rest computed
    assert np.array_equal(np.asarray(again[:]), ref)
    assert np.array_equal(np.asarray(rp.load_matrix(out)[:]), ref)


@pytest.mark.parametrize("kind", ["memmap", "zarr"])
def test_dask_workers_add_the_shards_and_survive_a_killed_worker(dask_client, tmp_path, monkeypatch, kind):
    """On a real cluster: the workers add the shards in the store with the bits of the
    driver's sum; then a worker is killed after the first block is recorded (the nanny
    restarts it and its task runs again elsewhere, on the store as it was left), and the
    result still has those bits."""
    m, p, X, y, l = problem(N=9)
    n = m.n_params
    ref = driver_sum(tmp_path, rp.hessian, (m, p, X, y, l), 3, 4)
    refuse_rows_at_driver(monkeypatch)
    out = make_store(tmp_path, kind, n, "h")
    assert np.array_equal(np.asarray(rp.hessian(m, p, X, y, l, out=out, executor=dask_client, shards=3,
                                                 block_rows=4)[:]), ref)
    real, killed = store.BlockRecord.mark_written, []

    def mark_then_kill(self, key, digests, verify=False, lock=None):
        real(self, key, digests, verify, lock)
        if not killed:
            pid = next(iter(dask_client.run(os.getpid).values()))
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    monkeypatch.setattr(store.BlockRecord, "mark_written", mark_then_kill)
    out = make_store(tmp_path, kind, n, "k")
    got = rp.hessian(m, p, X, y, l, out=out, executor=dask_client, shards=3, block_rows=4)
    assert killed and np.array_equal(np.asarray(got[:]), ref)
    assert np.array_equal(np.asarray(rp.load_matrix(out)[:]), ref)


def _raise(error):
    raise error


def test_a_dask_task_s_own_exception_reaches_the_driver(dask_client):
    """A task's exception arrives as itself through the driver's executor (distributed's own
    ``get_executor()`` turned it into a ``ValueError`` of its unpacking, so a
    :class:`StaleBlockError` was not seen as one and a lost worker's task run twice failed
    the call); its result arrives as itself too."""
    import operator

    ex = parallel.resolve_executor(dask_client, "test")
    assert isinstance(ex, parallel.ClientTasks)
    assert ex.submit(operator.add, 2, 3).result(timeout=30) == 5
    with pytest.raises(ZeroDivisionError):
        ex.submit(operator.truediv, 1, 0).result(timeout=30)
    with pytest.raises(store.StaleBlockError, match="^the store moved$"):
        ex.submit(_raise, store.StaleBlockError("the store moved")).result(timeout=30)
    # a shared array is a task's result, which the cluster can compute again
    shared = parallel.sharer(dask_client)(np.arange(3.0))
    assert type(shared).__module__.startswith("distributed") and not shared.cancelled()
    assert np.array_equal(ex.submit(np.sum, shared).result(timeout=30), 3.0)


def test_cancelling_a_client_task_s_future_cancels_the_dask_task(dask_client):
    """:func:`run` cancels the futures still pending on an error or an interrupt: through
    :class:`ClientTasks` that must reach the cluster, else its tasks go on writing."""
    ex = parallel.resolve_executor(dask_client, "test")
    future = ex.submit(time.sleep, 2)  # busy on a worker while it is cancelled
    assert not future.cancel()  # not cancelled on this side: the cluster decides ...
    deadline = time.monotonic() + 30
    while future.task.status != "cancelled" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert future.task.status == "cancelled"  # ... and the dask task is cancelled there
    with pytest.raises(cf.CancelledError, match="the cluster cancelled the task"):
        future.result(timeout=30)
