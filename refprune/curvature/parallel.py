"""Running exact curvature computations as independent tasks (``docs/derivations.md`` §11).

The exact matrices split two ways without any new mathematics:

* **over samples**: ``H = R sum_n H_n`` is a sum over samples, so contiguous shards of
  the batch are assembled independently, each with the whole batch's ``R``, and the
  partial results are summed in shard order;
* **over blocks of rows**: the rows of one layer's parameters (or of a range of its
  output units) against every later column are assembled by the same pass as in one
  process, restricted to that layer (:func:`refprune.curvature.exact` ``_assemble``).

This module holds what the decompositions share: the executor (``None`` runs the tasks
in this process, any ``concurrent.futures.Executor`` such as a process pool, or a
``dask.distributed.Client``), the loop that hands each finished result to the caller
in a fixed order per block, and :class:`WorkerPool`, a process pool whose workers each
use ``cores // workers`` BLAS threads and whose processes are known without private
attributes (``docs/derivations.md`` §11.1).  The record that a store keeps of the blocks
already written (so that a restarted computation does only the missing ones), and the
writer with which workers write their own blocks into it, are :mod:`.store`.
"""

import concurrent.futures as cf
from concurrent.futures.process import BrokenProcessPool
import multiprocessing as mp
import os
import sys
import threading
import time
import warnings

import numpy as np

from ..checks import check_count
from .store import StaleBlockError, is_array_store


