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

import sys
import time
import warnings

import numpy as np

import refprune as rp
from refprune.cli_parsing import OneLineParser, add_options, parse_checked


# what the columns of the pruning table mean (README "Demo" repeats it)
LEGEND = """\
  removed: weights (Kron-OBS: units; EigenDamage: eigen-directions) removed in one step.
  predicted: the loss increase the criterion's quadratic model predicts for its step
    (layer-wise OBS: its layer-wise objective, not the loss; magnitude has no loss model: nan).
  actual: the loss increase observed after the step, with the criterion's update of the
    remaining weights (OBS, WoodFisher, layer-wise OBS and Kron-OBS move them to compensate).
  no update: the loss increase observed when the removed weights are only set to zero and
    every other weight keeps its trained value; equal to actual for magnitude and OBD,
    which update nothing (EigenDamage removes eigen-directions: the column repeats actual).
  accuracy: training accuracy after the step; params: parameters of the pruned network
    (fewer only where whole units or directions are cut out)."""


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
    """Full-batch gradient descent with momentum, logging loss and accuracy;
    ``FloatingPointError`` once a step overflows the parameters."""
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
        if not np.all(np.isfinite(theta)):
            # a step that overflows the parameters; behind a saturated tanh the output can
            # stay finite, and the next gradient would refuse the parameters as bad input
            # (a ValueError) instead of naming the divergence
            raise FloatingPointError(f"the parameters overflowed to inf or NaN at step {step + 1}")


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
    """Refuse (one line, exit status 2) a picture that could not be saved because
    matplotlib is missing (the path itself is checked by the options table)."""
    from . import plot

    try:
        plot.pyplot()
    except ImportError as err:
        ap.error(f"{option} {path}: {err}")


def main(argv=None):
    """Run the demo (``--help`` for the options); returns 0.  The options are the rows
    ``"refprune demo"`` of :data:`refprune.options.TABLE`."""
    ap = OneLineParser(prog="refprune demo", description=__doc__.split("\n\n")[0])
    add_options(ap, "demo")
    args = parse_checked(ap, argv, "demo")
    for option in ("plot", "heatmaps"):  # checked before the run, which takes a while
        if getattr(args, option) is not None:
            _check_picture(ap, f"--{option}", getattr(args, option))

    if args.net == "conv":
        X, y = bars(seed=args.seed)
        c = 8 if args.hidden is None else args.hidden
        model = rp.Sequential(rp.Conv2d(1, c, 3), rp.Tanh(), rp.AvgPool2d(2), rp.Flatten(), rp.Linear(c * 9, 3))
        what = f"{len(X)} images of bars (8x8), 3 classes"
    else:
        X, y = spirals(seed=args.seed)
        h = 16 if args.hidden is None else args.hidden
        model = rp.Sequential(rp.Linear(2, h), rp.Tanh(), rp.Linear(h, h), rp.Tanh(), rp.Linear(h, 3))
        what = f"{len(X)} spiral points, 3 classes"
    loss = rp.CrossEntropyLoss()
    print(f"refprune demo: {what}\n{model}\nparameters: {model.n_params}")
    print(f"training ({args.steps} full-batch steps, momentum 0.9):")
    start = rp.loss(model, model.init(args.seed), X, y, loss)
    try:
        # a learning rate too large overflows the forward pass: refprune's
        # FloatingPointError names it, NumPy's warning from inside a layer would not
        with np.errstate(over="ignore", invalid="ignore"):
            params = train(model, model.init(args.seed), X, y, loss, args.steps, args.lr, 0.9, max(1, args.steps // 5))
            end = rp.loss(model, params, X, y, loss)
    except FloatingPointError as err:
        ap.error(f"--lr {args.lr:g}: training diverged ({err}); give a smaller --lr")
    if not end <= start:  # full-batch descent that ends above its start diverged
        ap.error(f"--lr {args.lr:g}: training diverged (the loss rose from {start:.4g} to {end:.4g} in {args.steps} "
                 "steps, and every later result would describe a broken network); give a smaller --lr")

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
        # %.3g: a prediction of 2e-05 (EigenDamage's, say) stays visible instead of printing as 0.0000
        print(f"  {name:22s} {len(st.removed):8d} {st.predicted:10.3g} {st.actual:10.3g} "
              f"{st.actual_without_update:10.3g} {acc:8.3f} {r.model.n_params:6d}")
    print(LEGEND)

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
