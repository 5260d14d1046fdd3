"""Demo: train a small network on built-in data, summarise its exact Hessian and
compare pruning criteria by predicted and actual loss change.

Run ``python -m refprune.demo`` (``--help`` for options).  The data set is three
interleaved spirals in the plane, generated here (no download).  After full-batch
training with momentum, the exact Hessian, GGN and residual at the trained point are
computed and their spectra summarised: the Hessian's negative eigenvalues all come from
the residual term, since the GGN is positive semi-definite.  Then the trained net is
pruned one-shot by several criteria, each reporting the loss increase its quadratic
model predicted next to the increase actually observed (with and without the
criterion's update of the remaining weights).  ``--net conv`` does the same for a small
conv net on generated 8x8 images of bars.  With ``--plot FILE`` (needs matplotlib)
the three spectra are drawn.
"""

import os
import sys
import time
import warnings

import numpy as np

import refprune as rp
from refprune.cli_parsing import OneLineParser, nonnegative_int, positive_float, positive_int


def spirals(n_per_class=60, classes=3, noise=0.35, seed=0):
    """``classes`` interleaved spiral arms in 2-d: ``X (N, 2)``, labels ``y (N,)``."""
    rng = np.random.default_rng(seed)
    t = np.sqrt(rng.uniform(0.05, 1.0, size=(classes, n_per_class)))
    angle = 3.5 * t + 2 * np.pi * np.arange(classes)[:, None] / classes
    X = np.stack([t * np.cos(angle), t * np.sin(angle)], axis=-1).reshape(-1, 2)
    X += noise * t.reshape(-1, 1) * rng.standard_normal(X.shape)
    y = np.repeat(np.arange(classes), n_per_class)
    return X, y


def bars(n_per_class=40, size=8, noise=0.3, seed=0):
    """Images ``(N, 1, size, size)`` of a horizontal, a vertical or a diagonal bar at a
    random position, with Gaussian noise; labels ``(N,)`` 0, 1, 2 (for the conv net)."""
    rng = np.random.default_rng(seed)
    X = noise * rng.standard_normal((3 * n_per_class, 1, size, size))
    y = np.repeat(np.arange(3), n_per_class)
    pos = rng.integers(1, size - 1, 3 * n_per_class)
    idx = np.arange(size)
    for i, (label, p) in enumerate(zip(y, pos)):
        if label == 0:
            X[i, 0, p, :] += 1.0
        elif label == 1:
            X[i, 0, :, p] += 1.0
        else:
            X[i, 0, idx, (idx + p) % size] += 1.0
    return X, y


def train(model, params, X, y, loss, steps, lr, momentum, log_every, out=None):
    """Full-batch gradient descent with momentum, logging loss and accuracy."""
    out = sys.stdout if out is None else out
    theta = rp.flatten_params(params)
    vel = np.zeros_like(theta)
    for step in range(steps + 1):
        p = rp.unflatten_params(model, theta)
        if step % log_every == 0 or step == steps:
            acc = np.mean(model(p, X).argmax(1) == y)
            print(f"  step {step:5d}  loss {rp.loss(model, p, X, y, loss):.4f}  accuracy {acc:.3f}", file=out)
        if step == steps:
            return p
        vel = momentum * vel - lr * rp.grad(model, p, X, y, loss)
        theta = theta + vel


def summarise(name, eig, out=None):
    """One line on a spectrum: trace, extremes, negative and zero eigenvalues."""
    out = sys.stdout if out is None else out
    # eigenvalues within rounding of zero (relative to the largest) count as zero
    tiny = 1e-10 * max(1.0, np.abs(eig).max())
    neg = eig[eig < -tiny]
    print(
        f"  {name:9s} trace {eig.sum():9.4f}  largest {eig[-1]:9.4f}  smallest {eig[0]:9.4f}  "
        f"negative {len(neg):4d} (sum {neg.sum():8.4f})  zero {np.sum(np.abs(eig) <= tiny):4d}",
        file=out,
    )


def _check_picture(ap, option, path):
    """Refuse (one line, exit status 2) a picture that could not be saved: matplotlib
    missing, or a directory that does not exist or cannot be written."""
    from . import plot

    try:
        plot.pyplot()
    except ImportError as err:
        ap.error(f"{option} {path}: {err}")
    where = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        ap.error(f"{option} {path}: is a directory; give a file name such as {os.path.join(path, 'spectra.png')}")
    if not os.path.isdir(where):
        ap.error(f"{option} {path}: the directory {where} does not exist")
    if not os.access(where, os.W_OK):
        ap.error(f"{option} {path}: the directory {where} is not writable")