#: environment variables that set the thread count of the BLAS and OpenMP libraries NumPy may load
BLAS_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                         "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def available_cores():
    """Cores this process may run on (its CPU affinity where the system tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def worker_threads(workers, cores=None):
    """BLAS threads per worker process: ``max(1, cores // workers)``, so that ``workers x
    threads <= cores`` (``docs/derivations.md`` §11.1); ``cores`` defaults to
    :func:`available_cores`."""
    check_count(workers, "worker_threads: workers")
    return max(1, (available_cores() if cores is None else int(cores)) // int(workers))


def limit_blas_threads(threads):
    """Limit this process's BLAS and OpenMP thread pools to ``threads``: meant for the
    initializer of a worker process.  With ``threadpoolctl`` installed the limit reaches
    the libraries already loaded (a forked worker inherits its parent's NumPy); the
    environment variables :data:`BLAS_THREAD_VARIABLES` are set as well, which only
    libraries loaded later read.  Returns ``"threadpoolctl"`` or ``"environment"``."""
    check_count(threads, "limit_blas_threads: threads")
    for var in BLAS_THREAD_VARIABLES:
        os.environ[var] = str(int(threads))
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return "environment"
    threadpool_limits(limits=int(threads))  # not used as a context: the limit stays for the process's life
    return "threadpoolctl"


def _start_worker(slots, count, threads, initializer, initargs):
    with count.get_lock():
        i = count.value
        count.value += 1
    if i < len(slots):
        slots[i] = os.getpid()
    limit_blas_threads(threads)
    if initializer is not None:
        initializer(*initargs)


class WorkerPool(cf.ProcessPoolExecutor):
    """A ``ProcessPoolExecutor`` of ``workers`` processes whose BLAS each use ``threads``
    threads (default :func:`worker_threads`: ``workers x threads <= cores``, so that the
    workers do not oversubscribe the cores), and which knows its processes
    (:meth:`worker_pids`, :meth:`stop`) through public interfaces only: each worker
    writes its process id into a shared array when it starts.  ``initializer(*initargs)``
    then runs in each worker as usual."""

    def __init__(self, workers, threads=None, initializer=None, initargs=()):
        check_count(workers, "WorkerPool: workers")
        self.threads = worker_threads(workers) if threads is None else check_count(threads, "WorkerPool: threads")
        ctx = mp.get_context()
        # a worker that dies is not replaced (the pool breaks), so twice the slots is room enough
        self.pid_slots, self.started = ctx.RawArray("q", 2 * int(workers)), ctx.Value("i", 0)
        super().__init__(int(workers), initializer=_start_worker,
                         initargs=(self.pid_slots, self.started, self.threads, initializer, tuple(initargs)))

    def worker_pids(self):
        """Process ids of the workers started so far.  Takes no lock (the array is read
        as it is), so that a signal handler may call it."""
        return [int(p) for p in self.pid_slots[:] if p]

    def processes(self):
        """The worker processes started so far and still alive."""
        pids = set(self.worker_pids())
        return [p for p in mp.active_children() if p.pid in pids]

    def stop(self, wait=True):
        """Shut down; with ``wait=False`` (after an interrupt: a task may run for minutes)
        cancel the queued tasks and end the workers at once.  A worker ended mid-write
        leaves its block unrecorded (``docs/derivations.md`` §11.1)."""
        if wait:
            self.shutdown(wait=True, cancel_futures=True)
            return
        procs = self.processes()
        _quiet_pool_threads()
        for p in procs:
            p.kill()
        self.shutdown(wait=False, cancel_futures=True)
        # the executor's own thread reaps its processes too, and a poll that loses that
        # race reports a killed process as alive once: ask again until none is, for 2 s
        deadline = time.monotonic() + 2.0
        for p in procs:
            while p.is_alive() and time.monotonic() < deadline:
                p.join(0.02)


def _quiet_pool_threads():
    """Keep the traceback of a process pool's own management thread off stderr from now
    on.  Killing the workers on purpose breaks the pool, and that thread may then raise
    while it fails the cancelled tasks; on the command line this printed about a dozen
    lines of traceback before the one line naming ``--resume``.  Exceptions of every other
    thread still reach the previous hook."""
    previous = threading.excepthook
    if getattr(previous, "refprune_quiet", False):
        return

    def hook(args):
        if type(args.thread).__module__ != "concurrent.futures.process":
            previous(args)

    hook.refprune_quiet = True
    threading.excepthook = hook


class WorkerLostError(RuntimeError):
    """A worker process died; the blocks finished before it are recorded in the store."""


class ClientTasks(cf.Executor):
    """A dask ``distributed.Client`` as a ``concurrent.futures`` executor whose futures end
    with the task's own result or exception.

    Not the client's ``get_executor()``: its futures (distributed 2026.8) replace a task's
    exception by a ``ValueError`` of their own ("not enough values to unpack"), so a
    :class:`StaleBlockError` would not reach :func:`run` as itself.  Each task is submitted
    impure (``pure=False``): a task that writes the store must run each time it is
    submitted, while a pure task's key is a hash of its arguments, so a block's chain
    started again after a :class:`StaleBlockError` could get its first run's result back
    without running.  The client belongs to the caller: ``shutdown`` (``Executor``'s own,
    which does nothing) leaves it open."""

    def __init__(self, client):
        self.client = client

    def submit(self, fn, *args, **kwargs):
        task = self.client.submit(fn, *args, pure=False, **kwargs)
        future = _TaskFuture(task)

        def done(t):  # in the client's callback thread, once the task has ended
            if t.cancelled():
                future.set_exception(cf.CancelledError(f"the cluster cancelled the task {t!r}"))
                return
            try:
                result = t.result()
            except BaseException as e:  # the task's own exception, or its result lost on the way back
                future.set_exception(e)
            else:
                future.set_result(result)

        task.add_done_callback(done)
        return future


class _TaskFuture(cf.Future):
    """The ``concurrent.futures`` side of one dask task: cancelling it cancels the task."""

    def __init__(self, task):
        super().__init__()
        self.task = task
        self.set_running_or_notify_cancel()

    def cancel(self):
        self.task.cancel()
        return False


def _is_dask_client(executor):
    return type(executor).__module__.startswith("distributed") and hasattr(executor, "submit")


def resolve_executor(executor, where):
    """``None`` (run here), a ``concurrent.futures.Executor``, or a dask
    ``distributed.Client`` (through :class:`ClientTasks`)."""
    if executor is None or isinstance(executor, cf.Executor):
        return executor
    if _is_dask_client(executor):
        return ClientTasks(executor)
    raise TypeError(f"{where}: executor must be None, a concurrent.futures.Executor or a dask.distributed.Client, "
                    f"got {type(executor).__name__}")


def wants_tasks(executor, shards, where, block_rows=None, out=None):
    """Check ``shards`` and ``block_rows``; True if the computation should run as tasks."""
    check_count(shards, f"{where}: shards")
    if block_rows is not None:
        check_count(block_rows, f"{where}: block_rows")
    return executor is not None or shards != 1 or block_rows is not None or is_array_store(out)


#: the start of distributed's warning that a task's data is large, hidden by :func:`sharer`
_LARGE_GRAPH = "Sending large graph"


def sharer(executor):
    """``share(array)``: on a dask ``Client``, the array is sent to the cluster once, as the
    data of a task that returns it (``Client.submit(_held, array, pure=False)``), and the
    tasks receive a reference to that task's result; otherwise it is the array itself,
    passed with each task.

    Why a task and not ``Client.scatter``: scattered data cannot be recomputed, and the
    cluster keeps one copy of it whatever ``broadcast=`` asked for (the active memory
    manager drops the extra replicas within seconds), so a worker killed while it held that
    copy cancelled every task still to run ("computation on lost data").  A task's result
    held by a lost worker is computed again from the task, whose data the scheduler keeps."""
    if _is_dask_client(executor):
        def share(a):
            if a is None:
                return None
            with warnings.catch_warnings():
                # the array is in the graph on purpose, once per call: that is what lets the
                # scheduler compute it again (distributed warns above 10 MB)
                warnings.filterwarnings("ignore", message=_LARGE_GRAPH, category=UserWarning)
                # pure=False: a key of its own for each call; with keys from the contents, a
                # second call with the same data could share a key that the first call's
                # release then deletes
                return executor.submit(_held, a, pure=False)

        return share
    return lambda a: a


def _held(a):
    return a


def shard_ranges(n_samples, shards, where):
    """``shards`` (checked by :func:`wants_tasks`) contiguous ``(s0, s1)`` ranges covering
    ``range(n_samples)``, sizes differing by at most one."""
    if shards > n_samples:
        raise ValueError(f"{where}: shards={shards} is more than the {n_samples} samples")
    edges = np.linspace(0, n_samples, int(shards) + 1).round()
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def _sum_in_order(parts):
    total = parts[0]
    for p in parts[1:]:
        total = total + p
    return total


#: times a block's chain of shards is started again after a :class:`StaleBlockError`
#: before the run gives up (a lost worker's task run twice needs one)
CHAIN_RESTARTS = 3


def _chain_here(parts):
    (fn, args), rest = parts[0], parts[1:]
    result = fn(*args)
    for fn, args in rest:
        result = fn(*args, result)
    return result


def chain_window(executor):
    """How many blocks a chained run keeps in flight: the executor's workers plus one, so
    that a worker that finishes finds a task waiting, while the blocks still finish about
    in order (a run interrupted leaves at most this many blocks half accumulated, to be
    computed again).  The workers are a dask ``Client``'s threads, or a
    ``concurrent.futures`` pool's ``max_workers``; ``None`` (no limit) for an executor
    that tells neither."""
    if _is_dask_client(executor):
        workers = sum(executor.nthreads().values())
    else:
        # the pools of concurrent.futures keep max_workers only in this attribute
        workers = getattr(executor, "_max_workers", None)
    return None if not isinstance(workers, int) or workers < 1 else workers + 1


def run(executor, jobs, consume, progress, name, on_lost=None, chained=False, window=None):
    """Run ``jobs`` (``[(key, [(fn, args), ...]), ...]``: the parts of each block, one per
    shard) and call ``consume(key, block)`` once every part of a block is back, with
    ``block`` the sum of the parts in their listed order whatever order they finished in,
    so the result does not depend on scheduling.

    ``chained``: the parts of a block add themselves to the store in their listed order
    (``docs/derivations.md`` §11.1).  Part ``i + 1`` is submitted only once part ``i`` is
    back, and is called as ``fn(*args, result of part i)``; ``consume`` receives the last
    part's result.  A part raising :class:`StaleBlockError` (it found the store not as its
    predecessor left it) starts its block's chain again from the first part, at most
    :data:`CHAIN_RESTARTS` times.  At most ``window`` blocks (``None``: all) are in
    flight; the next block's chain starts when one ends (:func:`chain_window`).

    A lost worker process raises :class:`WorkerLostError` naming ``name`` (the caller's
    function) with the advice ``on_lost`` (default: call ``name`` again with a new
    executor, for callers that keep nothing between calls).  An interrupt
    (``KeyboardInterrupt``) cancels the tasks not yet started and propagates; the
    caller's executor is left to the caller."""
    if on_lost is None:
        on_lost = f"nothing was kept: call {name} again with a new executor"
    start, total = time.perf_counter(), len(jobs)
    done = 0

    def report(key):
        if progress:
            el = time.perf_counter() - start
            eta = el / done * (total - done)
            print(f"{name}: block {done}/{total} ({key}) done [{el:.1f} s, about {eta:.0f} s left]", file=sys.stderr)

    if executor is None:
        for key, parts in jobs:
            consume(key, _chain_here(parts) if chained else _sum_in_order([fn(*args) for fn, args in parts]))
            done += 1
            report(key)
        return
    pending, results, parts_of, restarts = {}, {}, dict(jobs), {}

    def submit(key, i, previous=None):
        fn, args = parts_of[key][i]
        fut = executor.submit(fn, *args) if i == 0 or not chained else executor.submit(fn, *args, previous)
        pending[fut] = (key, i)

    waiting = list(jobs)[::-1]  # blocks not started, the next one last

    def start_blocks():
        while waiting and not (chained and window is not None and len(pending) >= window):
            key, parts = waiting.pop()
            results[key] = [None] * len(parts)
            for i in range(1 if chained else len(parts)):
                submit(key, i)

    try:
        start_blocks()
        while pending:
            finished, _ = cf.wait(list(pending), return_when=cf.FIRST_COMPLETED)
            for fut in [f for f in pending if f in finished]:  # in the order submitted: no set's order
                key, i = pending.pop(fut)
                try:
                    result = fut.result()
                except StaleBlockError:
                    restarts[key] = restarts.get(key, 0) + 1
                    if restarts[key] > CHAIN_RESTARTS:
                        raise
                    submit(key, 0)
                else:
                    if chained and i + 1 < len(parts_of[key]):
                        submit(key, i + 1, result)
                    else:
                        results[key][i] = result
                        if chained or all(r is not None for r in results[key]):
                            parts = results.pop(key)
                            consume(key, parts[-1] if chained else _sum_in_order(parts))
                            done += 1
                            report(key)
                            start_blocks()
    except BrokenProcessPool:
        for fut in pending:
            fut.cancel()
        raise WorkerLostError(f"{name}: a worker process died after {done} of {total} blocks; {on_lost}") from None
    except BaseException:
        for fut in pending:  # queued tasks would otherwise still run after the interrupt or error
            fut.cancel()
        raise
