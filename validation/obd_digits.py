"""LeCun, Denker & Solla (1990), Optimal Brain Damage, on scikit-learn's digits.

An MLP 64-16-10 (tanh, softmax cross-entropy plus a weight decay that gives the
objective a finite minimum) is trained by SGD and then taken to a true minimum with
``refprune.minimize``.  For every weight alone: the increase each criterion predicts and
the increase observed when it is removed (zeroed for magnitude and OBD; with OBS's update
for OBS), with their correlations; then the loss against the fraction removed, one-shot
and in five rounds (curvature recomputed each round, no retraining).

    python validation/obd_digits.py            # writes validation/results/obd_digits.md and two PNGs
    python validation/obd_digits.py --quick    # a tiny instance, to try it (not the study)
"""

import argparse
import sys

import numpy as np

import refprune as rp
from datasets import digits

WEIGHT_DECAY = 1e-3
LOSS = rp.CrossEntropyLoss()
#: (training digits, hidden units, SGD epochs, fractions swept): the study's and --quick's
STUDY = (1000, 16, 30, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
QUICK = (60, 4, 2, [0.5, 0.9])


def objective(model, theta, X, y, loss=LOSS):
    return rp.loss(model, rp.unflatten_params(model, theta), X, y, loss) + WEIGHT_DECAY / 2 * theta @ theta


def per_weight(model, params, X, y, loss=LOSS):
    """Predicted and actual increase of removing each weight alone, per criterion."""
    theta = rp.flatten_params(params)
    weights = np.flatnonzero(rp.prunable_mask(model))
    H = rp.hessian(model, params, X, y, loss) + WEIGHT_DECAY * np.eye(theta.size)
    Hinv = np.linalg.inv(H)
    L0 = objective(model, theta, X, y, loss)
    zeroed, obs = np.empty(weights.size), np.empty(weights.size)
    for i, q in enumerate(weights):
        t = theta.copy()
        t[q] = 0.0
        zeroed[i] = objective(model, t, X, y, loss) - L0
        t = theta - theta[q] / Hinv[q, q] * Hinv[:, q]
        t[q] = 0.0
        obs[i] = objective(model, t, X, y, loss) - L0
    w = theta[weights]
    diag_obd = rp.obd_diagonal(model, params, X, y, loss)[weights] + WEIGHT_DECAY
    diag_lm = rp.obd_diagonal(model, params, X, y, loss, levenberg_marquardt=True)[weights] + WEIGHT_DECAY
    return {
        "magnitude": (np.abs(w), zeroed),
        "OBD, exact diagonal": (w**2 * np.diag(H)[weights] / 2, zeroed),
        "OBD, LeCun's diagonal": (w**2 * diag_obd / 2, zeroed),
        "OBD, Levenberg-Marquardt": (w**2 * diag_lm / 2, zeroed),
        "OBS": (w**2 / (2 * np.diag(Hinv)[weights]), obs),
    }


def spearman(a, b):
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


LECUN = "OBD (LeCun's diagonal)"
METHODS = {"magnitude": dict(method="magnitude"),
           "OBD (exact diagonal)": dict(method="obd", curvature="hessian"),
           LECUN: dict(method="obd", diagonal="obd"),
           "OBS (Hessian)": dict(method="obs", curvature="hessian", indefinite="damp")}


def sweep(model, params, X, y, Xte, yte, fractions):
    import warnings

    out = {}
    for name, kw in METHODS.items():
        for steps in (1, 5):
            losses, accs = [], []
            for f in fractions:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", rp.PruningWarning)
                    r = rp.prune(model, params, X, y, LOSS, sparsity=f, steps=steps, weight_decay=WEIGHT_DECAY,
                                 **kw)
                losses.append(r.steps[-1].loss)
                accs.append(float(np.mean(model(r.params, Xte).argmax(1) == yte)))
            out[(name, steps)] = (losses, accs)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a tiny instance, to try it (not the study)")
    ap.add_argument("--out", default=None, help="directory for the report and figures (default validation/results; "
                                                "validation/out/quick with --quick)")
    args = ap.parse_args(argv)
    from report import output_dir, pyplot, readme_row, save, table, write

    out = output_dir(args.out, args.quick)
    n_train, hidden, epochs, fractions = QUICK if args.quick else STUDY
    X, y, Xte, yte = digits(n_train=n_train)
    model = rp.Sequential(rp.Linear(64, hidden), rp.Tanh(), rp.Linear(hidden, 10))
    params, _ = rp.train(model, model.init(0), X, y, LOSS, epochs=epochs, batch_size=50, lr=0.1,
                         weight_decay=WEIGHT_DECAY, seed=0)
    res = rp.minimize(model, params, X, y, LOSS, weight_decay=WEIGHT_DECAY)
    params = res.params
    acc = float(np.mean(model(params, Xte).argmax(1) == yte))
    pw = per_weight(model, params, X, y)
    lines = ["# Optimal Brain Damage on digits (LeCun, Denker & Solla 1990)"
             + (" — a tiny instance, not the study" if args.quick else ""), "",
             f"MLP 64-{hidden}-10 (tanh), {model.n_params} parameters, {n_train:,} training digits; objective "
             "cross-entropy plus "
             f"{WEIGHT_DECAY:g}/2 |theta|^2 at a minimum found by `refprune.minimize` (gradient max-norm "
             f"{res.grad_norm:.1e}, smallest Hessian eigenvalue {res.min_eigenvalue:.2e}); test accuracy {acc:.3f} on "
             f"{len(Xte)} held-out digits. Written by `python validation/obd_digits.py`"
             + (" with `--quick`" if args.quick else "") + ".", "",
             "## Each weight removed alone", "",
             "Actual: the objective's change when the weight is zeroed (OBS: with its update).", ""]
    body, median = [], {}
    for name, (pred, actual) in pw.items():
        pear = "n/a" if name == "magnitude" else f"{np.corrcoef(pred, actual)[0, 1]:.3f}"
        nz = actual != 0
        median[name] = None if name == "magnitude" else float(np.median(np.abs(pred - actual)[nz] / np.abs(actual[nz])))
        rel = "n/a" if name == "magnitude" else f"{median[name]:.3f}"
        body.append((name, pear, f"{spearman(pred, actual):.3f}", rel))
    lines += table(["criterion", "Pearson (predicted, actual)", "Spearman", "median |pred - actual| / actual"],
                   body)
    sw = sweep(model, params, X, y, Xte, yte, fractions)
    lines += ["", "## Objective and test accuracy against the fraction of weights removed (no retraining)", ""]
    rows = []
    for (name, steps), (losses, accs) in sw.items():
        rows.append([f"{name}, {'one-shot' if steps == 1 else '5 rounds'}"] +
                    [f"{l:.3f} ({a:.2f})" for l, a in zip(losses, accs)])
    lines += table(["criterion"] + [f"{f:.0%}" for f in fractions], rows)
    at90 = {k: v[1][-1] for k, v in sw.items()}
    mag = np.array(sw[("magnitude", 1)][0])
    obd_wins = int(np.sum(np.array(sw[("OBD (exact diagonal)", 1)][0]) <= mag))
    lecun_wins = int(np.sum(np.array(sw[(LECUN, 1)][0]) <= mag))
    lines += ["", "## Findings", "",
              "- Weight by weight, OBD with the exact diagonal predicts the increase of zeroing a weight closely at "
              "this minimum; LeCun's diagonal (cross terms between units dropped) is nearly as good, and the "
              "Levenberg-Marquardt variant (also without the phi'' term) is worse, in the order the paper "
              "discusses. OBS's saliency ranks weights as well (Spearman above), and its prediction is for the "
              "removal *with* its update, which changes the loss less.",
              f"- At 90% removed without retraining, test accuracy is {at90[('OBS (Hessian)', 1)]:.2f} for OBS, "
              f"{at90[('OBD (exact diagonal)', 1)]:.2f} for OBD (exact diagonal), "
              f"{at90[(LECUN, 1)]:.2f} for OBD (LeCun's diagonal) and "
              f"{at90[('magnitude', 1)]:.2f} for magnitude. Recomputing the curvature in 5 rounds helps the "
              "second-order criteria; magnitude has nothing to recompute, so its rounds change nothing.",
              f"- LeCun et al. report that OBD's ranking removes weights at a lower cost than magnitude's. Here, "
              f"one-shot, OBD (exact diagonal) leaves a lower objective than magnitude at {obd_wins} of "
              f"{len(fractions)} fractions (LeCun's diagonal: {lecun_wins}); "
              + ("this reproduces." if obd_wins == len(fractions) else
                 "this does not hold at every fraction: at large fractions the removed weights interact, which "
                 "a diagonal model cannot see, and without retraining the damage compounds.")
              + " The per-weight estimate itself is good (first row of findings). The paper retrains between "
              "rounds, which this study does not.",
              "", "![per-weight prediction](obd_digits_scatter.png)", "", "![sweep](obd_digits_sweep.png)", ""]
    # the README's row, from the numbers above (validation/readme_table.py)
    losing = [f"{f:.0%}" for f, o, m in zip(fractions, sw[("OBD (exact diagonal)", 1)][0], mag) if o > m]
    lecun = median["OBD, LeCun's diagonal"]
    reproduced = (f"per-weight predictions: median relative error of exact-diagonal OBD "
                  f"{median['OBD, exact diagonal']:.1%}, LeCun's diagonal {lecun:.1%}, "
                  f"Levenberg-Marquardt {median['OBD, Levenberg-Marquardt']:.1%}; OBD's one-shot objective at or "
                  f"below magnitude's at {obd_wins} of {len(fractions)} fractions")
    not_reproduced = ("" if not losing else
                      f"at {', '.join(losing)} removed without retraining OBD is worse than magnitude (interacting "
                      "removals; the paper retrains)")
    lines += [readme_row("LeCun et al. 1990, OBD on digits", "`python validation/obd_digits.py`", reproduced,
                         not_reproduced)]

    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    for ax, name in zip(axes, [k for k in pw if k != "magnitude"]):
        pred, actual = pw[name]
        ax.loglog(np.maximum(pred, 1e-10), np.maximum(np.abs(actual), 1e-10), ".", ms=2)
        lim = [1e-10, max(pred.max(), np.abs(actual).max()) * 2]
        ax.plot(lim, lim, "k--", lw=1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("predicted increase")
    axes[0].set_ylabel("|actual increase|")
    save(fig, "obd_digits_scatter.png", out)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for (name, steps), (losses, accs) in sw.items():
        ls = "-" if steps == 1 else "--"
        axes[0].semilogy(fractions, losses, ls, marker="o", ms=3, label=f"{name}{'' if steps == 1 else ', 5 rounds'}")
        axes[1].plot(fractions, accs, ls, marker="o", ms=3)
    axes[0].set_xlabel("fraction of weights removed")
    axes[0].set_ylabel("objective")
    axes[1].set_xlabel("fraction of weights removed")
    axes[1].set_ylabel("test accuracy")
    axes[0].legend(fontsize=7)
    save(fig, "obd_digits_sweep.png", out)
    print(write("obd_digits.md", lines, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
