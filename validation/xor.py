"""Hassibi & Stork (1993), XOR: which weight do magnitude, OBD and OBS remove first?

A 2-2-1 network with sigmoid units and biases (9 weights, the biases counted as weights
as in the paper) is trained on the four XOR patterns from many random starts to a true
minimum of the summed squared error plus a small weight decay (``refprune.minimize``:
trust-region with the exact gradient and Hessian; without weight decay the infimum lies at
infinite weights).  At each minimum that solves XOR, every criterion removes its first
weight: magnitude and OBD zero it, OBS also updates the others.  Recorded: whether the
network still solves XOR right after the removal, whether the removed weight is a
"correct" one (re-minimising the other eight weights solves XOR again), and the predicted
against the actual increase of the objective.

    python validation/xor.py [--seeds 100]     # writes validation/results/xor.md and xor.png
"""

import argparse
import sys

import numpy as np

import refprune as rp

X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
Y = np.array([[0.0], [1.0], [1.0], [0.0]])
LOSS = rp.MSELoss("sum")
WEIGHT_DECAY = 1e-4
NAMES = ["w(h1<-x1)", "w(h1<-x2)", "w(h2<-x1)", "w(h2<-x2)", "b(h1)", "b(h2)", "w(o<-h1)", "w(o<-h2)", "b(o)"]


def network():
    return rp.Sequential(rp.Linear(2, 2), rp.Sigmoid(), rp.Linear(2, 1), rp.Sigmoid())


def solves(model, params):
    return bool(np.all((model(params, X) > 0.5) == (Y > 0.5)))


def trained(seed, scale=3.0):
    """A minimum from PyTorch's initialisation scaled by ``scale`` (more varied starts)."""
    model = network()
    start = [scale * p for p in model.init(seed=seed)]
    return model, rp.minimize(model, start, X, Y, LOSS, weight_decay=WEIGHT_DECAY, gtol=1e-12)


def first_removals(model, params):
    """For each criterion: (index, predicted, actual, still solves, correct weight)."""
    out = {}
    mask_all = np.ones(model.n_params, dtype=bool)
    for method, kw in (("magnitude", {}), ("OBD", dict(curvature="hessian")), ("OBS", dict(curvature="hessian"))):
        r = rp.prune(model, params, X, Y, LOSS, method=method.lower(), count=1, include_bias=True,
                     weight_decay=WEIGHT_DECAY, **kw)
        st = r.steps[0]
        q = int(st.removed[0])
        mask = mask_all.copy()
        mask[q] = False
        again = rp.minimize(model, r.params, X, Y, LOSS, weight_decay=WEIGHT_DECAY, mask=mask, gtol=1e-12)
        out[method] = dict(q=q, predicted=st.predicted, actual=st.actual, solves=solves(model, r.params),
                           correct=solves(model, again.params))
    return out


def run(seeds):
    rows, failed = [], 0
    for seed in range(seeds):
        model, res = trained(seed)
        if not (res.at_minimum and solves(model, res.params)):
            failed += 1
            continue
        rows.append((seed, res, first_removals(model, res.params)))
    return rows, failed


def summarise(rows, failed, seeds):
    methods = ("magnitude", "OBD", "OBS")
    n = len(rows)
    lines = ["# XOR (Hassibi & Stork 1993)", "",
             f"2-2-1 sigmoid network with biases, summed squared error plus {WEIGHT_DECAY:g}/2 |theta|^2, trained "
             f"by `refprune.minimize` (trust-region, exact Hessian) from {seeds} random starts; {n} reached a minimum "
             f"that solves XOR ({failed} stopped in a local minimum or did not solve it). Biases count as weights, as "
             "in the paper. Written by `python validation/xor.py`.", "",
             "## First weight removed", ""]
    table = []
    for m in methods:
        still = sum(r[2][m]["solves"] for r in rows)
        correct = sum(r[2][m]["correct"] for r in rows)
        ratio = np.array([r[2][m]["actual"] / r[2][m]["predicted"] for r in rows if m != "magnitude"]) \
            if m != "magnitude" else np.array([np.nan])
        med = "n/a (no loss model)" if m == "magnitude" else f"{np.median(ratio):.2f}"
        table.append((m, f"{still}/{n}", f"{correct}/{n}", med))
    from report import table as md_table

    lines += md_table(["criterion", "still solves XOR right after", "removed a correct weight",
                       "median actual / predicted"], table)
    counts = {m: np.bincount([r[2][m]["q"] for r in rows], minlength=9) for m in methods}
    lines += ["", "Which weight each criterion removed first (count over the minima):", ""]
    lines += md_table(["weight"] + list(methods), [(NAMES[i],) + tuple(int(counts[m][i]) for m in methods)
                                                   for i in range(9)])
    same = sum(r[2]["OBD"]["q"] == r[2]["OBS"]["q"] for r in rows)
    correct = {m: sum(r[2][m]["correct"] for r in rows) for m in methods}
    lines += ["", "## Findings", "",
              f"- OBS's first removal keeps XOR solved in {sum(r[2]['OBS']['solves'] for r in rows)} of {n} minima; "
              f"OBD's in {sum(r[2]['OBD']['solves'] for r in rows)}, magnitude's in "
              f"{sum(r[2]['magnitude']['solves'] for r in rows)}. The paper reports that only OBS deletes a correct "
              f"weight in every case. Here OBS removed a correct weight in {correct['OBS']} of {n}, OBD in "
              f"{correct['OBD']}, and magnitude in {correct['magnitude']}: if 'correct' means that retraining the "
              "other weights solves XOR again, magnitude's choice (a hidden bias) also qualifies, so that part of "
              "the claim does not reproduce in this sense; without retraining, only OBS's removal leaves a working "
              "network every time.",
              f"- OBD and OBS choose the same weight in {same} of {n} minima.",
              "- Predicted against actual: OBS's prediction is exact only for a quadratic objective; at these minima "
              "the sigmoids are saturated, so a removal moves the network far along directions where the loss is "
              "not quadratic, and the actual increase can be many times the predicted one (the ratio column). OBD "
              "also ignores the off-diagonal Hessian and makes no compensating update.", ""]
    return lines


def figure(rows, name="xor.png"):
    from report import RESULTS

    from refprune import plot

    data = {m: ([r[2][m]["predicted"] for r in rows], [r[2][m]["actual"] for r in rows]) for m in ("OBD", "OBS")}
    plot.predicted_vs_actual(data, path=f"{RESULTS}/{name}", title="XOR: first removal at each minimum")
    return name


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=100)
    args = ap.parse_args(argv)
    from report import write

    rows, failed = run(args.seeds)
    lines = summarise(rows, failed, args.seeds)
    lines += ["![predicted against actual](xor.png)"]
    figure(rows)
    print(write("xor.md", lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
