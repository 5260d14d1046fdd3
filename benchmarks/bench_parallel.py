"""Scaling of the exact Hessian computed as independent tasks (docs/derivations.md §11).

* time against workers (1, 2, 4 processes of a ``concurrent.futures`` process pool, and
  a dask ``LocalCluster`` when installed) for a fixed problem, against one process;
* time against ``n`` (network width) and against ``N`` (samples) with 2 workers;
* peak resident memory per worker, read by each worker from ``getrusage``.

Run with one BLAS thread per process, so that workers, not threads, are what scales::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/bench_parallel.py [--quick]

Writes ``benchmarks/results/parallel_scaling.md`` (and ``parallel_scaling.png`` with
matplotlib).
"""

import argparse
import concurrent.futures as cf
import multiprocessing
import os
import resource
import sys
import time

import numpy as np

import refprune as rp

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def problem(width, n_samples, seed=0):
    """MLP 64-width-width-10 (tanh), softmax cross-entropy, Gaussian inputs."""
    rng = np.random.default_rng(seed)
    model = rp.Sequential(rp.Linear(64, width), rp.Tanh(), rp.Linear(width, width), rp.Tanh(),
                          rp.Linear(width, 10))
    return model, model.init(seed), rng.normal(size=(n_samples, 64)), rng.integers(0, 10, n_samples), \
        rp.CrossEntropyLoss()


def peak_rss_mib():
    """This process's peak resident set size in MiB: ``VmHWM`` of its own address space
    (``getrusage``'s ``ru_maxrss`` survives ``exec`` and would report the parent's peak
    for a freshly spawned worker)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_peaks(ex, workers):
    """Peak RSS of each worker process, by pid (probes until every worker answered)."""
    seen = {}
    for _ in range(20):
        for pid, rss in ex.map(_probe, range(8 * workers)):
            seen[pid] = rss
        if len(seen) >= workers:
            break
    return seen


def _probe(_):
    time.sleep(0.01)
    return os.getpid(), peak_rss_mib()


def pool(workers):
    """A process pool of fresh interpreters (``spawn``), so that a worker's memory is its own,
    not pages shared with this process."""
    return cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, to try the script")
    args = ap.parse_args(argv)
    width, N = (32, 128) if args.quick else (64, 512)
    block_rows = 256
    model, params, X, y, loss = problem(width, N)
    n = model.n_params
    lines = ["# Exact Hessian as independent tasks: scaling on this machine", "",
             f"Machine: {os.cpu_count()} cores; one BLAS thread per process. Written by "
             "`OMP_NUM_THREADS=1 python benchmarks/bench_parallel.py`.", ""]

    # ---- time against workers (after one untimed run: first-touch page faults of the result)
    rp.hessian(model, params, X, y, loss)
    t1, H = timed(lambda: rp.hessian(model, params, X, y, loss))
    rows = [("one process (no tasks)", "-", f"{t1:.2f}", "1.00", f"{peak_rss_mib():.0f} (whole process)")]
    tasks_here, _ = timed(lambda: rp.hessian(model, params, X, y, loss, block_rows=block_rows))
    rows.append((f"tasks in this process (block_rows={block_rows})", "-", f"{tasks_here:.2f}", f"{t1 / tasks_here:.2f}",
                 "-"))
    scaling = []
    for workers in (1, 2, 4):
        with pool(workers) as ex:
            worker_peaks(ex, workers)  # start the workers before timing
            t, Hp = timed(lambda: rp.hessian(model, params, X, y, loss, executor=ex, block_rows=block_rows))
            peaks = worker_peaks(ex, workers)
        assert np.abs(Hp - H).max() <= 1e-12 * np.abs(H).max()
        scaling.append((workers, t))
        rows.append((f"process pool, {workers} workers", str(workers), f"{t:.2f}", f"{t1 / t:.2f}",
                     f"{max(peaks.values()):.0f}"))
        print(f"pool {workers}: {t:.2f} s", file=sys.stderr)
    try:
        import distributed
    except ImportError:
        distributed = None
    if distributed is not None:
        for workers in (1, 2, 4):
            with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                          dashboard_address=None) as cluster, distributed.Client(cluster) as client:
                t, Hp = timed(lambda: rp.hessian(model, params, X, y, loss, executor=client, block_rows=block_rows))
                peaks = client.run(peak_rss_mib)
            assert np.abs(Hp - H).max() <= 1e-12 * np.abs(H).max()
            rows.append((f"dask LocalCluster, {workers} workers", str(workers), f"{t:.2f}", f"{t1 / t:.2f}",
                         f"{max(peaks.values()):.0f}"))
            print(f"dask {workers}: {t:.2f} s", file=sys.stderr)
    blocks = len(rp.curvature.exact.row_blocks(model, block_rows))
    lines += [f"## Time against workers: n = {n:,}, N = {N}, {blocks} blocks of at most about {block_rows} rows", "",
              f"The {n} x {n} result is {n * n * 8 / 2**20:.0f} MiB; the driver holds it (out=None).", ""]
    lines += _table(["run", "workers", "seconds", "speed-up", "peak RSS per worker (MiB)"], rows) + [""]

    # ---- time against n and N
    sizes = (16, 32, 48) if args.quick else (32, 64, 96)
    samples = (64, 128, 256) if args.quick else (128, 256, 512, 1024)
    by_n, by_N = [], []
    with pool(2) as ex:
        worker_peaks(ex, 2)
        for w in sizes:
            m, p, Xw, yw, lw = problem(w, N)
            t_one, _ = timed(lambda: rp.hessian(m, p, Xw, yw, lw))
            t_two, _ = timed(lambda: rp.hessian(m, p, Xw, yw, lw, executor=ex, block_rows=block_rows))
            by_n.append((m.n_params, t_one, t_two))
        for s in samples:
            m, p, Xs, ys, ls = problem(width, s)
            t_one, _ = timed(lambda: rp.hessian(m, p, Xs, ys, ls))
            t_two, _ = timed(lambda: rp.hessian(m, p, Xs, ys, ls, executor=ex, shards=2))
            by_N.append((s, t_one, t_two))
    lines += [f"## Time against n (N = {N}) and against N (n = {n:,}), 2 workers", ""]
    lines += _table(["n", "one process (s)", f"2 workers, block_rows={block_rows} (s)"],
                    [(f"{a:,}", f"{b:.2f}", f"{c:.2f}") for a, b, c in by_n]) + [""]
    lines += _table(["N", "one process (s)", "2 workers, 2 shards (s)"],
                    [(a, f"{b:.2f}", f"{c:.2f}") for a, b, c in by_N]) + [""]
    fit = np.polyfit(np.log([a for a, _, _ in by_n]), np.log([b for _, b, _ in by_n]), 1)[0]
    fitN = np.polyfit(np.log([a for a, _, _ in by_N]), np.log([b for _, b, _ in by_N]), 1)[0]
    lines += [f"Fitted exponents (one process): time ~ n^{fit:.2f} at fixed N, time ~ N^{fitN:.2f} at fixed n "
              "(the assembly is O(N n^2); small sizes carry fixed costs).", ""]
    lines += cluster_note(t1, n, N, block_rows)
    os.makedirs(RESULTS, exist_ok=True)
    _figure(scaling, t1, by_n, by_N, lines)
    path = os.path.join(RESULTS, "parallel_scaling.md")
    with open(path, "w") as fh:
        fh.write("\n".join(lines).rstrip() + "\n")
    print(path)


def cluster_note(t1, n0, N0, block_rows, N=10_000, workers=64):
    """Expected scaling to a cluster, extrapolated from this machine's one-process rate
    with the assembly's O(N n^2) cost."""
    rate = N0 * n0 ** 2 / t1  # sample-parameter^2 per second, one core
    out = [f"## Expected scaling to a cluster (extrapolated from the one-process rate here: "
           f"{rate:.2e} N n^2 per second per core)", "",
           f"For N = {N:,} samples, {workers} single-core workers and blocks of {block_rows:,} rows:", ""]
    rows = []
    for n in (100_000, 300_000):
        total = n * n * 8
        blocks = -(-n // block_rows)
        per_block = block_rows * n * 8  # at most: the block's rows against every later column
        t = N * n ** 2 / rate / workers
        rows.append((f"{n:,}", f"{total / 1e9:,.0f} GB", f"{blocks:,}", f"up to {per_block / 1e9:.1f} GB",
                     f"{t / 60:,.1f} min", f"{total / t / 1e6:,.0f} MB/s", f"{2 * total / t / 1e6:,.0f} MB/s"))
    out += _table(["n", "result (float64)", "blocks", "data per block", f"compute time, {workers} workers",
                   "store write rate needed", "through the driver (in and out)"], rows)
    out += ["", "Every block returns to the driver, which writes it and its mirror image into the store and records "
            "it; so the driver's network carries the result twice and the store must absorb it at the rate in the "
            "table (it does not depend on n: the result and the work both grow as n^2). With S sample shards a "
            "block is assembled in S parts over 1/S of the samples each: the same work, but S partial blocks "
            "travel, S times the data, which pays only when N is large (here from N = 1,024 on). Each task also receives the "
            "parameters and its shard of the data (on dask sent once per shard as the data of a task whose result each worker "
            "fetches once, on a process pool with every task): small next to a block for these sizes. Past "
            "these rates the driver, not the workers, limits the speed; a design in which workers write their "
            "blocks straight into a shared Zarr store with row-aligned chunks would remove that limit.", ""]
    return out


def _table(header, rows):
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return out + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]


