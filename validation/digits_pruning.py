"""Pruning criteria on scikit-learn's handwritten digits (needs the ``validation`` extra).

Trains an MLP 64-32-10 (tanh) on 1,000 digits, then prunes it one-shot to a range of
sparsities with magnitude, OBD (exact Hessian diagonal), OBS (GGN; one-shot and in five
rounds with the curvature recomputed), WoodFisher and layer-wise OBS, and reports held-out accuracy, the predicted loss increase and the actual
one.  Two figures: accuracy against sparsity, and predicted against actual loss change
(the diagonal is a perfect quadratic model; the last round of an iterative run is not
comparable, so only one-shot runs are drawn there).  Usage::

    pip install -e '.[validation]'
    python validation/digits_pruning.py [--out validation/out]
"""

import argparse
import os
import sys

import numpy as np

import refprune as rp


def load():
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        sys.exit("this study needs scikit-learn: pip install 'refprune[validation]'")
    d = load_digits()
    X = d.data / 16.0
    X = (X - X.mean(0)) / (X.std(0) + 1e-8)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(X))
    tr, te = idx[:1000], idx[1000:]
    return X[tr], d.target[tr], X[te], d.target[te]


METHODS = {
    "magnitude": dict(method="magnitude"),
    "OBD (exact diag)": dict(method="obd", diagonal="exact"),
    "OBS (GGN)": dict(method="obs", curvature="ggn", damping=1e-4),
    "OBS (GGN), 5 rounds": dict(method="obs", curvature="ggn", damping=1e-4, steps=5),
    "WoodFisher": dict(method="woodfisher", damping=1e-4),
    "layer-wise OBS": dict(method="layer_obs", damping=1e-6),
}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out"))
    ap.add_argument("--epochs", type=int, default=40)
    args = ap.parse_args(argv)
    Xtr, ytr, Xte, yte = load()
    model = rp.Sequential(rp.Linear(64, 32), rp.Tanh(), rp.Linear(32, 10))
    loss = rp.CrossEntropyLoss()
    params, hist = rp.train(model, model.init(0), Xtr, ytr, loss, epochs=args.epochs, batch_size=50, lr=0.05,
                            momentum=0.9, weight_decay=1e-4, seed=0)
    acc = lambda m, p: float(np.mean(m(p, Xte).argmax(1) == yte))  # noqa: E731
    print(f"trained {model.n_params} parameters: train loss {hist[-1]:.4f}, test accuracy {acc(model, params):.3f}")
    sparsities = [0.2, 0.4, 0.6, 0.8, 0.9]
    results = {}
    print(f"{'method':18s} {'sparsity':>8s} {'predicted':>10s} {'actual':>10s} {'no update':>10s} {'test acc':>8s}")
    for name, kw in METHODS.items():
        rows = []
        for s in sparsities:
            r = rp.prune(model, params, Xtr, ytr, loss, sparsity=s, **kw)
            st = r.steps[-1]
            rows.append((s, st.predicted, st.actual, st.actual_without_update, acc(r.model, r.params)))
            print(f"{name:18s} {s:8.2f} {st.predicted:10.4f} {st.actual:10.4f} {st.actual_without_update:10.4f} "
                  f"{rows[-1][-1]:8.3f}", flush=True)
        results[name] = np.array(rows)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plots need matplotlib: pip install 'refprune[validation]'")
    os.makedirs(args.out, exist_ok=True)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for k, (name, r) in enumerate(results.items()):
        color = f"C{k}"
        a1.plot(r[:, 0], r[:, 4], marker="o", label=name, color=color)
        if name not in ("magnitude", "layer-wise OBS") and "rounds" not in name:
            a2.loglog(np.maximum(r[:, 1], 1e-6), np.maximum(r[:, 2], 1e-6), marker="o", label=name, color=color)
    a1.set_xlabel("sparsity (fraction of weights removed)")
    a1.set_ylabel("test accuracy")
    a1.set_title("Pruning an MLP 64-32-10 on digits (no retraining)")
    a1.legend()
    lim = [1e-6, 10]
    a2.plot(lim, lim, "k--", lw=1, label="predicted = actual")
    a2.set_xlabel("predicted loss increase (quadratic model)")
    a2.set_ylabel("actual loss increase")
    a2.set_title("Quality of each criterion's loss model")
    a2.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(args.out, "digits_pruning.png")
    fig.savefig(path, dpi=110)
    print(f"figure written to {path}")


if __name__ == "__main__":
    main()
