"""Workers that write their own blocks into the store (docs/derivations.md §11.1): several
processes or threads, chunks that align with neither layers nor blocks, the result
compared element for element with the one-process matrix and with the driver-written
one; the per-chunk locks (their cut of the writes, their exclusion between processes
and threads); a worker killed mid-write; what the driver receives; the BLAS threads of
the workers."""

import concurrent.futures as cf
import multiprocessing as mp
import os
import pickle
import threading
import time

import numpy as np
import pytest

import refprune as rp
from refprune.curvature import exact, parallel, store

RTOL = 1e-12  # as tests/test_parallel.py: regrouped sums agree to rounding
FORK = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None


def problem(N=7):
    # 148 parameters, layers at columns 0, 54, 124; biases after each layer's weights, so a
    # unit's rows are interleaved (5 weight rows, then its bias far below)
    model = rp.Sequential(rp.Linear(5, 9), rp.Tanh(), rp.Linear(9, 7), rp.Tanh(), rp.Linear(7, 3))
    rng = np.random.default_rng(11)
    return model, model.init(seed=4), rng.standard_normal((N, 5)), rng.integers(0, 3, N), rp.CrossEntropyLoss()


def zarr_store(tmp_path, n, name, chunks=(16, 12), shards=None):
    zarr = pytest.importorskip("zarr")
    kw = {} if shards is None else dict(shards=shards)
    return zarr.create_array(store=str(tmp_path / name), shape=(n, n), chunks=chunks, dtype="f8", **kw)


def memmap(tmp_path, n, name="h.npy"):
    return np.lib.format.open_memmap(str(tmp_path / name), mode="w+", dtype=np.float64, shape=(n, n))


FINEST = {"zarr chunks 16x12": "processes", "memmap": "threads"}


def no_driver_writes(monkeypatch):
    """Fail if the driver is handed a block's rows; count the blocks recorded from digests."""
    seen = []
    real = store.BlockRecord.mark_written

    def mark(self, *a, **k):
        raise AssertionError("the driver received a block's rows")

    def mark_written(self, key, digests, verify=False, lock=None):
        assert len(pickle.dumps(digests)) < 200
        seen.append(key)
        return real(self, key, digests, verify, lock)

    monkeypatch.setattr(store.BlockRecord, "mark", mark)
    monkeypatch.setattr(store.BlockRecord, "mark_written", mark_written)
    return seen


@pytest.mark.parametrize("kind, pool", [("zarr chunks 16x12", "processes"), ("zarr chunks 16x12", "threads"),
                                        ("zarr shards 32x24 of 16x12", "processes"), ("zarr chunks 148x3", "processes"),
                                        ("memmap", "processes"), ("memmap", "threads")])
def test_workers_write_unaligned_chunks_element_for_element(tmp_path, monkeypatch, kind, pool):
    m, p, X, y, l = problem()
    n = m.n_params
    H = rp.hessian(m, p, X, y, l)
    driver = rp.hessian(m, p, X, y, l, out=memmap(tmp_path, n, "driver.npy"), block_rows=4)  # executor None
    seen = no_driver_writes(monkeypatch)
    make = {"zarr chunks 16x12": lambda name: zarr_store(tmp_path, n, name, chunks=(16, 12)),
            "zarr shards 32x24 of 16x12": lambda name: zarr_store(tmp_path, n, name, chunks=(16, 12), shards=(32, 24)),
            "zarr chunks 148x3": lambda name: zarr_store(tmp_path, n, name, chunks=(n, 3)),
            "memmap": lambda name: memmap(tmp_path, n, name + ".npy")}[kind]
    ex = cf.ProcessPoolExecutor(3) if pool == "processes" else cf.ThreadPoolExecutor(3)
    with ex:
        whole = rp.hessian(m, p, X, y, l, out=make("whole"), executor=ex)
        # units of 2 or 4 rows: the rows of one block, and the mirrors of others, share chunks
        fine = rp.hessian(m, p, X, y, l, out=make("fine"), executor=ex, block_rows=4)
        # single rows (biases far from their weights), once: the slowest case
        finest = rp.ggn(m, p, X, y, l, out=make("finest"), executor=ex, block_rows=1) if FINEST.get(kind) == pool \
            else rp.ggn(m, p, X, y, l, out=make("finest"), executor=ex)
    assert np.array_equal(np.asarray(whole[:]), H)  # one block per layer: the same bits as one process
    assert np.array_equal(np.asarray(fine[:]), driver)  # the same blocks written by the driver: the same bits
    assert np.abs(np.asarray(fine[:]) - H).max() <= RTOL * np.abs(H).max()
    G = rp.ggn(m, p, X, y, l)
    assert np.abs(np.asarray(finest[:]) - G).max() <= RTOL * np.abs(G).max()
    assert len(seen) == 3 + len(exact.row_blocks(m, 4)) + len(exact.row_blocks(m, 1 if FINEST.get(kind) == pool else None))
    for out in (whole, fine, finest):
        rp.load_matrix(out)  # complete, every block's rows and mirror as recorded