def _figure(scaling, t1, by_n, by_N, lines):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        lines.append("(matplotlib is not installed: no figure.)")
        return
    fig, ax = plt.subplots(1, 3, figsize=(14, 4))
    w = [a for a, _ in scaling]
    ax[0].plot(w, [t1 / t for _, t in scaling], "o-", label="measured")
    ax[0].plot(w, w, "k--", alpha=0.4, label="ideal")
    ax[0].axvline(os.cpu_count(), color="0.6", lw=0.8)
    ax[0].set(xlabel="workers (processes)", ylabel="speed-up over one process", title="fixed problem")
    ax[0].legend()
    for a, data, label, split in ((ax[1], by_n, "n (parameters)", "row blocks"),
                                  (ax[2], by_N, "N (samples)", "2 sample shards")):
        x = [d[0] for d in data]
        a.loglog(x, [d[1] for d in data], "o-", label="one process")
        a.loglog(x, [d[2] for d in data], "s-", label=f"2 workers, {split}")
        a.set(xlabel=label, ylabel="seconds")
        a.set_xticks(x, [f"{v:,}" for v in x], minor=False)
        a.minorticks_off()
        a.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, "parallel_scaling.png"), dpi=100, metadata={"Software": None})
    lines += ["![speed-up against workers; time against n and N](parallel_scaling.png)", ""]


if __name__ == "__main__":
    main()
