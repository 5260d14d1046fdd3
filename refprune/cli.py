"""The command line: ``refprune`` (or ``python -m refprune``) with subcommands.

* ``demo``: train, inspect and prune a small net on built-in spirals (:mod:`refprune.demo`);
* ``hessian``: an exact curvature matrix of a model given on the command line or in a
  JSON file, on data from an ``.npz`` or drawn at random, written to an ``.npy`` file
  (a memory map: the matrix never has to fit in memory), with an estimate of memory and
  time before it starts, a refusal when it will not fit, and progress while it runs;
  ``--workers``, ``--block-rows`` and ``--shards`` run it as tasks in a process pool, and
  ``--resume`` continues an interrupted run, computing only the missing blocks;
* ``fixtures``: write the golden fixtures (:mod:`refprune.fixtures`);
* ``check``: run the fast test profile when the tests are next to the package, else a
  built-in self-check (derivatives against finite differences, identities between the
  curvature matrices) on the conformance zoo.

Misuse gives one line on stderr and exit status 2, never a traceback.
"""

import argparse
import ast
import json
import os
import shutil
import sys
import time

import numpy as np


class UsageError(Exception):
    """A mistake on the command line: reported in one line."""


class OneLineParser(argparse.ArgumentParser):
    """``argparse`` whose errors are one line (``prog: error: ...``), exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(cast, accept, words):
    """An ``argparse`` type: ``cast(text)`` if ``accept`` holds for it, else one-line error."""

    def parse(text):
        try:
            v = cast(text)
        except ValueError:
            v = None
        if v is None or not accept(v):
            raise argparse.ArgumentTypeError(f"expected {words}, got {text!r}")
        return v

    parse.__doc__ = f"``argparse`` type: {words}."
    return parse


positive_int = _number(int, lambda v: v >= 1, "a positive integer")
nonnegative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number(float, lambda v: np.isfinite(v) and v > 0, "a positive finite number")


_LAYER_NAMES = ("Linear", "Conv2d", "ReLU", "Tanh", "Sigmoid", "Softplus", "AvgPool2d", "MaxPool2d", "Flatten")


def parse_model(spec):
    """A ``Sequential`` from ``"Conv2d(1, 4, 3, padding=1) Tanh AvgPool2d(2) Flatten
    Linear(36, 10)"``: layers separated by spaces or ``-``, arguments Python literals."""
    from . import nn

    try:
        tree = ast.parse("[" + ",".join(_split_layers(spec)) + "]", mode="eval")
    except SyntaxError as err:
        raise UsageError(f"cannot read the model {spec!r}: {err.msg}") from None
    layers = []
    for node in tree.body.elts:
        call = node if isinstance(node, ast.Call) else ast.Call(func=node, args=[], keywords=[])
        if not isinstance(call.func, ast.Name) or call.func.id not in _LAYER_NAMES:
            name = getattr(call.func, "id", ast.unparse(call.func))
            raise UsageError(f"unknown layer {name!r} in the model; known: {', '.join(_LAYER_NAMES)}")
        try:
            args = [ast.literal_eval(a) for a in call.args]
            kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
            layers.append(getattr(nn, call.func.id)(*args, **kwargs))
        except (ValueError, TypeError) as err:
            raise UsageError(f"layer {ast.unparse(call)}: {err}") from None
    if not layers:
        raise UsageError("the model has no layers")
    return nn.Sequential(*layers)


def _split_layers(spec):
    out, depth, cur = [], 0, ""
    for ch in spec.replace(" - ", " "):
        depth += ch == "("
        depth -= ch == ")"
        if ch.isspace() and depth == 0:
            if cur:
                out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        out.append(cur)
    return out


