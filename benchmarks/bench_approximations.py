"""Cost of the curvature approximations on the foundation benchmark nets (a)-(c),
relative to one gradient and to the exact Hessian.

    OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 python benchmarks/bench_approximations.py
"""

import time

import numpy as np

import refprune as rp
from bench_hessian import best_of, nets


def main(repeat=3):
    loss = rp.CrossEntropyLoss()
    for name, model, X, y in nets():
        params = model.init(seed=0)
        args = (model, params, X, y, loss)
        t_grad = best_of(lambda: rp.grad(*args), repeat)
        rows = [
            ("hessian_diagonal", lambda: rp.hessian_diagonal(*args)),
            ("ggn_diagonal", lambda: rp.ggn_diagonal(*args)),
            ("fisher_diagonal mc_fisher(1)", lambda: rp.fisher_diagonal(*args, curvature="mc_fisher")),
            ("obd_diagonal", lambda: rp.obd_diagonal(*args)),
            ("kfac ggn expand", lambda: rp.kfac(*args)),
            ("kfac ggn reduce", lambda: rp.kfac(*args, approx="reduce")),
            ("kfac mc_fisher(1)", lambda: rp.kfac(*args, curvature="mc_fisher")),
            ("ekfac ggn", lambda: rp.ekfac(*args)),
            ("exact hessian", lambda: rp.hessian(*args)),
        ]
        print(f"({name}) n={model.n_params}  gradient {t_grad * 1e3:.2f} ms")
        for label, fn in rows:
            t = best_of(fn, repeat)
            print(f"    {label:24s} {t * 1e3:9.2f} ms  = {t / t_grad:7.1f} x gradient", flush=True)


if __name__ == "__main__":
    np.random.seed(0)
    time.sleep(0)
    main()
