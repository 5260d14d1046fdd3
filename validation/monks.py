"""MONK's problems 1-3 (Thrun et al. 1991) pruned as in Hassibi, Stork & Wolff (1993).

The 432 instances of six attributes (3, 3, 2, 3, 4, 2 values) are generated and labelled
by the published rules, one-hot encoded into 17 inputs:

* MONK-1: ``a1 = a2`` or ``a5 = 1``;                17-3-1 network (58 weights)
* MONK-2: exactly two attributes take their first value; 17-2-1 (39 weights)
* MONK-3: (``a5 = 3`` and ``a4 = 1``) or (``a5 != 4`` and ``a2 != 3``), 5% label noise in
  training; 17-2-1 (39 weights)

Training sets of 124, 169 and 122 instances are drawn from the 432 (the original files'
exact draws are not reproduced); the test set is all 432.  Networks have sigmoid units,
summed squared error plus a small weight decay, and are trained to a true minimum with
``refprune.minimize``.  Each criterion (OBS on the exact Hessian, OBD with the exact
Hessian diagonal, magnitude; biases count as weights) then removes one weight at a time
while the training accuracy stays at its trained value, without retraining (OBS from one
inverse by elimination, ``obs_trace``; OBD and magnitude in their initial order) and with
retraining (re-minimising the free weights after every removal and recomputing the
criterion).  The papers report 58 -> 14, 39 -> 15 and 39 -> 4 weights.

    python validation/monks.py [--seeds 3]     # writes validation/results/monks.md and monks.png
"""

import argparse
import itertools
import sys

import numpy as np

import refprune as rp

VALUES = (3, 3, 2, 3, 4, 2)
LOSS = rp.MSELoss("sum")
WEIGHT_DECAY = 1e-4
PROBLEMS = {1: dict(hidden=3, train=124, noise=0.0, paper=14), 2: dict(hidden=2, train=169, noise=0.0, paper=15),
            3: dict(hidden=2, train=122, noise=0.05, paper=4)}
CRITERIA = ("OBS", "OBD", "magnitude")


def instances():
    """All 432 attribute tuples (values from 1) and their 17-dimensional one-hot codes."""
    A = np.array(list(itertools.product(*[range(1, v + 1) for v in VALUES])))
    X = np.concatenate([(A[:, [i]] == np.arange(1, v + 1)[None]).astype(float) for i, v in enumerate(VALUES)],
                       axis=1)
    return A, X


def label(problem, A):
    a1, a2, a3, a4, a5, a6 = A.T
    if problem == 1:
        return (a1 == a2) | (a5 == 1)
    if problem == 2:
        return (A == 1).sum(axis=1) == 2
    return ((a5 == 3) & (a4 == 1)) | ((a5 != 4) & (a2 != 3))


def data(problem, seed):
    """Training set (with the problem's label noise) and the full test set."""
    A, X = instances()
    y = label(problem, A).astype(float)[:, None]
    rng = np.random.default_rng(seed)
    spec = PROBLEMS[problem]
    idx = rng.choice(len(A), spec["train"], replace=False)
    ytr = y[idx].copy()
    flip = rng.choice(len(idx), int(round(spec["noise"] * len(idx))), replace=False)
    ytr[flip] = 1.0 - ytr[flip]
    return X[idx], ytr, X, y


def network(hidden):
    return rp.Sequential(rp.Linear(17, hidden), rp.Sigmoid(), rp.Linear(hidden, 1), rp.Sigmoid())


def accuracy(model, params, X, y):
    return float(np.mean((model(params, X) > 0.5) == (y > 0.5)))


def train(problem, seed, starts=5):
    """The best of a few trust-region runs from random starts (highest training accuracy)."""
    Xtr, ytr, Xte, yte = data(problem, seed)
    model = network(PROBLEMS[problem]["hidden"])
    best = None
    for s in range(starts):
        res = rp.minimize(model, [2.0 * p for p in model.init(seed=1000 * seed + s)], Xtr, ytr, LOSS,
                          weight_decay=WEIGHT_DECAY, gtol=1e-9, maxiter=2000)
        acc = accuracy(model, res.params, Xtr, ytr)
        if best is None or (acc, -res.objective) > (best[0], -best[1].objective):
            best = (acc, res)
    return model, best[1].params, Xtr, ytr, Xte, yte


