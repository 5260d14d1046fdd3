"""Exact-Hessian timing on the reference nets of the foundation issue.

(a) MLP 64-32-10 tanh, batch 256 (n = 2410)
(b) MLP 64-64-64-10 tanh, batch 256 (n = 8970)
(c) Conv(1->4, 3x3, pad 1)-ReLU-Conv(4->8, 3x3, pad 1)-ReLU-Flatten-Linear(512->10),
    1x8x8 inputs, batch 128 (n = 5466)

Float64, softmax cross-entropy (mean), seed 0.  Run with two BLAS threads::

    OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 python benchmarks/bench_hessian.py [--torch] [--jax]

Peak memory beyond the n x n result is read from ``tracemalloc`` (NumPy reports its
allocations to it).  ``--torch`` / ``--jax`` time (where installed) ``torch.func.hessian`` and
``jax.jit(jax.hessian)`` on the same nets and data when installed.
"""

import argparse
import time
import tracemalloc

import numpy as np

import refprune as rp


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


def best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--torch", action="store_true")
    ap.add_argument("--jax", action="store_true")
    ap.add_argument("--only", default="abc")
    args = ap.parse_args()
    loss = rp.CrossEntropyLoss()
    for name, model, X, y in nets():
        if name not in args.only:
            continue
        params = model.init(seed=0)
        n = model.n_params
        t = best_of(lambda: rp.hessian(model, params, X, y, loss), args.repeat)
        tracemalloc.start()
        rp.hessian(model, params, X, y, loss)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        extra = (peak - 8 * n * n) / 2**20
        line = f"({name}) n={n:5d}  refprune hessian {t:7.3f} s  peak beyond result {extra:7.1f} MiB (result {8 * n * n / 2**20:.0f} MiB)"
        if args.torch:
            line += f"  torch.func.hessian {torch_time(model, params, X, y, 1):7.2f} s"
        if args.jax:
            line += f"  jax.jit(jax.hessian) {jax_time(model, params, X, y, args.repeat):7.2f} s"
        print(line, flush=True)


if __name__ == "__main__":
    main()