def main(argv=None):
    """Run the demo (``--help`` for the options); returns 0."""
    ap = OneLineParser(prog="refprune demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--net", choices=("mlp", "conv"), default="mlp",
                    help="mlp: two tanh layers on 2-d spirals; conv: a conv net on 8x8 images of bars")
    ap.add_argument("--hidden", type=positive_int, default=16, help="width of the hidden layers (channels for conv)")
    ap.add_argument("--steps", type=positive_int, default=500, help="full-batch training steps")
    ap.add_argument("--lr", type=positive_float, default=0.05)
    ap.add_argument("--seed", type=nonnegative_int, default=0)
    ap.add_argument("--plot", metavar="FILE", help="save the spectra as a PNG (needs matplotlib)")
    ap.add_argument("--heatmaps", metavar="FILE", help="save the Hessian, GGN, K-FAC, EKFAC and diagonal side by "
                                                       "side as a PNG (needs matplotlib)")
    args = ap.parse_args(argv)
    for option in ("plot", "heatmaps"):  # checked before the run, which takes a while
        if getattr(args, option) is not None:
            _check_picture(ap, f"--{option}", getattr(args, option))

    if args.net == "conv":
        X, y = bars(seed=args.seed)
        c = min(args.hidden, 8)
        model = rp.Sequential(rp.Conv2d(1, c, 3), rp.Tanh(), rp.AvgPool2d(2), rp.Flatten(), rp.Linear(c * 9, 3))
        what = f"{len(X)} images of bars (8x8), 3 classes"
    else:
        X, y = spirals(seed=args.seed)
        model = rp.Sequential(rp.Linear(2, args.hidden), rp.Tanh(), rp.Linear(args.hidden, args.hidden), rp.Tanh(),
                              rp.Linear(args.hidden, 3))
        what = f"{len(X)} spiral points, 3 classes"
    loss = rp.CrossEntropyLoss()
    print(f"refprune demo: {what}\n{model}\nparameters: {model.n_params}")
    print(f"training ({args.steps} full-batch steps, momentum 0.9):")
    params = train(model, model.init(args.seed), X, y, loss, args.steps, args.lr, 0.9, max(1, args.steps // 5))

    t = time.perf_counter()
    H = rp.hessian(model, params, X, y, loss)
    G = rp.ggn(model, params, X, y, loss)
    R = rp.residual(model, params, X, y, loss)
    elapsed = time.perf_counter() - t
    print(f"exact Hessian, GGN and residual ({H.shape[0]} x {H.shape[0]}) in {elapsed:.3f} s")
    eigs = {name: np.linalg.eigvalsh(M) for name, M in (("Hessian", H), ("GGN", G), ("residual", R))}
    print("spectra at the trained point:")
    for name, e in eigs.items():
        summarise(name, e)
    print(f"  |H - (GGN + residual)|_max = {np.abs(H - G - R).max():.1e};  "
          f"||residual||_F / ||H||_F = {np.linalg.norm(R) / np.linalg.norm(H):.3f}")

    print(f"one-shot pruning of the trained net (loss {rp.loss(model, params, X, y, loss):.4f}):")
    print(f"  {'method':22s} {'removed':>8s} {'predicted':>10s} {'actual':>10s} {'no update':>10s} "
          f"{'accuracy':>8s} {'params':>6s}")
    runs = [
        ("magnitude 50%", dict(method="magnitude", sparsity=0.5)),
        ("OBD (exact diag) 50%", dict(method="obd", sparsity=0.5, diagonal="exact")),
        ("OBS (GGN) 50%", dict(method="obs", sparsity=0.5, curvature="ggn", damping=1e-4)),
        ("WoodFisher 50%", dict(method="woodfisher", sparsity=0.5, damping=1e-4)),
        ("layer-wise OBS 50%", dict(method="layer_obs", sparsity=0.5, damping=1e-6)),
        ("Kron-OBS 25% units", dict(method="kron_obs", sparsity=0.25, damping=1e-4)),
        ("EigenDamage 40% dirs", dict(method="eigendamage", sparsity=0.4)),
    ]
    for name, kw in runs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rp.PruningWarning)
            r = rp.prune(model, params, X, y, loss, **kw)
        if not r.steps:
            print(f"  {name:22s} nothing to remove at this size")
            continue
        st = r.steps[-1]
        acc = np.mean(r.model(r.params, X).argmax(1) == y)
        print(f"  {name:22s} {len(st.removed):8d} {st.predicted:10.4f} {st.actual:10.4f} "
              f"{st.actual_without_update:10.4f} {acc:8.3f} {r.model.n_params:6d}")
    print("  (layer-wise OBS predicts its layer-wise objective, not the loss; magnitude has no loss model)")

    if args.plot or args.heatmaps:
        from . import plot

        if args.plot:
            plot.spectra(eigs, path=args.plot, linthresh=1e-4)
            print(f"spectra plotted to {args.plot}")
        if args.heatmaps:
            args_ = (model, params, X, y, loss)
            plot.heatmaps({"Hessian": rp.hessian(*args_), "GGN": rp.ggn(*args_),
                           "K-FAC": rp.kfac(*args_).to_dense(), "EKFAC": rp.ekfac(*args_).to_dense(),
                           "diagonal": np.diag(rp.hessian_diagonal(*args_))}, path=args.heatmaps)
            print(f"heatmaps of the Hessian and its approximations drawn to {args.heatmaps}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