def prune_without_retraining(criterion, model, params, Xtr, ytr, floor=None):
    """Remaining weights when the training accuracy first drops (below ``floor``, default
    its trained value), removing in one sweep."""
    start = accuracy(model, params, Xtr, ytr) if floor is None else floor
    n = model.n_params
    if criterion == "OBS":
        trace = rp.obs_trace(model, params, Xtr, ytr, LOSS, curvature="hessian", weight_decay=WEIGHT_DECAY,
                             include_bias=True, skip_emptied=True, evaluate_loss=False, indefinite="damp")
        thetas = trace.theta
    else:
        # magnitude has no loss model: weight decay is OBD's alone
        kw = dict(method="obd", curvature="hessian", weight_decay=WEIGHT_DECAY) if criterion == "OBD" else \
            dict(method="magnitude")
        s = rp.saliencies(model, params, Xtr, ytr, LOSS, include_bias=True, **kw)
        order = np.argsort(s, kind="stable")[: n - 2]
        thetas = [rp.flatten_params(params)]
        for q in order:
            t = thetas[-1].copy()
            t[q] = 0.0
            thetas.append(t)
    kept = 0
    for i, t in enumerate(thetas):
        if accuracy(model, rp.unflatten_params(model, t), Xtr, ytr) < start:
            break
        kept = i
    return n - kept, thetas[kept]


def prune_with_retraining(criterion, model, params, Xtr, ytr, floor=None):
    """Remove one weight, re-minimise the rest, repeat while training accuracy holds
    (stays at ``floor``, default its trained value)."""
    start = accuracy(model, params, Xtr, ytr) if floor is None else floor
    mask = np.ones(model.n_params, dtype=bool)
    current = params
    method = {"OBS": "obs", "OBD": "obd", "magnitude": "magnitude"}[criterion]
    kw = dict(curvature="hessian", indefinite="damp") if criterion == "OBS" else \
        dict(curvature="hessian") if criterion == "OBD" else {}
    import warnings

    while mask.sum() > 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rp.PruningWarning)
            r = rp.prune(model, current, Xtr, ytr, LOSS, method=method, count=1, mask=mask, include_bias=True,
                         skip_emptied=True, weight_decay=WEIGHT_DECAY, **kw)
        res = rp.minimize(model, r.params, Xtr, ytr, LOSS, weight_decay=WEIGHT_DECAY, mask=r.mask, gtol=1e-9,
                          maxiter=500)
        if accuracy(model, res.params, Xtr, ytr) < start:
            break
        mask, current = r.mask, res.params
    return int(mask.sum()), rp.flatten_params(current)


def run(seeds, problems=(1, 2, 3, "3*")):
    """``"3*"``: MONK-3 stopping at the noise level (training accuracy 1 - 5%) instead of
    at the trained accuracy, which includes fitting the noisy labels."""
    out = []
    for problem in problems:
        base = 3 if problem == "3*" else problem
        floor = 1.0 - PROBLEMS[3]["noise"] if problem == "3*" else None
        for seed in range(seeds):
            model, params, Xtr, ytr, Xte, yte = train(base, seed)
            row = dict(problem=problem, seed=seed, n=model.n_params, train=accuracy(model, params, Xtr, ytr),
                       test=accuracy(model, params, Xte, yte))
            for c in CRITERIA:
                for mode, fn in (("one sweep", prune_without_retraining), ("retrained", prune_with_retraining)):
                    left, theta = fn(c, model, params, Xtr, ytr, floor)
                    p = rp.unflatten_params(model, theta)
                    row[(c, mode)] = (left, accuracy(model, p, Xte, yte))
            out.append(row)
            print(f"MONK-{problem} seed {seed}: " + ", ".join(f"{c} {m}: {row[(c, m)][0]}" for c in CRITERIA
                                                              for m in ("one sweep", "retrained")), file=sys.stderr)
    return out


