"""Exact-Hessian timing on the reference nets of the foundation issue.

(a) MLP 64-32-10 tanh, batch 256 (n = 2410)
(b) MLP 64-64-64-10 tanh, batch 256 (n = 8970)
(c) Conv(1->4, 3x3, pad 1)-ReLU-Conv(4->8, 3x3, pad 1)-ReLU-Flatten-Linear(512->10),
    1x8x8 inputs, batch 128 (n = 5466)

Float64, softmax cross-entropy (mean), seed 0.  The script pins the BLAS and OpenMP
threads to 2 itself (``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS`` set
before NumPy is imported; ``--threads`` changes it)::

    python benchmarks/bench_hessian.py [--repeat 5] [--profile] [--torch] [--jax]

Each net's time is compared with the machine's own matrix product in the same run: ``A @ B``
for random ``A (n, N)`` and ``B (N, n)`` in float64 (best of ``--repeat``), the work of
``sum_n g_n g_n^T`` for ``N`` vectors of length ``n`` and the lower bound of the problem
(``docs/derivations.md`` §12).  ``cpu ratio`` is the same ratio in CPU time (summed over
threads, so with ``--threads 1`` it is less disturbed by other jobs on the machine).
``--profile`` prints a breakdown by phase (``cProfile`` time inside the functions listed in
``PHASES``).  Results: ``benchmarks/results/hessian.md``.

Peak memory beyond the n x n result is read from ``tracemalloc`` (NumPy reports its
allocations to it).  ``--torch`` / ``--jax`` time (where installed) ``torch.func.hessian`` and
``jax.jit(jax.hessian)`` on the same nets and data when installed.
"""

import argparse
import cProfile
import os
import pstats
import sys
import time
import tracemalloc


def _pin_threads(argv):
    n = "2"
    if "--threads" in argv:
        i = argv.index("--threads") + 1
        n = argv[i] if i < len(argv) else ""
        # 0 would leave BLAS at its own default: the ratio would then be measured unpinned
        if not (n.isascii() and n.isdigit() and int(n) > 0):
            sys.exit(f"bench_hessian.py: --threads must be a positive integer, got {n!r}")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = n
    return int(n)


THREADS = _pin_threads(sys.argv)  # before NumPy is imported: BLAS reads these once

import numpy as np  # noqa: E402

import refprune as rp  # noqa: E402


def nets():
    rng = np.random.default_rng(0)
    a = rp.Sequential(rp.Linear(64, 32), rp.Tanh(), rp.Linear(32, 10))
    b = rp.Sequential(rp.Linear(64, 64), rp.Tanh(), rp.Linear(64, 64), rp.Tanh(), rp.Linear(64, 10))
    c = rp.Sequential(rp.Conv2d(1, 4, 3, padding=1), rp.ReLU(), rp.Conv2d(4, 8, 3, padding=1), rp.ReLU(),
                      rp.Flatten(), rp.Linear(512, 10))
    return [
        ("a", a, rng.normal(size=(256, 64)), rng.integers(0, 10, 256)),
        ("b", b, rng.normal(size=(256, 64)), rng.integers(0, 10, 256)),
        ("c", c, rng.normal(size=(128, 1, 8, 8)), rng.integers(0, 10, 128)),
    ]


def best_of(fn, repeat, clock=time.perf_counter):
    times = []
    for _ in range(repeat):
        t = clock()
        fn()
        times.append(clock() - t)
    return min(times)


def torch_time(model, params, X, y, repeat):
    import torch

    from refprune.bridges import torch_hessian

    torch.set_num_threads(2)
    return best_of(lambda: torch_hessian(model, params, X, y, rp.CrossEntropyLoss()), repeat)


def jax_time(model, params, X, y, repeat):
    """jax.jit(jax.hessian): compiled once (excluded), then timed."""
    import jax

    from refprune.bridges import jax_loss_function

    f = jax.jit(jax.hessian(jax_loss_function(model, X, y, rp.CrossEntropyLoss())))
    theta = rp.flatten_params(params)
    f(theta).block_until_ready()
    return best_of(lambda: f(theta).block_until_ready(), repeat)