def _model_and_data(args):
    import refprune as rp

    from .testing.fixtures import model_from_spec

    if args.model_json:
        with open(args.model_json) as fh:
            spec = json.load(fh)
        model = model_from_spec(spec["network"] if isinstance(spec, dict) else spec)
    else:
        model = parse_model(args.model)
    if args.data:
        with np.load(args.data, allow_pickle=False) as d:
            if "X" not in d or "y" not in d:
                raise UsageError(f"{args.data} must hold arrays 'X' and 'y'")
            X, y = d["X"], d["y"]
    else:
        if not args.input_shape:
            raise UsageError("give --data FILE.npz or --input-shape (and --samples) for random data")
        rng = np.random.default_rng(args.seed)
        X = rng.standard_normal((args.samples,) + tuple(args.input_shape))
        c = model.output_shape(tuple(args.input_shape))[0]
        y = rng.integers(0, c, args.samples) if args.loss == "ce" else rng.standard_normal((args.samples, c))
    loss = (rp.CrossEntropyLoss if args.loss == "ce" else rp.MSELoss)(args.reduction)
    if args.params:
        with np.load(args.params, allow_pickle=False) as d:
            params = [d[f"param{i}"] for i in range(len(model.param_shapes()))]
    else:
        params = model.init(seed=args.seed)
    return model, params, X, y, loss


def cmd_hessian(args):
    """``refprune hessian``: estimate, check the fit, compute with progress."""
    import refprune as rp

    from .curvature.exact import available_memory

    model, params, X, y, loss = _model_and_data(args)
    rp.loss(model, params, X, y, loss)  # validates everything before any cost
    n, N = model.n_params, len(X)
    need = n * n * 8
    if args.resume:
        if not args.out or not os.path.exists(args.out):
            raise UsageError("--resume continues an earlier run: give the --out FILE.npy it was writing")
        dest = np.load(args.out, mmap_mode="r+")
        if dest.shape != (n, n) or dest.dtype != np.float64:
            raise UsageError(f"{args.out} holds a {dest.dtype} array of shape {dest.shape}, not ({n}, {n}) float64")
        print(f"{args.curvature}: resuming {args.out} (blocks recorded as done are kept)", file=sys.stderr)
        _compute(rp, args.curvature, model, params, X, y, loss, dest, True, args).flush()
        print(f"wrote {args.out}", file=sys.stderr)
        return 0
    if args.out:
        free = shutil.disk_usage(os.path.dirname(os.path.abspath(args.out)) or ".").free
        if need > free:
            raise UsageError(f"the {n} x {n} matrix needs {need / 2**30:.2f} GiB but the disk has "
                             f"{free / 2**30:.2f} GiB free")
        dest = np.lib.format.open_memmap(args.out, mode="w+", dtype=np.float64, shape=(n, n))
    else:
        if need > available_memory():
            raise UsageError(f"the {n} x {n} matrix needs {need / 2**30:.2f} GiB, more than the memory available; "
                             "give --out FILE.npy to write it to disk")
        dest = np.empty((n, n))
    # time: the assembly costs O(N n^2); time it on one sample and scale by N
    t0 = time.perf_counter()
    _compute(rp, args.curvature, model, params, X[:1], y[:1], loss, dest, False, args)
    est = (time.perf_counter() - t0) * N
    print(f"{args.curvature}: n = {n} parameters, N = {N} samples: {need / 2**30:.3f} GiB, about {est:.1f} s",
          file=sys.stderr)
    if args.dry_run:
        if args.out:
            del dest
            os.remove(args.out)
        return 0
    M = _compute(rp, args.curvature, model, params, X, y, loss, dest, True, args)
    if args.out:
        M.flush()
        print(f"wrote {args.out}", file=sys.stderr)
        return 0
    ev = np.linalg.eigvalsh(M)
    print(f"trace {ev.sum():.6g}, eigenvalues from {ev[0]:.6g} to {ev[-1]:.6g}")
    return 0


def _compute(rp, curvature, model, params, X, y, loss, out, progress, args):
    tasks = {}
    if progress and (args.workers or args.block_rows or args.shards > 1 or args.resume):
        # as tasks (docs/derivations.md §11); a process pool when --workers is given
        tasks = dict(block_rows=args.block_rows, shards=args.shards)
    if not tasks:
        return _call(rp, curvature, model, params, X, y, loss, out, progress, args)
    if not args.workers:
        return _call(rp, curvature, model, params, X, y, loss, out, progress, args, **tasks)
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(args.workers) as ex:
        return _call(rp, curvature, model, params, X, y, loss, out, progress, args, executor=ex, **tasks)


def _call(rp, curvature, model, params, X, y, loss, out, progress, args, **tasks):
    if curvature in ("hessian", "ggn", "residual"):
        return getattr(rp, curvature)(model, params, X, y, loss, out=out, progress=progress, **tasks)
    return rp.fisher(model, params, X, y, loss, curvature=curvature, samples=args.mc_samples, seed=args.seed,
                     out=out, progress=progress, **tasks)