class FakeChunked:
    """An array that records each assignment and the lock held during it."""

    def __init__(self, n, lock):
        self.shape, self.a, self.lock, self.writes, self.reads = (n, n), np.full((n, n), np.nan), lock, [], []

    def __setitem__(self, idx, values):
        self.writes.append((idx, set(self.lock.held)))
        self.a[idx] = values

    def __getitem__(self, idx):
        self.reads.append((idx, set(self.lock.held)))
        return self.a[idx]


class FakeLock:
    def __init__(self, unit, sharded=True):
        self.unit, self.sharded, self.held = unit, sharded, set()

    def __call__(self, i, j):
        import contextlib

        @contextlib.contextmanager
        def held():
            assert all(k < (i, j) for k in self.held), "locks taken out of order"
            self.held.add((i, j))
            yield
            self.held.remove((i, j))

        return held()


def chunks_met(rs, cs, unit):
    cr, cc = unit
    return {(i, j) for i in range(rs.start // cr, -(-rs.stop // cr)) for j in range(cs.start // cc, -(-cs.stop // cc))}


@pytest.mark.parametrize("unit", [(7, 5), (1, 50), (50, 1), (3, 64), (50, 50)])
def test_writes_are_cut_at_chunk_boundaries_each_under_its_chunk_lock(unit):
    n, o, end, rows = 50, 3, 13, [(3, 11), (12, 13)]
    block = np.random.default_rng(0).standard_normal((9, n - o))
    lock = FakeLock(unit)
    out = FakeChunked(n, lock)
    store.write_block(out, o, end, rows, block, lock)
    plain = np.full((n, n), np.nan)
    store.write_block(plain, o, end, rows, block)  # no lock: the two plain assignments of §11
    assert np.array_equal(out.a, plain, equal_nan=True)
    written = np.zeros((n, n), int)
    for (rs, cs), held in out.writes:
        met = chunks_met(rs, cs, unit)
        assert len({i for i, _ in met}) == 1 and held == met  # one band of chunk rows, all its locks held
        written[rs, cs] += 1
    # exactly the block's rows and its mirror, each entry once
    want = np.zeros((n, n), int)
    for a, b in rows:
        want[a:b, o:] += 1
        want[end:, a:b] += 1
    assert np.array_equal(written, want)
    # read back the same way (a sharded array), and at once otherwise
    assert store.block_digests(out, o, end, rows, lock) == (store.digest(block), store.digest(block[:, end - o :]))
    read = np.zeros((n, n), int)
    for (rs, cs), held in out.reads:
        assert held == chunks_met(rs, cs, unit)
        read[rs, cs] += 1
    assert np.array_equal(read, want)
    out.reads.clear()
    lock.sharded = False
    store.block_digests(out, o, end, rows, lock)
    assert all(held == set() for _, held in out.reads) and len(out.reads) == 2 * len(rows)


def _try_lock(path, index, q):
    import fcntl

    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, index)
        q.put("got it")
    except OSError:
        q.put("busy")


@pytest.mark.skipif(FORK is None, reason="needs fork")
def test_chunk_locks_exclude_other_processes_and_threads(tmp_path):
    pytest.importorskip("fcntl")
    path = str(tmp_path / "a.refprune.lock")
    locks = store._ChunkLocks(path, (4, 4), 3, sharded=False)
    q = FORK.SimpleQueue()
    with locks(1, 2):  # chunk 1 * 3 + 2 = 5
        for index, expect in ((5, "busy"), (4, "got it"), (6, "got it")):
            child = FORK.Process(target=_try_lock, args=(path, index, q))
            child.start()
            child.join(10)
            assert q.get() == expect, index
        got, held = [], locks(1, 2)  # kept: a context manager collected would release its lock
        t = threading.Thread(target=lambda: (held.__enter__(), got.append(time.monotonic())))
        t.start()
        time.sleep(0.3)
        assert not got  # another thread of this process waits too
        released = time.monotonic()
    t.join(10)
    assert got and got[0] >= released
    child = FORK.Process(target=_try_lock, args=(path, 5, q))  # the thread holds it now
    child.start()
    child.join(10)
    assert q.get() == "busy"
    held.__exit__(None, None, None)


def _die_during_third_block(real):
    calls = []

    def write_block(out, o, end, rows, block, lock=None):
        calls.append(1)
        if len(calls) == 3:
            store._put(out, rows[0][0], o, block[: rows[0][1] - rows[0][0]], lock)  # some rows, no mirror
            os._exit(1)
        return real(out, o, end, rows, block, lock)

    return write_block


@pytest.mark.skipif(FORK is None, reason="needs fork (the worker inherits the patched writer)")
@pytest.mark.parametrize("kind", ["zarr", "memmap"])
def test_a_worker_killed_mid_write_leaves_its_block_unrecorded(tmp_path, monkeypatch, kind):
    m, p, X, y, l = problem()
    n = m.n_params
    keys = [exact._block_key(li, u) for li, u, _ in exact.row_blocks(m, 4)]
    ref = rp.hessian(m, p, X, y, l, out=memmap(tmp_path, n, "driver.npy"), block_rows=4)
    out = zarr_store(tmp_path, n, "h.zarr") if kind == "zarr" else memmap(tmp_path, n)
    monkeypatch.setattr(store, "write_block", _die_during_third_block(store.write_block))
    with cf.ProcessPoolExecutor(1, mp_context=FORK) as pool, \
            pytest.raises(parallel.WorkerLostError, match="call hessian again with the same out="):
        rp.hessian(m, p, X, y, l, out=out, executor=pool, block_rows=4)
    monkeypatch.undo()
    with pytest.raises(rp.IncompleteResultError, match=f"blocks missing: {keys[2]} "):
        rp.load_matrix(out)
    rec = out.attrs["refprune"] if kind == "zarr" else \
        store.parse_record(open(str(tmp_path / "h.npy.refprune.json")).read(), "", "test")
    blocks = rec["blocks"] if kind == "zarr" else {k: d for k, d in rec["digests"].items()}
    recorded = [k for k in keys if (blocks[k]["digest"] if kind == "zarr" else blocks[k]) is not None]
    assert recorded == keys[:2]
    submitted = []
    real_run = parallel.run
    monkeypatch.setattr(parallel, "run", lambda ex, jobs, *a: (submitted.append(len(jobs)), real_run(ex, jobs, *a)))
    with cf.ProcessPoolExecutor(2) as pool:
        again = rp.hessian(m, p, X, y, l, out=out, executor=pool, block_rows=4)
    assert submitted == [len(keys) - 2]  # the two recorded blocks are kept, the half-written one is redone
    assert np.array_equal(np.asarray(again[:]), ref)
    assert np.array_equal(np.asarray(rp.load_matrix(out)[:]), ref)


class PicklingExecutor(cf.Executor):
    """Runs each task here, pickling what it returns (what would travel to the driver)."""

    def __init__(self):
        self.sizes = []

    def submit(self, fn, *args, **kwargs):
        result = fn(*args, **kwargs)
        self.sizes.append(len(pickle.dumps(result)))
        fut = cf.Future()
        fut.set_result(pickle.loads(pickle.dumps(result)))
        return fut


def test_the_driver_receives_digests_instead_of_rows(tmp_path):
    m, p, X, y, l = problem()
    n = m.n_params
    offsets = m.param_offsets()
    blocks = exact.row_blocks(m, 4)
    rows_bytes = [sum(b - a for a, b in rows) * (n - int(offsets[li])) * 8 for li, _, rows in blocks]
    to_driver = PicklingExecutor()  # a plain array: the rows travel
    rp.hessian(m, p, X, y, l, executor=to_driver, block_rows=4)
    assert all(0 <= s - r < 400 for s, r in zip(to_driver.sizes, rows_bytes)), (to_driver.sizes, rows_bytes)
    for out in (memmap(tmp_path, n), zarr_store(tmp_path, n, "h.zarr")):
        digests = PicklingExecutor()
        H = rp.hessian(m, p, X, y, l, executor=digests, block_rows=4, out=out)
        assert len(digests.sizes) == len(blocks) and max(digests.sizes) < 200
        assert np.abs(np.asarray(H[:]) - rp.hessian(m, p, X, y, l)).max() <= RTOL * np.abs(H[:]).max()
    # several shards add up in the store, in shard order: each returns a digest or two
    # (tests/test_store_shards.py); summed by the driver only when it must write
    shards = PicklingExecutor()
    rp.hessian(m, p, X, y, l, executor=shards, block_rows=4, shards=2, out=memmap(tmp_path, n, "s.npy"))
    assert len(shards.sizes) == 2 * len(blocks) and max(shards.sizes) < 200
    shards = PicklingExecutor()
    rp.hessian(m, p, X, y, l, executor=shards, block_rows=4, shards=2)
    assert len(shards.sizes) == 2 * len(blocks) and min(shards.sizes) > 1000


def test_a_store_the_driver_does_not_see_is_caught_at_the_first_block(tmp_path, monkeypatch):
    """Workers writing where the driver does not read (another machine's disk): the first
    block's read-back fails, naming the block and the store."""
    m, p, X, y, l = problem()
    out = memmap(tmp_path, m.n_params)
    elsewhere = memmap(tmp_path, m.n_params, "elsewhere.npy")
    monkeypatch.setattr(store.BlockWriter, "open", lambda self: elsewhere)
    with pytest.raises(ValueError, match=r"hessian: the block layer 0 \(rows 0:54\) that a worker wrote is not in "
                                         r"the store as the driver reads it"):
        rp.hessian(m, p, X, y, l, out=out, executor=cf.ThreadPoolExecutor(1))


def test_worker_threads_rule():
    assert parallel.worker_threads(2, cores=2) == 1
    assert parallel.worker_threads(3, cores=8) == 2
    assert parallel.worker_threads(5, cores=2) == 1  # at least one, even oversubscribed
    assert parallel.worker_threads(1, cores=6) == 6
    with pytest.raises(ValueError, match="worker_threads: workers must be a positive int"):
        parallel.worker_threads(0)


def _blas_threads():
    from threadpoolctl import threadpool_info

    return os.getpid(), sorted({d["num_threads"] for d in threadpool_info()})


def test_worker_pool_pins_blas_threads_and_knows_its_processes():
    pytest.importorskip("threadpoolctl")
    with parallel.WorkerPool(2, threads=1) as pool:
        seen = dict(pool.map(lambda_free_blas, range(8)))
        assert all(t == [1] for t in seen.values()), seen
        procs = pool.processes()
        assert {p.pid for p in procs} >= set(seen) and len(procs) == 2
        pool.stop(wait=False)
    assert not any(p.is_alive() for p in procs)


def lambda_free_blas(_):
    time.sleep(0.05)  # both workers get tasks
    return _blas_threads()


def test_a_forced_stop_keeps_the_pools_own_thread_quiet(monkeypatch):
    """After ``stop(wait=False)`` an exception of the pool's management thread (a class of
    ``concurrent.futures.process``) is not printed; one of any other thread still is."""
    import threading
    import types

    seen = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(args.thread))
    with parallel.WorkerPool(1, threads=1) as pool:
        pool.submit(time.sleep, 0.01).result()
        pool.stop(wait=False)
    manager = type("_ExecutorManagerThread", (), {"__module__": "concurrent.futures.process"})()
    other = threading.Thread(target=None)
    for thread in (manager, other):
        threading.excepthook(types.SimpleNamespace(thread=thread, exc_type=RuntimeError, exc_value=None,
                                                   exc_traceback=None))
    assert seen == [other]
    hook = threading.excepthook
    with parallel.WorkerPool(1, threads=1) as pool:  # a second stop does not wrap the hook again
        pool.stop(wait=False)
    assert threading.excepthook is hook
