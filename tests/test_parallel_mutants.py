"""``refprune.curvature.parallel``'s process-pool parts without any process: the core
count's fall-back, the BLAS thread limit (``threadpoolctl`` replaced by a stand-in
module, or made absent), a worker's start-up routine called here as the pool would call
it in each worker, :class:`WorkerPool`'s construction with the process pool's own
constructor replaced, and :meth:`WorkerPool.stop` against stand-in processes and a
stand-in clock (docs/derivations.md §11.1), and :class:`ClientTasks` on stand-in tasks
of a cluster client.  The tests that start real workers are in
``tests/test_store_workers.py``; these run under mutmut too."""

import concurrent.futures as cf
import inspect
import multiprocessing as mp
import os
import sys
import threading
import types
import warnings

import pytest

from refprune.curvature import parallel, store


# ---- cores and BLAS threads ----------------------------------------------------------


def test_available_cores_is_the_affinity_else_the_cpu_count_else_one(monkeypatch):
    if hasattr(os, "sched_getaffinity"):
        assert parallel.available_cores() == len(os.sched_getaffinity(0))

    def no_affinity(pid):
        raise OSError("not supported here")

    monkeypatch.setattr(os, "sched_getaffinity", no_affinity, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert parallel.available_cores() == 3
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # "undetermined"
    assert parallel.available_cores() == 1
    monkeypatch.delattr(os, "sched_getaffinity")  # a system without affinity at all
    monkeypatch.setattr(os, "cpu_count", lambda: 5)
    assert parallel.available_cores() == 5


def test_worker_threads_default_to_the_available_cores(monkeypatch):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    assert parallel.worker_threads(1) == cores
    monkeypatch.setattr(parallel, "available_cores", lambda: 8)
    assert parallel.worker_threads(3) == 2 and parallel.worker_threads(9) == 1


@pytest.fixture
def blas_environment(monkeypatch):
    """The BLAS variables as they are now, restored after the test."""
    for var in parallel.BLAS_THREAD_VARIABLES:
        monkeypatch.setenv(var, "untouched")
    return monkeypatch


def test_blas_limit_through_threadpoolctl(blas_environment):
    calls = []
    fake = types.ModuleType("threadpoolctl")
    fake.threadpool_limits = lambda limits=None, user_api=None: calls.append((limits, user_api))
    blas_environment.setitem(sys.modules, "threadpoolctl", fake)
    assert parallel.limit_blas_threads(3) == "threadpoolctl"
    assert calls == [(3, None)]  # every library, kept for the process's life
    assert {v: os.environ[v] for v in parallel.BLAS_THREAD_VARIABLES} == dict.fromkeys(
        ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
         "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"), "3")


def test_blas_limit_without_threadpoolctl_sets_the_environment_only(blas_environment):
    blas_environment.setitem(sys.modules, "threadpoolctl", None)  # import raises ImportError
    assert parallel.limit_blas_threads(2) == "environment"
    assert all(os.environ[v] == "2" for v in parallel.BLAS_THREAD_VARIABLES)


# ---- a worker's start-up ---------------------------------------------------------------


def test_each_worker_records_its_process_id_in_the_next_slot(monkeypatch):
    """The routine every worker runs first: its process id in the next free slot (none
    once the slots are used up, without failing), then the thread limit, then the
    caller's initializer with its arguments."""
    limits, inits = [], []
    monkeypatch.setattr(parallel, "limit_blas_threads", limits.append)
    slots, count = mp.RawArray("q", 2), mp.Value("i", 0)
    pid = os.getpid()
    parallel._start_worker(slots, count, 3, None, ())
    assert list(slots) == [pid, 0] and count.value == 1 and limits == [3]
    parallel._start_worker(slots, count, 3, lambda *a: inits.append(a), ("x", 1))
    assert list(slots) == [pid, pid] and count.value == 2 and inits == [("x", 1)]
    parallel._start_worker(slots, count, 3, lambda *a: inits.append(a), ())
    assert list(slots) == [pid, pid] and count.value == 3 and inits == [("x", 1), ()] and limits == [3, 3, 3]


