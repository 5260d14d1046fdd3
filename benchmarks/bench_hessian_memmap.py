"""The exact Hessian of a 41,310-parameter MLP written into a ``numpy.memmap``.

MLP 100-200-100-10 (tanh), batch 256, softmax cross-entropy (mean): the 41310 x 41310
float64 result is 12.7 GiB.  It is written, layer by layer, into a memmap on disk;
``tracemalloc`` reports the largest amount of other memory held at once, which stays at
the size of the chunked temporaries.  A few entries are then checked against
Hessian-vector products.  Usage::

    python benchmarks/bench_hessian_memmap.py [DIR]   # DIR for the 12.7 GiB file (default: a temp dir)
"""

import os
import sys
import tempfile
import time
import tracemalloc

import numpy as np

import refprune as rp


def main():
    where = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="refprune-")
    rng = np.random.default_rng(0)
    model = rp.Sequential(rp.Linear(100, 200), rp.Tanh(), rp.Linear(200, 100), rp.Tanh(), rp.Linear(100, 10))
    params = model.init(seed=0)
    X, y = rng.normal(size=(256, 100)), rng.integers(0, 10, 256)
    loss = rp.CrossEntropyLoss()
    n = model.n_params
    path = os.path.join(where, "hessian.f64")
    out = np.memmap(path, dtype=np.float64, mode="w+", shape=(n, n))
    tracemalloc.start()
    t = time.perf_counter()
    rp.hessian(model, params, X, y, loss, out=out, progress=True)
    out.flush()
    elapsed = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    cols = rng.choice(n, size=3, replace=False)
    V = np.zeros((3, n))
    V[np.arange(3), cols] = 1.0
    HV = rp.hvp(model, params, X, y, loss, V)
    err = max(np.abs(np.asarray(out[:, c]) - HV[i]).max() for i, c in enumerate(cols))
    print(f"n={n}  result {8 * n * n / 2**30:.1f} GiB on disk  time {elapsed:.1f} s  "
          f"peak other memory {peak / 2**20:.0f} MiB  max |H[:, c] - hvp(e_c)| = {err:.1e}")
    del out
    os.remove(path)


if __name__ == "__main__":
    main()
