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
in a fixed order per block.  The record that a store keeps of the blocks already written
(so that a restarted computation does only the missing ones) is :mod:`.store`.
"""

import concurrent.futures as cf
from concurrent.futures.process import BrokenProcessPool
import sys
import time

import numpy as np

from ..checks import check_count
from .store import is_array_store


class WorkerLostError(RuntimeError):
    """A worker process died; the blocks finished before it are recorded in the store."""


def resolve_executor(executor, where):
    """``None`` (run here), a ``concurrent.futures.Executor``, or a dask
    ``distributed.Client`` (through its ``concurrent.futures`` interface)."""
    if executor is None or isinstance(executor, cf.Executor):
        return executor
    if type(executor).__module__.startswith("distributed") and hasattr(executor, "get_executor"):
        return executor.get_executor()
    raise TypeError(f"{where}: executor must be None, a concurrent.futures.Executor or a dask.distributed.Client, "
                    f"got {type(executor).__name__}")


def wants_tasks(executor, shards, where, block_rows=None, out=None):
    """Check ``shards`` and ``block_rows``; True if the computation should run as tasks."""
    check_count(shards, f"{where}: shards")
    if block_rows is not None:
        check_count(block_rows, f"{where}: block_rows")
    return executor is not None or shards != 1 or block_rows is not None or is_array_store(out)


def sharer(executor):
    """``share(array)``: on a dask ``Client``, the array is sent to every worker once and
    tasks receive a reference to it (``Client.scatter(..., broadcast=True)``: a copy on
    each worker, so that losing one loses no data); otherwise it is the array itself,
    passed with each task."""
    if type(executor).__module__.startswith("distributed") and hasattr(executor, "scatter"):
        return lambda a: None if a is None else executor.scatter(a, broadcast=True)
    return lambda a: a


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


def run(executor, jobs, consume, progress, name, on_lost=None):
    """Run ``jobs`` (``[(key, [(fn, args), ...]), ...]``: the parts of each block, one per
    shard) and call ``consume(key, block)`` once every part of a block is back, with
    ``block`` the sum of the parts in their listed order whatever order they finished in,
    so the result does not depend on scheduling.

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
            consume(key, _sum_in_order([fn(*args) for fn, args in parts]))
            done += 1
            report(key)
        return
    pending, results = {}, {}
    for key, parts in jobs:
        results[key] = [None] * len(parts)
        for i, (fn, args) in enumerate(parts):
            pending[executor.submit(fn, *args)] = (key, i)
    try:
        for fut in cf.as_completed(list(pending)):
            key, i = pending.pop(fut)
            results[key][i] = fut.result()
            if all(r is not None for r in results[key]):
                consume(key, _sum_in_order(results.pop(key)))
                done += 1
                report(key)
    except BrokenProcessPool:
        for fut in pending:
            fut.cancel()
        raise WorkerLostError(f"{name}: a worker process died after {done} of {total} blocks; {on_lost}") from None
    except KeyboardInterrupt:
        for fut in pending:  # queued tasks would otherwise still run after the interrupt
            fut.cancel()
        raise
