"""Cost of one optimizer step as a multiple of one mini-batch gradient, on the reference
nets (a)-(c) of ``bench_hessian.py`` with their batches (256, 256, 128).

Steady state: each optimizer is stepped ``warm`` times, then timed over ``steps`` further
steps; ``refresh 20`` rows report the mean over the steps (the eigendecompositions
amortised) and, separately, a refresh step alone.  The exact natural gradient is timed for
one step on net (a) only (``n^2`` memory, ``n^3`` factorisation).

    OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 python benchmarks/bench_optimizers.py
"""

import time

import numpy as np

import refprune as rp
from bench_hessian import best_of, nets


def step_seconds(opt, model, params, X, y, loss, warm=3, steps=20):
    """``(mean seconds per step over `steps` steps, seconds of each step)``."""
    opt.reset()
    for _ in range(warm):
        opt.step(model, params, X, y, loss)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        opt.step(model, params, X, y, loss)
        times.append(time.perf_counter() - start)
    return float(np.mean(times)), times


def main(repeat=5):
    loss = rp.CrossEntropyLoss()
    for name, model, X, y in nets():
        params = model.init(seed=0)
        t_grad = best_of(lambda: rp.grad(model, params, X, y, loss), repeat)
        rows = [
            ("SGD", rp.optim.SGD()),
            ("K-FAC mc_fisher refresh 1", rp.optim.KFAC(damping=0.01)),
            ("K-FAC mc_fisher refresh 20", rp.optim.KFAC(damping=0.01, refresh_interval=20)),
            ("K-FAC fisher refresh 1", rp.optim.KFAC(damping=0.01, curvature="fisher")),
            ("EKFAC mc_fisher refresh 1", rp.optim.EKFAC(damping=0.01)),
            ("EKFAC mc_fisher refresh 20", rp.optim.EKFAC(damping=0.01, refresh_interval=20)),
        ]
        print(f"({name}) n={model.n_params}, batch {len(X)}: gradient {t_grad * 1e3:.2f} ms")
        for label, opt in rows:
            # warm = 1 puts a refresh (step 21) among the 20 timed steps of the amortised rows
            mean, times = step_seconds(opt, model, params, X, y, loss, warm=1, steps=20)
            extra = f"  (refresh step {times[-1] / t_grad:6.1f} x)" if "refresh 20" in label else ""
            print(f"    {label:28s} {mean * 1e3:8.2f} ms = {mean / t_grad:6.1f} x gradient{extra}", flush=True)
        if name == "a":
            mean, _ = step_seconds(rp.optim.NaturalGradient(damping=0.01), model, params, X, y, loss, warm=0, steps=2)
            print(f"    {'exact natural gradient':28s} {mean * 1e3:8.2f} ms = {mean / t_grad:6.1f} x gradient")


if __name__ == "__main__":
    main()
