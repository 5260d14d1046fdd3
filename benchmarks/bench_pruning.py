"""Pruning costs.

1. OBS over all weights of one layer: one inversion, then each removal is an O(n^2)
   elimination of the inverse (refprune's ``OBS``), against re-inverting the reduced
   matrix for every removal (the O(n^3)-per-step baseline, Hassibi & Stork's
   "recompute" variant).  Layer: the 64x33 first layer of an MLP 32-64-10 (tanh), GGN
   block of 2112 parameters, 256 samples; 200 removals timed for both.
2. Layer-wise OBS (OBC) of a 256x256 Linear layer to 50% sparsity, 1024 input samples.

    OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 python benchmarks/bench_pruning.py
"""

import time

import numpy as np

import refprune as rp
from refprune.pruning import OBS, inverse_spd, obc_rows


def obs_vs_reinversion(removals=200):
    rng = np.random.default_rng(0)
    model = rp.Sequential(rp.Linear(32, 64), rp.Tanh(), rp.Linear(64, 10))
    params = model.init(0)
    X, y = rng.standard_normal((256, 32)), rng.integers(0, 10, 256)
    blocks = rp.block_diagonal(model, params, X, y, rp.CrossEntropyLoss(), curvature="ggn").blocks
    H, w = blocks[0], rp.flatten_params(params)[: blocks[0].shape[0]]
    n = H.shape[0]
    damping = 1e-4
    t0 = time.perf_counter()
    obs = OBS(inverse_spd(H, damping), w)
    t_inv = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(removals):
        q = int(np.argmin(obs.saliencies()))
        obs.remove([q])
    t_elim = (time.perf_counter() - t0) / removals
    # baseline: re-invert the matrix restricted to the remaining weights every step
    active = np.ones(n, dtype=bool)
    wb = w.copy()
    t0 = time.perf_counter()
    for _ in range(removals):
        idx = np.flatnonzero(active)
        Hinv = inverse_spd(H[np.ix_(idx, idx)], damping)
        s = wb[idx] ** 2 / (2 * np.diag(Hinv))
        k = int(np.argmin(s))
        wb[idx] -= wb[idx][k] / Hinv[k, k] * Hinv[:, k]
        wb[idx[k]] = 0.0
        active[idx[k]] = False
    t_reinv = (time.perf_counter() - t0) / removals
    same = np.array_equal(~active, ~obs.active)
    print(f"OBS on a {n}-parameter layer: first inversion {t_inv * 1e3:.1f} ms; per removal: elimination "
          f"{t_elim * 1e3:.2f} ms, re-inversion {t_reinv * 1e3:.1f} ms (ratio {t_reinv / t_elim:.0f}x); "
          f"same {removals} weights removed: {same}; max |w difference| {np.abs(wb - obs.w).max():.1e}")


def layer_obs_256(samples=1024):
    rng = np.random.default_rng(0)
    W, X = rng.standard_normal((256, 256)), rng.standard_normal((samples, 256))
    t0 = time.perf_counter()
    H = 2 * X.T @ X / samples
    order, inc, traj = obc_rows(W, inverse_spd(H, 0.0), np.ones_like(W, dtype=bool), 256)
    rp.pruning.layerwise.select_counts(inc, 256 * 128)
    t = time.perf_counter() - t0
    print(f"layer-wise OBS, 256x256 Linear to 50%: {t:.2f} s (full greedy sequence of every row "
          f"+ global mask selection)")


if __name__ == "__main__":
    obs_vs_reinversion()
    layer_obs_256()