def summarise(rows, seeds):
    from report import table

    lines = ["# MONK's problems (Thrun et al. 1991; Hassibi, Stork & Wolff 1993)", "",
             f"Instances generated by the published rules; training sets drawn from the 432 with seeds 0..{seeds - 1}; "
             f"sigmoid networks trained to a minimum of the summed squared error plus {WEIGHT_DECAY:g}/2 |theta|^2 "
             "(best of 5 trust-region runs); weights removed one at a time while the training accuracy stays at its "
             "trained value. Cells: remaining weights (test accuracy on all 432), mean over seeds, and the range. "
             "Written by `python validation/monks.py`.", ""]
    body = []
    for problem in [p for p in (1, 2, 3, "3*") if any(r["problem"] == p for r in rows)]:
        rs = [r for r in rows if r["problem"] == problem]
        name = "MONK-3, stop at 95% training accuracy" if problem == "3*" else f"MONK-{problem}"
        cells = [name, f"{rs[0]['n']}", f"{PROBLEMS[3 if problem == '3*' else problem]['paper']}",
                 f"{np.mean([r['train'] for r in rs]):.3f} / {np.mean([r['test'] for r in rs]):.3f}"]
        for c in CRITERIA:
            for mode in ("one sweep", "retrained"):
                left = [r[(c, mode)][0] for r in rs]
                acc = np.mean([r[(c, mode)][1] for r in rs])
                cells.append(f"{np.mean(left):.1f} [{min(left)}-{max(left)}] ({acc:.3f})")
        body.append(cells)
    header = ["problem", "weights", "paper (OBS)", "trained train / test acc."] + \
        [f"{c}, {m}" for c in CRITERIA for m in ("one sweep", "retrained")]
    lines += table(header, body)

    def mean(problem, c, mode):
        return np.mean([r[(c, mode)][0] for r in rows if r["problem"] == problem])

    lines += ["", "## Findings", ""]
    for problem in (1, 2, 3):
        if not any(r["problem"] == problem for r in rows):
            continue
        paper, obs = PROBLEMS[problem]["paper"], mean(problem, "OBS", "retrained")
        verdict = "reproduces" if abs(obs - paper) <= 2 else "does not reproduce"
        lines.append(f"- MONK-{problem}: OBS with retraining keeps {obs:.1f} weights on average against the paper's "
                     f"{paper}: {verdict}. Without retraining OBS keeps {mean(problem, 'OBS', 'one sweep'):.1f}, "
                     f"OBD {mean(problem, 'OBD', 'one sweep'):.1f} and magnitude "
                     f"{mean(problem, 'magnitude', 'one sweep'):.1f}; with retraining OBD keeps "
                     f"{mean(problem, 'OBD', 'retrained'):.1f} and magnitude {mean(problem, 'magnitude', 'retrained'):.1f}.")
    if any(r["problem"] == "3*" for r in rows):
        lines.append(f"- MONK-3's trained networks fit part of the 5% label noise, and stopping when that fit is "
                     f"lost keeps many weights. Stopping at the noise level instead (training accuracy 95%) OBS keeps "
                     f"{mean('3*', 'OBS', 'retrained'):.1f} weights with retraining; the paper's 4 weights suggest a "
                     "stopping rule of that kind, which the papers do not state exactly. The original training files "
                     "are not reproduced here (sets are drawn from the 432 instances), another source of difference.")
    lines.append("- Magnitude pruning with retraining after every removal is a strong baseline on these tiny "
                 "networks: retraining repairs what the criterion got wrong, so the criterion matters most without "
                 "it (the one-sweep columns), where OBS keeps far fewer weights than OBD or magnitude.")
    lines += ["", "![remaining weights](monks.png)", ""]
    return lines


def figure(rows):
    from report import pyplot, save

    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6), sharey=True)
    for ax, problem in zip(axes, (1, 2, 3, "3*")):
        rs = [r for r in rows if r["problem"] == problem]
        if not rs:
            continue
        labels, vals = [], []
        for c in CRITERIA:
            for mode in ("one sweep", "retrained"):
                labels.append(f"{c}\n{mode}")
                vals.append([r[(c, mode)][0] for r in rs])
        ax.boxplot(vals)
        ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=7)
        ax.axhline(PROBLEMS[3 if problem == "3*" else problem]["paper"], color="r", ls="--", lw=1,
                   label="paper (OBS)")
        ax.set_title(f"MONK-3, stop at 95%" if problem == "3*" else f"MONK-{problem} ({rs[0]['n']} weights)")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("weights remaining")
    return save(fig, "monks.png")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args(argv)
    from report import write

    rows = run(args.seeds)
    lines = summarise(rows, args.seeds)
    figure(rows)
    print(write("monks.md", lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
