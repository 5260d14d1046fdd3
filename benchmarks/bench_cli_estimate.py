"""The ``refprune hessian`` time estimate against the time the run then takes.

The estimate times the computation on about N/16, N/8 and N/4 samples (after a warm-up
run), fits ``a + b k + c k min(k, samples per chunk)`` through them, extrapolates it to
``N`` and adds the measured cost of writing and verifying the file
(:func:`refprune.cli._estimate`, ``_store_seconds``).  Each case
below runs the command line in a fresh process, as a user would, and compares the
estimate it prints with the time from that line to the end of the run (``wrote ...``),
in one process and with 1 and 2 worker processes, over MLPs of several sizes and a conv
net.  Aim: every ratio estimate / measured within 0.5 and 2.  The load average of the
machine is printed with each row: other processes sharing the cores change the time
of a run between its calibration and its end, which no estimate made beforehand can
know.

    python benchmarks/bench_cli_estimate.py [--quick] [--workers 0 1 2]
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CASES = [  # (label, model, input shape, samples)
    ("mlp n=1,415 N=200", "Linear(10, 30) Tanh Linear(30, 30) Tanh Linear(30, 5)", "10", 200),
    ("mlp n=1,415 N=800", "Linear(10, 30) Tanh Linear(30, 30) Tanh Linear(30, 5)", "10", 800),
    ("conv n=2,906 N=500", "Conv2d(1, 8, 3, padding=1) Tanh AvgPool2d(2) Flatten Linear(128, 20) Tanh "
                           "Linear(20, 10)", "1 8 8", 500),
    ("mlp n=3,255 N=400", "Linear(20, 50) Tanh Linear(50, 40) Tanh Linear(40, 5)", "20", 400),
    ("mlp n=5,010 N=800", "Linear(20, 60) Tanh Linear(60, 50) Tanh Linear(50, 10)", "20", 800),
]


def run(model, shape, samples, workers, out):
    cmd = [sys.executable, "-m", "refprune", "hessian", "--model", model, "--input-shape", *shape.split(),
           "--samples", str(samples), "--out", out]
    if workers:
        cmd += ["--workers", str(workers)]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t_start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    estimate = t_est = t_end = None
    for line in proc.stderr:
        m = re.search(r"about ([\d.]+) (s|min)$", line.strip())
        if m and estimate is None:
            estimate, t_est = float(m.group(1)) * (60 if m.group(2) == "min" else 1), time.perf_counter()
        if line.startswith("wrote "):
            t_end = time.perf_counter()
    if proc.wait() != 0 or estimate is None or t_end is None:
        raise RuntimeError(f"the run failed: {' '.join(cmd)}")
    return estimate, t_end - t_est, t_est - t_start


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the first case only")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="worker counts (0: one process)")
    args = ap.parse_args()
    rows = []
    print(f"{'case':22s} {'workers':>7s} {'estimate':>9s} {'measured':>9s} {'ratio':>6s} {'calibration':>11s} "
          f"{'load':>5s}")
    with tempfile.TemporaryDirectory() as tmp:
        for label, model, shape, samples in CASES[:1] if args.quick else CASES:
            for workers in args.workers:
                est, took, before = run(model, shape, samples, workers, os.path.join(tmp, "H.npy"))
                rows.append(est / took)
                print(f"{label:22s} {workers:7d} {est:8.2f}s {took:8.2f}s {est / took:6.2f} {before:10.2f}s "
                      f"{os.getloadavg()[0]:5.1f}", flush=True)
    print(f"ratios from {min(rows):.2f} to {max(rows):.2f}" + ("" if 0.5 <= min(rows) and max(rows) <= 2 else
                                                              "  (outside 0.5-2)"))


if __name__ == "__main__":
    main()