def cmd_fixtures(args):
    """``refprune fixtures DIR``."""
    from .fixtures import write_fixtures

    manifest = write_fixtures(args.directory, progress=not args.quiet)
    print(f"wrote {len(manifest['cases'])} cases and manifest.json to {args.directory}")
    return 0


def cmd_check(args):
    """``refprune check``: the fast test profile, or the built-in self-check."""
    here = os.path.dirname(os.path.abspath(__file__))
    tests = os.path.join(os.path.dirname(here), "tests")
    if os.path.isdir(tests) and not args.builtin:
        try:
            import pytest
        except ImportError:
            raise UsageError("the test suite needs pytest and hypothesis: pip install 'refprune[test]' "
                             "(or run refprune check --builtin)") from None
        return int(pytest.main(["-q", "-p", "no:cacheprovider", "--hypothesis-profile=ci", tests]))
    from .selfcheck import run

    return 0 if run(verbose=True) else 1


def build_parser():
    """The argument parser with every subcommand."""
    ap = OneLineParser(prog="refprune", description="Ground-truth second-order quantities for pruning.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)
    sub.add_parser("demo", help="train, inspect and prune a small net on built-in spirals (--help for options)",
                   add_help=False)
    h = sub.add_parser("hessian", help="an exact Hessian, GGN, residual or Fisher into an .npy file")
    src = h.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help='layers, e.g. "Conv2d(1,4,3,padding=1) Tanh Flatten Linear(64,10)"')
    src.add_argument("--model-json", metavar="FILE", help="a JSON list of layer specifications (as in the "
                                                           "fixtures' manifest)")
    h.add_argument("--curvature", default="hessian",
                   choices=("hessian", "ggn", "residual", "fisher", "mc_fisher", "empirical_fisher"))
    h.add_argument("--data", metavar="FILE.npz", help="arrays X and y")
    h.add_argument("--input-shape", type=positive_int, nargs="+", metavar="D", help="per-sample input shape")
    h.add_argument("--samples", type=positive_int, default=32, help="random samples when no --data (default 32)")
    h.add_argument("--params", metavar="FILE.npz", help="arrays param0, param1, ... (default: PyTorch's init)")
    h.add_argument("--loss", choices=("ce", "mse"), default="ce")
    h.add_argument("--reduction", choices=("mean", "sum"), default="mean")
    h.add_argument("--mc-samples", type=positive_int, default=1)
    h.add_argument("--seed", type=nonnegative_int, default=0)
    h.add_argument("--out", metavar="FILE.npy", help="write the matrix here (a memory map) instead of printing its "
                                                     "spectrum")
    h.add_argument("--dry-run", action="store_true", help="print the estimate and stop")
    h.add_argument("--workers", type=nonnegative_int, default=0,
                   help="compute blocks of rows in this many worker processes (docs/derivations.md §11)")
    h.add_argument("--block-rows", type=positive_int, help="rows per block when run as tasks (default: a layer)")
    h.add_argument("--shards", type=positive_int, default=1, help="split the samples into this many shards")
    h.add_argument("--resume", action="store_true", help="continue an interrupted run into the same --out file, "
                                                         "computing only the blocks not recorded as done")
    f = sub.add_parser("fixtures", help="write the golden fixtures (.npz + manifest.json) into DIR")
    f.add_argument("directory")
    f.add_argument("--quiet", action="store_true", help="no progress lines")
    c = sub.add_parser("check", help="run the fast tests (or the built-in self-check) of the installed package")
    c.add_argument("--builtin", action="store_true", help="the built-in self-check even if the tests are present")
    return ap


def main(argv=None):
    """Run the command line on ``argv``; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if argv and argv[0] == "demo":
        from . import demo

        return demo.main(argv[1:])
    args = parser.parse_args(argv)
    try:
        return {"hessian": cmd_hessian, "fixtures": cmd_fixtures, "check": cmd_check}[args.command](args)
    except (UsageError, ValueError, TypeError, OSError, MemoryError) as err:
        print(f"refprune {args.command}: error: {err}", file=sys.stderr)
        return 2
