"""Rehearsal of a large exact Hessian written by worker processes straight into a Zarr
store (docs/derivations.md §11.1), with what each component moves and holds.

The problem: an MLP 64-h-h-10 (tanh), softmax cross-entropy, ``--samples`` Gaussian inputs
(default 32), ``h`` the width whose parameter count is closest to ``--n``.  The Hessian is
computed by ``--workers`` processes (:class:`refprune.curvature.parallel.WorkerPool`,
``cores // workers`` BLAS threads each) in blocks of about ``--block-rows`` rows, each
worker writing its rows and their mirror into an uncompressed Zarr array of square
``--chunk`` chunks at ``--out`` (deleted at the end unless ``--keep``); with ``--shards``
the samples are split into shards whose rows each block's workers add up in the store.

Measured: wall time (the run, then the check), bytes between the driver and the workers
(pickled task arguments and results, counted by the driver), bytes the workers read and
write (``/proc/<pid>/io`` of each worker, so chunk read-modify-writes are included), the
bytes a driver-written run would have received (each block's rows, ``rows x (n - o) x 8``),
each worker's peak resident memory (``VmHWM``), and the driver's.  The check: three
random rows of the stored matrix against Hessian-vector products (an independent route,
``docs/derivations.md`` §5), and the mirror against the rows on three random blocks.

    python benchmarks/rehearsal_store.py --n 5000 --out h5k.zarr [--json result.json]
"""

import argparse
import json
import os
import pickle
import shutil
import sys
import threading
import time

import numpy as np

import refprune as rp
from refprune.curvature import exact, parallel, store


def width_for(n):
    """The width ``h`` of 64-h-h-10 whose ``h^2 + 76 h + 10`` parameters are closest to ``n``."""
    h = int((-76 + np.sqrt(76**2 + 4 * (n - 10))) / 2)
    return min((h, h + 1), key=lambda w: abs(w * w + 76 * w + 10 - n))


def problem(h, N, seed=0):
    rng = np.random.default_rng(seed)
    model = rp.Sequential(rp.Linear(64, h), rp.Tanh(), rp.Linear(h, h), rp.Tanh(), rp.Linear(h, 10))
    return model, model.init(seed), rng.normal(size=(N, 64)), rng.integers(0, 10, N), rp.CrossEntropyLoss()


def proc_numbers(pid):
    """``(rchar, wchar, read_bytes, write_bytes, VmHWM bytes)`` of a process, from /proc."""
    io = {}
    with open(f"/proc/{pid}/io") as fh:
        for line in fh:
            k, v = line.split(":")
            io[k] = int(v)
    hwm = 0
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    return io["rchar"], io["wchar"], io["read_bytes"], io["write_bytes"], hwm


_REAL_ROWS_TASK = exact.rows_task
_REAL_WRITE = store.BlockWriter.write
_SPLIT = {"compute_s": 0.0, "write_s": 0.0, "blocks": 0}


def timed_rows_task(*args):
    """``exact.rows_task`` with the worker's seconds split between the assembly (today's
    kernel) and writing, reading back and hashing the block (kept in the worker; a task
    that returns its rows to the driver has no write)."""
    t0 = time.perf_counter()
    w0 = _SPLIT["write_s"]
    result = _REAL_ROWS_TASK(*args)
    _SPLIT["compute_s"] += time.perf_counter() - t0 - (_SPLIT["write_s"] - w0)
    _SPLIT["blocks"] += 1
    return result


def timed_write(self, *args, **kwargs):
    t0 = time.perf_counter()
    try:
        return _REAL_WRITE(self, *args, **kwargs)
    finally:
        _SPLIT["write_s"] += time.perf_counter() - t0


def _split(_):
    time.sleep(0.2)  # every worker gets one of these
    return os.getpid(), dict(_SPLIT)