#: phases of the assembly: (label, (module suffix, function name)); a phase's time is the
#: cumulative time of its functions (nested ones are not double counted: they are disjoint,
#: except the last phase, which overlaps the others)
PHASES = [
    ("forward/backward passes", [("derivatives.py", "gradient_pass")]),
    ("tangents jvp/vjp/loss", [("exact.py", "<lambda>"), ("affine.py", "jvp"), ("affine.py", "vjp"),
                               ("activations.py", "jvp"), ("activations.py", "vjp"),
                               ("activations.py", "vjp_curvature"), ("affine.py", "param_jvp"),
                               ("conv.py", "channel_features"), ("conv.py", "channel_jvp")]),
    ("dense pairs: 1st term GEMMs", [("dense_pairs.py", "first_term")]),
    ("dense pairs: 2nd term", [("dense_pairs.py", "second_term_diagonal"), ("dense_pairs.py", "second_term_dense")]),
    ("T route / Jacobian rows", [("exact.py", "_rows_from_identity_seed"), ("affine.py", "param_grad"),
                                 ("affine.py", "param_grad_input_tangent"), ("exact.py", "_accumulate"),
                                 ("conv.py", "channel_input_tangent"), ("affine.py", "param_grad_rows")]),
    ("mirror (finish)", [("exact.py", "finish")]),
    # these call param_grad_rows, vjp, ... themselves: their time is partly in the phases above
    ("of which rows through the output", [("exact.py", "_rows_through_output"),
                                          ("exact.py", "_rows_from_output_jacobians")]),
]


def profile(fn):
    pr = cProfile.Profile()
    t = time.perf_counter()
    pr.enable()
    fn()
    pr.disable()
    total = time.perf_counter() - t
    stats = pstats.Stats(pr).stats
    parts = []
    for label, funcs in PHASES:
        cum = sum(v[3] for (file, _, func), v in stats.items()
                  if any(file.endswith(suffix) and func == name for suffix, name in funcs))
        parts.append(f"{label} {cum:.3f}")
    return f"profiled {total:.3f} s: " + ", ".join(parts)


def product_time(n, N, repeat, clock=time.perf_counter):
    """Best time of ``A @ B`` for random ``A (n, N)``, ``B (N, n)`` (float64)."""
    rng = np.random.default_rng(1)
    A, B = rng.normal(size=(n, N)), rng.normal(size=(N, n))
    return best_of(lambda: A @ B, repeat, clock)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--torch", action="store_true")
    ap.add_argument("--jax", action="store_true")
    ap.add_argument("--only", default="abc")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--threads", default="2", help="BLAS/OpenMP threads (set before NumPy is imported)")
    args = ap.parse_args()
    print(f"BLAS threads {THREADS}, repeat {args.repeat}", flush=True)
    loss = rp.CrossEntropyLoss()
    for name, model, X, y in nets():
        if name not in args.only:
            continue
        params = model.init(seed=0)
        n = model.n_params
        t = best_of(lambda: rp.hessian(model, params, X, y, loss), args.repeat)
        prod = product_time(n, len(X), args.repeat)
        # CPU time (all threads): with --threads 1 a check of the ratio that other jobs on
        # the machine disturb less than the wall clock
        cpu = best_of(lambda: rp.hessian(model, params, X, y, loss), args.repeat, time.process_time)
        cpu_prod = product_time(n, len(X), args.repeat, time.process_time)
        tracemalloc.start()
        rp.hessian(model, params, X, y, loss)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        extra = (peak - 8 * n * n) / 2**20
        line = (f"({name}) n={n:5d} N={len(X)}  refprune hessian {t:7.3f} s  A@B {prod:7.3f} s  ratio {t / prod:5.2f}  "
                f"cpu ratio {cpu / cpu_prod:5.2f}  peak beyond result {extra:7.1f} MiB "
                f"(result {8 * n * n / 2**20:.0f} MiB)")
        if args.torch:
            line += f"  torch.func.hessian {torch_time(model, params, X, y, 1):7.2f} s"
        if args.jax:
            line += f"  jax.jit(jax.hessian) {jax_time(model, params, X, y, args.repeat):7.2f} s"
        print(line, flush=True)
        if args.profile:
            print("    " + profile(lambda: rp.hessian(model, params, X, y, loss)), flush=True)


if __name__ == "__main__":
    main()
