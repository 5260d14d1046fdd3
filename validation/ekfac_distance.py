"""George et al. (2018), EKFAC: a construction check of the Frobenius distance to the Fisher.

EKFAC's distance to the Fisher is at most K-FAC's by construction: in K-FAC's eigenbasis
``Q`` EKFAC takes the eigenvalues ``kappa = diag(Q^T F_l Q)`` from the same Fisher blocks
``F_l`` it is compared with, the Frobenius-closest diagonal in that basis, of which
K-FAC's own eigenvalues are one candidate.  So this study checks the implementation (every
ratio must be at most 1); it does not test the paper's claim that EKFAC trains faster,
which ``validation/natural_gradient_digits.py`` does.

For trained networks on scikit-learn's digits (an MLP and a small conv net), for each
curvature K-FAC approximates (GGN, Monte Carlo Fisher, empirical Fisher) and each layer,
the Frobenius distances ``||F_l - KFAC_l||`` and ``||F_l - EKFAC_l||`` to the exact layer
block ``F_l`` of that matrix (computed by refprune's exact assembly).

    python validation/ekfac_distance.py            # writes validation/results/ekfac_distance.md
    python validation/ekfac_distance.py --quick    # a tiny instance, to try it (not the study)
"""

import report  # noqa: F401,I001 (first: pins the BLAS thread count before NumPy loads)

import argparse
import sys

import numpy as np

import refprune as rp
from datasets import digits
from report import Criterion, output_dir, readme_row, table, verdict, write

CURVATURES = ("ggn", "mc_fisher", "empirical_fisher")
PAPER = "George et al. 2018, EKFAC (distance to the Fisher)"
COMMAND = "python validation/ekfac_distance.py"
#: the study's sizes: training digits and SGD epochs; --quick takes the second
N_TRAIN, QUICK_N_TRAIN = 400, 40
EPOCHS, QUICK_EPOCHS = 30, 2
#: rounding allowed above the bound 1 (the two distances are computed from the same blocks)
ROUNDING = 1e-12


def distances(model, params, X, y, loss, approx="expand", samples=4, seed=0):
    """Rows ``(curvature, layer index, ||F - KFAC||, ||F - EKFAC||, ||F||)``."""
    rows = []
    blocks = {}
    for curv in CURVATURES:
        mc = dict(samples=samples, seed=seed) if curv == "mc_fisher" else {}
        exact = rp.block_diagonal(model, params, X, y, loss, curvature=curv, **mc)
        K = rp.kfac(model, params, X, y, loss, curvature=curv, approx=approx, **mc)
        E = rp.ekfac(model, params, X, y, loss, curvature=curv, approx=approx, **mc)
        blocks[curv] = exact
        for F, (a, e), kb, eb in zip(exact.blocks, exact.ranges(), K.blocks, E.blocks):
            rows.append((curv, a, float(np.linalg.norm(F - kb.dense())), float(np.linalg.norm(F - eb.dense())),
                         float(np.linalg.norm(F))))
    return rows


def nets():
    mlp = rp.Sequential(rp.Flatten(), rp.Linear(64, 16), rp.Tanh(), rp.Linear(16, 10))
    conv = rp.Sequential(rp.Conv2d(1, 4, 3, padding=1), rp.ReLU(), rp.MaxPool2d(2), rp.Conv2d(4, 6, 3),
                         rp.Tanh(), rp.Flatten(), rp.Linear(24, 10))
    return {"MLP 64-16-10 (tanh)": mlp, "conv 4c3-pool-6c3-10 (ReLU, tanh)": conv}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a tiny instance, to try it (not the study)")
    ap.add_argument("--out", default=None, help="directory for the report (default validation/results; "
                                                "validation/out/quick with --quick)")
    args = ap.parse_args(argv)
    n_train, epochs = (QUICK_N_TRAIN, QUICK_EPOCHS) if args.quick else (N_TRAIN, EPOCHS)
    X, y = digits(n_train=n_train, images=True)[:2]
    loss = rp.CrossEntropyLoss()
    lines = ["# EKFAC against K-FAC: Frobenius distance to the Fisher, a construction check (George et al. 2018)"
             + (" — a tiny instance, not the study" if args.quick else ""), "",
             "EKFAC's distance to the Fisher is at most K-FAC's by construction: its eigenvalues (kappa) are "
             "computed from the same Fisher blocks they are compared with, as the Frobenius-closest diagonal in "
             "K-FAC's eigenbasis, of which K-FAC's own eigenvalues are one candidate. This report checks the "
             "implementation against that bound; the paper's claim (EKFAC optimises faster) is tested by "
             "`validation/natural_gradient_digits.py`.", "",
             f"{len(X)} digits; networks trained {epochs} epochs by SGD; Monte Carlo Fisher with 4 samples per "
             f"point; KFC expand for the convolutions. Distances relative to ||F_l||. Written by `{COMMAND}`"
             + (" with `--quick`" if args.quick else "") + ".", ""]
    worst, count = 0.0, 0
    for name, model in nets().items():
        params, _ = rp.train(model, model.init(0), X, y, loss, epochs=epochs, batch_size=32, lr=0.05, seed=0)
        acc = float(np.mean(model(params, X).argmax(1) == y))
        rows = distances(model, params, X, y, loss)
        lines += [f"## {name}, {model.n_params} parameters, training accuracy {acc:.3f}", ""]
        body = []
        names = {int(o): f"{j}: {layer!r}" for j, (o, layer) in enumerate(zip(model.param_offsets(), model))
                 if isinstance(layer, rp.nn.AffineLayer)}
        for curv, a, dk, de, nf in rows:
            worst = max(worst, de / dk)
            count += 1
            body.append((curv, names[a], f"{dk / nf:.4f}", f"{de / nf:.4f}", f"{de / dk:.3f}"))
        lines += table(["curvature", "layer", "K-FAC", "EKFAC", "EKFAC / K-FAC"], body) + [""]
    bound = Criterion(f"at most the bound, up to {ROUNDING:g} for rounding",
                      lambda measured, paper: measured <= paper + ROUNDING)
    v = verdict(f"the largest ratio ||F - EKFAC|| / ||F - KFAC|| over {count} layer blocks (every layer, network "
                "and curvature)", worst, 1.0, bound, show=lambda x: f"{x:.3f}")
    lines += ["## Finding (computed from the tables above)", "",
              "- " + v.sentence.replace(" in the paper", " by construction")
              .replace("; reproduces.", "; the bound holds.")
              .replace("; does not reproduce.", "; the bound is violated."),
              "- This checks refprune's EKFAC (its eigenvalues are the Frobenius-closest diagonal in K-FAC's "
              "eigenbasis); it is not evidence for the paper's claim about optimisation, which the optimizer "
              "study carries.", ""]
    check = (f"construction check: EKFAC never farther from the Fisher than K-FAC (largest ratio {worst:.3f} over "
             f"{count} layer blocks, bound 1 by construction); the paper's claim is the optimizer study's")
    lines += [readme_row(PAPER, f"`{COMMAND}`", check if v.holds else "",
                         "" if v.holds else f"construction check failed: largest ratio {worst:.3f} > 1, a bug in "
                         "EKFAC's eigenvalues")]
    print(write("ekfac_distance.md", lines, out=output_dir(args.out, args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