class CountingPool(parallel.WorkerPool):
    """Counts the pickled bytes of every task's arguments and result (what crosses the
    pipe between the driver and the workers), and samples the workers' /proc numbers
    (the last sample before they stop is kept)."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.sent = self.received = self.tasks = self.finished = 0
        self.last = {}
        self.lock = threading.Lock()

    def submit(self, fn, *args, **kwargs):
        self.sent += len(pickle.dumps((fn, args, kwargs)))
        self.tasks += 1
        fut = super().submit(fn, *args, **kwargs)
        fut.add_done_callback(self._count)
        return fut

    def _count(self, fut):
        with self.lock:
            if fut.exception() is None:
                self.received += len(pickle.dumps(fut.result()))
            self.finished += 1
        self.sample()

    def sample(self):
        for p in self.processes():
            try:
                self.last[p.pid] = proc_numbers(p.pid)
            except OSError:
                pass


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000, help="parameters wanted (default 50,000)")
    ap.add_argument("--out", required=True, help="the Zarr store to write (a directory; must not exist), or a "
                                                 "file ending in .npy for a numpy.memmap")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shards", type=int, default=1, help="shards of samples (each block's shards add up in the store)")
    ap.add_argument("--block-rows", type=int, default=None, help="default: about n / 25, at most 2,000")
    ap.add_argument("--chunk", type=int, default=128, help="side of the square chunks (default 128, the fastest of 64, 128 and 256 measured at n = 14,950)")
    ap.add_argument("--keep", action="store_true", help="keep the store (default: delete it at the end)")
    ap.add_argument("--json", help="also write the numbers to this file")
    args = ap.parse_args(argv)
    if os.path.exists(args.out):
        ap.error(f"{args.out} exists; give a new path")
    h = width_for(args.n)
    model, params, X, y, loss = problem(h, args.samples)
    n = model.n_params
    block_rows = args.block_rows or max(1, min(2000, n // 25))
    blocks = exact.row_blocks(model, block_rows)
    need = n * n * 8
    free = shutil.disk_usage(os.path.dirname(os.path.abspath(args.out))).free
    if need > 0.95 * free:
        sys.exit(f"the {n} x {n} store needs {need / 2**30:.1f} GiB, the disk has {free / 2**30:.1f} GiB free")
    print(f"MLP 64-{h}-{h}-10: n = {n}, N = {args.samples}, {len(blocks)} blocks of about {block_rows} rows, "
          f"chunks {args.chunk} x {args.chunk}, {need / 2**30:.2f} GiB", file=sys.stderr)
    # uncompressed: a curvature matrix has no zero chunks and its mantissas do not compress
    # (measured below on one chunk), and both cores are busy computing
    if args.out.endswith(".npy"):  # a numpy.memmap of a file instead of a Zarr store
        z = np.lib.format.open_memmap(args.out, mode="w+", dtype=np.float64, shape=(n, n))
    else:
        import zarr

        z = zarr.create_array(store=args.out, shape=(n, n), chunks=(args.chunk, args.chunk), dtype="f8",
                              compressors=None)
    offsets = model.param_offsets()
    rows_bytes = [sum(b - a for a, b in rows) * (n - int(offsets[l])) * 8 for l, _, rows in blocks]
    driver0 = proc_numbers(os.getpid())
    exact.rows_task = timed_rows_task  # looked up by the driver when it submits the tasks
    store.BlockWriter.write = timed_write
    pool = CountingPool(args.workers)  # forked (Linux default): the workers see the patched rows_task
    sampler_stop = threading.Event()

    def sampler():  # peaks are monotone; sample so that the last values are seen before shutdown
        while not sampler_stop.wait(5):
            pool.sample()

    threading.Thread(target=sampler, daemon=True).start()
    t0 = time.perf_counter()
    rp.hessian(model, params, X, y, loss, out=z, executor=pool, block_rows=block_rows, shards=args.shards,
               progress=True)
    wall = time.perf_counter() - t0
    sampler_stop.set()
    pool.sample()
    workers = dict(pool.last)
    driver1 = proc_numbers(os.getpid())  # before the workers are reaped: Linux adds a reaped child's I/O to its parent's
    while pool.finished < pool.tasks:  # a future's callbacks may run just after its waiter wakes
        time.sleep(0.01)
    tasks, sent, received = pool.tasks, pool.sent, pool.received  # the computation's, not the probes' below
    split = dict(pool.map(_split, range(4 * args.workers)))
    pool.stop()

    t1 = time.perf_counter()
    rng = np.random.default_rng(1)
    worst = 0.0
    for j in rng.choice(n, 3, replace=False):
        e = np.zeros(n)
        e[j] = 1.0
        hv = rp.hvp(model, params, X, y, loss, e)
        row = np.asarray(z[j, :])
        worst = max(worst, np.abs(row - hv).max() / np.abs(hv).max())
    for k in rng.choice(len(blocks), 3, replace=False):
        l, _, rows = blocks[k]
        a, b = rows[0]
        end = int(offsets[l + 1])
        if end < n:
            c = min(n, end + 500)
            assert np.array_equal(np.asarray(z[a:b, end:c]), np.asarray(z[end:c, a:b]).T), "mirror"
    check = time.perf_counter() - t1
    t2 = time.perf_counter()
    rp.load_matrix(args.out)  # every block's rows and mirror hashed against the record
    verify = time.perf_counter() - t2
    import zlib

    sample = np.asarray(z[: args.chunk, n - args.chunk :]).tobytes()
    ratio = len(sample) / len(zlib.compress(sample, 1))
    disk = os.path.getsize(args.out) if os.path.isfile(args.out) else \
        sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(args.out) for f in fs)
    res = dict(
        n=n, width=h, samples=args.samples, shards=args.shards, workers=args.workers, threads_per_worker=pool.threads,
        block_rows=block_rows, blocks=len(blocks), chunk=args.chunk, wall_s=round(wall, 1),
        hvp_check_rel=float(f"{worst:.2e}"), check_s=round(check, 1), load_matrix_verify_s=round(verify, 1),
        worker_compute_s=[round(v["compute_s"], 1) for v in split.values()],
        worker_write_s=[round(v["write_s"], 1) for v in split.values()],
        worker_blocks=[v["blocks"] for v in split.values()],
        tasks=tasks, driver_sent_bytes=sent, driver_received_bytes=received,
        driver_received_per_block=round(received / len(blocks)),
        rows_per_block_bytes_if_driver_wrote=round(sum(rows_bytes) / len(blocks)),
        rows_total_bytes_if_driver_wrote=sum(rows_bytes),
        driver_rchar=driver1[0] - driver0[0], driver_wchar=driver1[1] - driver0[1],
        driver_peak_rss=driver1[4],
        workers_rchar=[v[0] for v in workers.values()], workers_wchar=[v[1] for v in workers.values()],
        workers_write_bytes=[v[3] for v in workers.values()], workers_peak_rss=[v[4] for v in workers.values()],
        matrix_bytes=need, store_bytes_on_disk=disk, zlib1_ratio_of_one_chunk=round(ratio, 3),
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), load_at_end=os.getloadavg(),
        command=" ".join([os.path.basename(sys.executable), *sys.argv]),
    )
    print(json.dumps(res, indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)
    if not args.keep:
        if os.path.isfile(args.out):
            del z
            os.remove(args.out)
            os.remove(args.out + ".refprune.json")
        else:
            shutil.rmtree(args.out)
        lock = os.path.normpath(args.out) + ".refprune.lock"
        if os.path.exists(lock):
            os.remove(lock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