@pytest.fixture
def no_processes(monkeypatch):
    """Replace the process pool's constructor: what it was given is recorded and no
    process (nor the pool's thread) is ever started."""
    given = {}

    def init(self, max_workers=None, mp_context=None, initializer=None, initargs=(), **kw):
        given.update(max_workers=max_workers, mp_context=mp_context, initializer=initializer, initargs=initargs,
                     **kw)

    monkeypatch.setattr(cf.ProcessPoolExecutor, "__init__", init)
    monkeypatch.setattr(parallel, "limit_blas_threads", lambda threads: given.setdefault("limits", []).append(threads))
    return given


def test_worker_pool_hands_its_start_up_to_the_executor_it_extends(no_processes, monkeypatch):
    # (not named after the process pool: setup.cfg's mutmut selection leaves such names out)
    monkeypatch.setattr(parallel, "available_cores", lambda: 7)
    inits = []
    pool = parallel.WorkerPool(3, initializer=lambda *a: inits.append(a), initargs=["a", 2])
    assert pool.threads == 2  # 7 cores // 3 workers
    assert no_processes["max_workers"] == 3 and type(no_processes["max_workers"]) is int
    assert no_processes["initializer"] is parallel._start_worker and no_processes.get("mp_context") is None
    assert pool.worker_pids() == []
    for _ in range(3):  # what each of the 3 workers runs when it starts
        no_processes["initializer"](*no_processes["initargs"])
    assert pool.worker_pids() == [os.getpid()] * 3
    assert no_processes["limits"] == [2, 2, 2] and inits == [("a", 2)] * 3
    assert parallel.WorkerPool(2, threads=5).threads == 5


# ---- stop ------------------------------------------------------------------------------


class Clock:
    """``time.monotonic`` that moves only when a stand-in process is waited for, by
    ``step`` seconds a wait (a loaded machine: more than asked; binary fractions, so
    that the readings are exact)."""

    def __init__(self, step=0.25):
        self.now, self.step = 100.0, step

    def __call__(self):
        return self.now


class Process:
    """A worker: ``lives`` polls of ``is_alive`` report it alive after its kill (``None``:
    it never dies); ``join(t)`` lets the clock's step pass."""

    def __init__(self, clock, lives=0):
        self.clock, self.lives, self.killed, self.joins = clock, lives, 0, []

    def kill(self):
        self.killed += 1

    def is_alive(self):
        if not self.killed:
            return True
        if self.lives is None:
            return True
        self.lives -= 1
        return self.lives >= 0

    def join(self, timeout=None):
        if timeout is None:
            raise AssertionError("join without a timeout would wait for as long as the process lives")
        if len(self.joins) > 10_000:
            raise AssertionError("still polling")
        self.joins.append(timeout)
        self.clock.now += self.clock.step


def _stub_pool(no_processes, monkeypatch, procs):
    calls = []
    real = inspect.signature(cf.ProcessPoolExecutor.shutdown)

    def shutdown(self, *a, **k):
        bound = real.bind(self, *a, **k)
        bound.apply_defaults()
        calls.append((bool(bound.arguments["wait"]), bool(bound.arguments["cancel_futures"])))

    monkeypatch.setattr(cf.ProcessPoolExecutor, "shutdown", shutdown)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)  # stop(wait=False) installs its own
    pool = parallel.WorkerPool(2, threads=1)
    pool.processes = lambda: list(procs)
    return pool, calls


def test_stop_waits_for_the_running_tasks_and_cancels_the_queued_ones(no_processes, monkeypatch):
    """``stop()`` and ``stop(wait=True)``: the pool's own shutdown that waits, with the
    queued tasks cancelled; no process is killed."""
    clock = Clock()
    procs = [Process(clock), Process(clock)]
    pool, calls = _stub_pool(no_processes, monkeypatch, procs)
    pool.stop()
    pool.stop(wait=True)
    assert calls == [(True, True), (True, True)]
    assert [p.killed for p in procs] == [0, 0]


def test_a_forced_stop_kills_then_polls_each_process_for_2_s_at_most(no_processes, monkeypatch):
    """``stop(wait=False)``: every worker killed, the shutdown that does not wait (queued
    tasks cancelled), then each process polled in short waits until it is seen dead,
    for 2 s in all: a process seen dead is not waited for, one reported alive a few
    times more is polled until it is not, one that never dies gives up after 2 s."""
    clock = Clock()
    monkeypatch.setattr(parallel.time, "monotonic", clock)
    dead, late, stuck = Process(clock), Process(clock, lives=3), Process(clock, lives=None)
    pool, calls = _stub_pool(no_processes, monkeypatch, [dead, late, stuck])
    pool.stop(wait=False)
    assert calls == [(False, True)]
    assert (dead.killed, late.killed, stuck.killed) == (1, 1, 1)
    assert dead.joins == [] and len(late.joins) == 3
    assert all(0 < t <= 0.05 for t in late.joins + stuck.joins)  # a poll is short: the process is dead by now
    # polled while less than 2 s have passed since the stop began (at 100 s), not after
    assert clock.now == 102.0 and len(stuck.joins) == 8 - 3


def test_a_forced_stop_with_every_process_dead_at_once_does_not_wait(no_processes, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(parallel.time, "monotonic", clock)
    procs = [Process(clock), Process(clock)]
    pool, calls = _stub_pool(no_processes, monkeypatch, procs)
    pool.stop(wait=False)
    assert calls == [(False, True)] and clock.now == 100.0 and all(p.joins == [] for p in procs)


# ---- a forked child's chunk locks (refprune.curvature.store) ---------------------------


def test_a_forked_child_starts_with_no_lock_state(tmp_path, monkeypatch):
    """What ``os.register_at_fork`` runs in a child, called here: the parent's
    descriptors and thread locks are forgotten, so the next lock opens its own
    descriptor and makes a new thread lock."""
    monkeypatch.setattr(store._ChunkLocks, "_fds", {})
    monkeypatch.setattr(store._ChunkLocks, "_threads", {})
    monkeypatch.setattr(store._ChunkLocks, "_guard", None)
    path = str(tmp_path / "locks")
    locks = store._ChunkLocks(path, (2, 2), 3, sharded=False)
    opened = []
    try:
        with locks(1, 2):
            pass
        before = (dict(store._ChunkLocks._fds), dict(store._ChunkLocks._threads), store._ChunkLocks._guard)
        opened.append(before[0][path])
        store._forget_locks_after_fork()
        assert (store._ChunkLocks._fds, store._ChunkLocks._threads, store._ChunkLocks._guard) == ({}, {}, None)
        with locks(1, 2):
            pass
        opened.append(store._ChunkLocks._fds[path])
        assert opened[1] != opened[0]
        assert store._ChunkLocks._threads[(path, 5)] is not before[1][(path, 5)]
        assert store._ChunkLocks._guard is not before[2]
    finally:
        for fd in opened:
            os.close(fd)


# ---- progress lines ---------------------------------------------------------------------


def test_progress_counts_the_time_since_the_start(monkeypatch, capsys):
    """A clock far from zero that moves one second per reading: after block ``i`` of 2,
    ``i`` seconds have passed and about ``i / i * (2 - i)`` are left."""
    import itertools

    clock = itertools.count(1000)
    monkeypatch.setattr(parallel.time, "perf_counter", lambda: float(next(clock)))
    got = []
    parallel.run(None, [("a", [(int, (1,))]), ("b", [(int, (2,)), (int, (3,))])],
                 lambda key, block: got.append((key, block)), True, "f")
    assert got == [("a", 1), ("b", 5)]
    assert capsys.readouterr().err.splitlines() == ["f: block 1/2 (a) done [1.0 s, about 1 s left]",
                                                     "f: block 2/2 (b) done [2.0 s, about 0 s left]"]


# ---- a cluster client's tasks as concurrent futures -------------------------------------

class _Client:
    """A cluster client's ``submit`` as :class:`ClientTasks` uses it: the call is recorded
    and the task the test set up is returned."""

    def __init__(self, task):
        self.task, self.calls = task, []

    def submit(self, fn, *args, **kwargs):
        self.calls.append((fn, args, kwargs))
        return self.task


class _LostResult:
    """A task that ended without an exception whose result cannot be brought back."""

    def __init__(self, error):
        self.error = error

    def cancelled(self):
        return False

    def exception(self):
        return None

    def result(self):
        raise self.error

    def add_done_callback(self, fn):
        fn(self)


def test_client_tasks_futures_end_as_their_tasks():
    """Each call reaches the client impure with all its arguments; the future is running
    at once and ends with the task's result, the task's own exception, a
    ``CancelledError`` naming a task the cluster cancelled, or the error of a result lost
    on its way back.  Cancelling the future cancels the task (and reports that the future
    itself is not cancelled: the task decides); shutdown leaves the client open."""
    def f(*args, **kwargs):
        raise AssertionError("run by the cluster, never here")

    task = cf.Future()
    client = _Client(task)
    tasks = parallel.ClientTasks(client)
    future = tasks.submit(f, 1, 2, block="b")
    assert client.calls == [(f, (1, 2), {"pure": False, "block": "b"})]
    assert future.running() and not future.done()
    task.set_result(7)
    assert future.result(timeout=0) == 7
    tasks.shutdown()
    assert tasks.client is client

    error = ValueError("inside the task")
    task = cf.Future()
    future = parallel.ClientTasks(_Client(task)).submit(f)
    task.set_exception(error)
    assert future.exception(timeout=0) is error

    task = cf.Future()
    future = parallel.ClientTasks(_Client(task)).submit(f)
    assert future.cancel() is False and task.cancelled()
    cancelled = future.exception(timeout=0)
    assert type(cancelled) is cf.CancelledError and str(cancelled) == f"the cluster cancelled the task {task!r}"

    lost = OSError("the result could not be unpickled")
    future = parallel.ClientTasks(_Client(_LostResult(lost))).submit(f)
    assert future.exception(timeout=0) is lost


def test_sharing_through_a_cluster_client_hides_only_its_large_graph_warning():
    """``sharer``: on a cluster client each array is submitted once, impure, as the data of
    a task that returns it (``None`` is not sent); distributed's "Sending large graph"
    warning, expected there, is hidden, and any other warning of the call still shows."""
    class Client:
        def __init__(self):
            self.calls = []

        def submit(self, fn, *args, **kwargs):
            self.calls.append((fn, args, kwargs))
            warnings.warn("Sending large graph of size 80.00 MiB.", UserWarning)
            warnings.warn("another warning of the client", UserWarning)
            return fn(*args)

    Client.__module__ = "distributed.client"
    client, a = Client(), object()
    share = parallel.sharer(client)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert share(a) is a and share(None) is None
    assert client.calls == [(parallel._held, (a,), {"pure": False})]
    assert [str(w.message) for w in seen] == ["another warning of the client"]
    assert parallel.sharer(None)(a) is a


def test_a_chain_run_here_hands_each_shards_result_to_the_next():
    """``_chain_here`` (a chained run without an executor): the first part is called with
    its own arguments, each next one with its arguments and the previous result."""
    def first(a):
        return ("first", a)

    def then(a, previous):
        return ("then", a, previous)

    assert parallel._chain_here([(first, (1,))]) == ("first", 1)
    assert parallel._chain_here([(first, (1,)), (then, (2,)), (then, (3,))]) == \
        ("then", 3, ("then", 2, ("first", 1)))


def test_chain_window_is_the_workers_plus_one():
    """A cluster client's threads summed over its workers, or a pool's ``max_workers``,
    plus one; ``None`` for an executor that tells neither or tells no worker."""
    class Client:
        def nthreads(self):
            return {"tcp://a": 2, "tcp://b": 1}

        def submit(self, *args, **kwargs):
            raise AssertionError("not called")

    Client.__module__ = "distributed.client"
    assert parallel.chain_window(Client()) == 4

    def pool(workers):
        ex = cf.Executor()
        ex._max_workers = workers
        return ex

    assert [parallel.chain_window(pool(w)) for w in (1, 2, 5)] == [2, 3, 6]
    assert [parallel.chain_window(pool(w)) for w in (0, -1, 2.0, None)] == [None] * 4
    assert parallel.chain_window(cf.Executor()) is None


# ---- run: chains, restarts, the window ---------------------------------------------------

class _Recording(cf.Executor):
    """Runs each task at submission and records ``(fn's name, args)`` of every call."""

    def __init__(self):
        self.calls = []

    def submit(self, fn, *args):
        self.calls.append((fn.__name__, args))
        fut = cf.Future()
        try:
            fut.set_result(fn(*args))
        except BaseException as e:
            fut.set_exception(e)
        return fut


def _part(tag):
    return tag


def _next(tag, previous):
    return previous + [tag]


def _chains(blocks, parts):
    """Jobs of ``blocks`` blocks of ``parts`` shards each: the first part returns ``[tag]``
    (as a list), each next one appends its tag to what it is handed."""
    return [(b, [(lambda t: [t], (f"{b}{i}",)) if i == 0 else (_next, (f"{b}{i}",)) for i in range(parts)])
            for b in blocks]


def test_a_chained_run_hands_each_part_its_predecessor_and_keeps_the_window():
    """``run(..., chained=True)``: part ``i + 1`` is called with part ``i``'s result and
    ``consume`` gets the last one, with or without an executor; with ``window=1`` a block's
    chain ends before the next block's starts, with ``window=2`` two are in flight."""
    for executor in (None, _Recording()):
        got = []
        parallel.run(executor, _chains("AB", 3), lambda k, v: got.append((k, v)), False, "f", chained=True)
        assert got == [("A", ["A0", "A1", "A2"]), ("B", ["B0", "B1", "B2"])]
    ex = _Recording()
    parallel.run(ex, _chains("AB", 2), lambda k, v: None, False, "f", chained=True, window=1)
    assert [args[0] for _, args in ex.calls] == ["A0", "A1", "B0", "B1"]
    ex = _Recording()
    parallel.run(ex, _chains("ABC", 2), lambda k, v: None, False, "f", chained=True, window=2)
    # A and B start; each second part follows its first; C starts once A is consumed
    assert [args[0] for _, args in ex.calls] == ["A0", "B0", "A1", "B1", "C0", "C1"]


def test_a_stale_part_starts_its_chain_again_at_most_chain_restarts_times():
    """A part raising ``StaleBlockError`` restarts its block from the first part; the
    restarts are counted per block, and the ``CHAIN_RESTARTS + 1``-th is raised."""
    assert parallel.CHAIN_RESTARTS == 3
    for stale in (0, 1, 3, 4):
        left = {"A": stale, "B": 1}

        def flaky(key, previous):
            if left[key]:
                left[key] -= 1
                raise store.StaleBlockError(f"{key} found the store changed")
            return previous + ["end"]

        jobs = [(k, [(lambda t: [t], (k,)), (flaky, (k,))]) for k in "AB"]
        ex, got = _Recording(), []
        if stale > 3:
            with pytest.raises(store.StaleBlockError, match="^A found the store changed$"):
                parallel.run(ex, jobs, lambda k, v: got.append((k, v)), False, "f", chained=True, window=1)
            assert [a for _, a in ex.calls] == [("A",), ("A", ["A"])] * 4
            continue
        parallel.run(ex, jobs, lambda k, v: got.append((k, v)), False, "f", chained=True, window=1)
        assert got == [("A", ["A", "end"]), ("B", ["B", "end"])]
        assert [a for _, a in ex.calls] == [("A",), ("A", ["A"])] * (stale + 1) + [("B",), ("B", ["B"])] * 2


def test_a_block_finished_first_is_consumed_while_another_still_runs():
    """``run`` takes each part as soon as it is back (``FIRST_COMPLETED``): block B's
    consumption lets block A's task finish; waiting for every task first would keep A
    waiting until its 5 s safety timeout."""
    released = threading.Event()

    def slow():
        return "released" if released.wait(timeout=5) else "waited in vain"

    got = {}

    def consume(key, value):
        got[key] = value
        released.set()

    with cf.ThreadPoolExecutor(2) as ex:
        parallel.run(ex, [("A", [(slow, ())]), ("B", [(_part, ("b",))])], consume, False, "f")
    assert got == {"A": "released", "B": "b"}
