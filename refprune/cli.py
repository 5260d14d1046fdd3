"""The command line: ``refprune`` (or ``python -m refprune``) with subcommands.

* ``demo``: train, inspect and prune a small net on built-in spirals (:mod:`refprune.demo`);
* ``hessian``: an exact curvature matrix of a model given on the command line or in a
  JSON file, on data from an ``.npz`` or drawn at random, written to an ``.npy`` file
  (a memory map: the matrix never has to fit in memory), with an estimate of memory and
  time before it starts, a refusal when it will not fit, and progress while it runs;
  ``--workers``, ``--block-rows`` and ``--shards`` run it as tasks in a process pool, and
  ``--resume`` continues an interrupted run, computing only the missing blocks (the
  file is written as ``FILE.npy.partial`` and renamed once complete and verified;
  Ctrl-C stops the workers and says how to resume, exit status 130);
* ``fixtures``: write the golden fixtures (:mod:`refprune.fixtures`);
* ``check``: run the fast test profile when the tests are next to the package, else a
  built-in self-check (derivatives against finite differences, identities between the
  curvature matrices) on the conformance zoo.

Misuse gives one line on stderr and exit status 2, never a traceback.
"""

import ast
import json
import os
import shutil
import sys
import time

import numpy as np

from .cli_parsing import OneLineParser, nonnegative_int, positive_int


class UsageError(Exception):
    """A mistake on the command line: reported in one line."""


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


def _check_options(args):
    """Refuse options that would be ignored (one line each)."""
    if args.data and (args.input_shape or args.samples is not None):
        given = "--input-shape" if args.input_shape else "--samples"
        raise UsageError(f"{given} is for random data; --data {args.data} gives the samples and their shape")
    if args.mc_samples is not None and args.curvature != "mc_fisher":
        raise UsageError(f"--mc-samples applies only to --curvature mc_fisher, got --curvature {args.curvature}")
    if args.seed is not None and args.data and args.params and args.curvature != "mc_fisher":
        raise UsageError("--seed draws random data, initial parameters or Monte Carlo targets; with --data, --params "
                         f"and --curvature {args.curvature} nothing is drawn")
    if args.resume and args.dry_run:
        raise UsageError("--dry-run estimates a new run; --resume continues one: give one of them")
    if args.resume and not args.out:
        raise UsageError("--resume continues an interrupted run: give the --out FILE.npy it was writing")


def _npz(path, option):
    """The arrays of an ``.npz`` file given as ``option``, or a one-line error naming it."""
    try:
        d = np.load(path, allow_pickle=False)
        if not isinstance(d, np.lib.npyio.NpzFile):
            raise UsageError(f"{option} {path}: expected an .npz file of named arrays, got an .npy array")
        with d:
            return {k: d[k] for k in d.files}
    except (OSError, ValueError, EOFError) as err:
        raise UsageError(f"{option} {path}: cannot be read as an .npz file ({err})") from None


def _error_text(err):
    return f"missing key {err.args[0]!r}" if isinstance(err, KeyError) else str(err)


def _model_and_data(args):
    import refprune as rp

    from .testing.fixtures import model_from_spec

    if args.model_json:
        try:
            with open(args.model_json) as fh:
                spec = json.load(fh)
        except ValueError as err:
            raise UsageError(f"--model-json {args.model_json}: not valid JSON ({err})") from None
        try:
            model = model_from_spec(spec["network"] if isinstance(spec, dict) else spec)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
            raise UsageError(f"--model-json {args.model_json}: cannot build the model: {_error_text(err)}") from None
    else:
        model = parse_model(args.model)
    seed = 0 if args.seed is None else args.seed
    if args.data:
        d = _npz(args.data, "--data")
        if "X" not in d or "y" not in d:
            raise UsageError(f"--data {args.data} must hold arrays 'X' (N, per-sample input shape) and 'y' (N labels "
                             f"or N x outputs); it holds {sorted(d) or 'nothing'}")
        X, y = d["X"], d["y"]
    else:
        if not args.input_shape:
            raise UsageError("give --data FILE.npz or --input-shape (and --samples) for random data")
        samples = 32 if args.samples is None else args.samples
        rng = np.random.default_rng(seed)
        X = rng.standard_normal((samples,) + tuple(args.input_shape))
        c = model.output_shape(tuple(args.input_shape))[0]
        y = {"ce": lambda: rng.integers(0, c, samples), "mse": lambda: rng.standard_normal((samples, c)),
             "bce": lambda: rng.integers(0, 2, (samples, c)).astype(np.float64)}[args.loss]()
    loss = {"ce": rp.CrossEntropyLoss, "mse": rp.MSELoss, "bce": rp.BCEWithLogitsLoss}[args.loss](args.reduction)
    if args.params:
        d, shapes = _npz(args.params, "--params"), [tuple(s) for s in model.param_shapes()]
        names = [f"param{i}" for i in range(len(shapes))]
        expected = ", ".join(f"{k} {s}" for k, s in zip(names, shapes))
        missing, extra = [k for k in names if k not in d], sorted(set(d) - set(names))
        if missing or extra:
            what = "; ".join(([f"lacks {', '.join(missing)}"] if missing else [])
                             + ([f"has arrays the model does not: {', '.join(extra)}"] if extra else []))
            raise UsageError(f"--params {args.params} {what}; the model expects {expected}")
        for k, s in zip(names, shapes):
            if d[k].shape != s:
                raise UsageError(f"--params {args.params}: {k} has shape {d[k].shape}; the model expects {expected}")
        params = [d[k] for k in names]
    else:
        params = model.init(seed=seed)
    try:
        rp.loss(model, params, X, y, loss)  # validates everything before any cost
    except (ValueError, TypeError) as err:
        if args.data:
            raise UsageError(f"--data {args.data}: {err}") from None
        raise
    return model, params, X, y, loss


def cmd_hessian(args):
    """``refprune hessian``: estimate, check the fit, compute with progress.

    With ``--out H.npy`` the matrix is written to ``H.npy.partial`` (with its record
    ``H.npy.partial.refprune.json``) and renamed to ``H.npy`` only once complete and
    verified (:func:`refprune.load_matrix`), so ``H.npy`` never exists unfinished.
    """
    import refprune as rp

    from .curvature.exact import available_memory

    _check_options(args)
    model, params, X, y, loss = _model_and_data(args)
    n, N = model.n_params, len(X)
    need = n * n * 8
    partial = args.out + ".partial" if args.out else None
    if args.resume:
        if not os.path.exists(partial):
            if os.path.exists(args.out):
                try:
                    rp.load_matrix(args.out)
                except rp.IncompleteResultError as err:
                    raise UsageError(f"{args.out} is there but not a verified result ({err}); run without --resume "
                                     "to compute it again") from None
                print(f"{args.curvature}: {args.out} is complete; nothing to resume", file=sys.stderr)
                return 0
            raise UsageError(f"--resume continues an interrupted run, but there is no {partial} to continue")
        dest = np.load(partial, mmap_mode="r+")
        if dest.shape != (n, n) or dest.dtype != np.float64:
            raise UsageError(f"{partial} holds a {dest.dtype} array of shape {dest.shape}, not ({n}, {n}) float64")
        print(f"{args.curvature}: resuming {partial} (blocks recorded as done are kept)", file=sys.stderr)
    elif args.out:
        where = os.path.dirname(os.path.abspath(args.out))
        if not os.path.isdir(where):
            raise UsageError(f"--out {args.out}: the directory {where} does not exist")
        if os.path.isdir(args.out):
            raise UsageError(f"--out {args.out} is a directory; give a file name such as "
                             f"{os.path.join(args.out, 'H.npy')}")
        free = shutil.disk_usage(where).free
        if need > free:
            raise UsageError(f"the {n} x {n} matrix needs {need / 2**30:.2f} GiB but the disk has "
                             f"{free / 2**30:.2f} GiB free")
        if os.path.exists(partial + ".refprune.json"):
            os.remove(partial + ".refprune.json")  # the record of an earlier run over the bytes about to go
        dest = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float64, shape=(n, n))
    else:
        if need > available_memory():
            raise UsageError(f"the {n} x {n} matrix needs {need / 2**30:.2f} GiB, more than the memory available; "
                             "give --out FILE.npy to write it to disk")
        dest = np.empty((n, n))
    if not args.out:
        hint = "nothing was kept (without --out); give --out FILE.npy to keep finished blocks for --resume"
    elif _runs_as_tasks(args):
        hint = f"the finished blocks are recorded in {partial}: run the same command with --resume to continue"
    else:
        hint = (f"{partial} is unfinished (a run without --workers, --block-rows or --shards records no blocks "
                "before its end): run the same command with --resume to compute it again")
    pool = _pool(args.workers)
    with _Interrupts(pool, f"refprune hessian: interrupted; {hint}") as interrupts:
        try:
            if not args.resume:
                # a scratch view: not a memmap of a file, so nothing is recorded for it
                scratch = dest.view(np.ndarray)
                est = _estimate(lambda k: _compute(rp, args, model, params, X[:k], y[:k], loss, scratch, False, pool,
                                                   shards=min(args.shards, k)), N)
                print(f"{args.curvature}: n = {n} parameters, N = {N} samples: {need / 2**30:.3f} GiB, about "
                      f"{_seconds(est)}", file=sys.stderr)
                if args.dry_run:
                    if args.out:
                        del dest, scratch
                        os.remove(partial)
                    return 0
            M = _compute(rp, args, model, params, X, y, loss, dest, True, pool)
        except KeyboardInterrupt:
            _stop(pool)
            interrupts.report()
            interrupts.leave()
            return 130
        finally:
            _stop(pool, force=False)
    if args.out:
        M.flush()
        del M, dest
        rp.load_matrix(partial)  # complete and intact, or IncompleteResultError
        os.replace(partial, args.out)
        os.replace(partial + ".refprune.json", args.out + ".refprune.json")
        print(f"wrote {args.out} (record {args.out}.refprune.json)", file=sys.stderr)
        return 0
    ev = np.linalg.eigvalsh(M)
    print(f"trace {ev.sum():.6g}, eigenvalues from {ev[0]:.6g} to {ev[-1]:.6g}")
    return 0


def _seconds(t):
    return f"{t:.1f} s" if t < 600 else f"{t / 60:.0f} min"


def _estimate(timed, N, least=0.3, share=0.25, fraction=1 / 8):
    """The time of the whole run from runs on the first ``k`` samples.

    The cost is about ``a + b N``: ``a`` writes the ``n x n`` result (and, with workers,
    sends it back from them) whatever ``N``, ``b`` is the ``O(n^2)`` assembly per
    sample.  Timing one sample and multiplying by ``N`` counts ``a`` ``N`` times.
    Instead, after a warm-up run (imports, the workers' first tasks), one sample and then
    ``k = fraction N`` (at least 2), ``2k``, ``4k``, ... samples are timed until the
    per-sample part shows clearly (the time of ``k`` at least twice that of one sample
    and at least ``least`` seconds, above the timer's and the machine's noise), and the
    line through ``(1, t_1)`` and ``(k, t_k)`` is extrapolated to ``N``.  (A few
    samples are cheaper per sample than many: their temporaries stay in the processor's
    caches and their matrix products below the sizes where BLAS starts threads; so the
    calibration runs on an eighth of the samples, which costs about an eighth of the run,
    ``benchmarks/bench_cli_estimate.py``.)  The calibration stops earlier once
    it has cost ``share`` of ``t_k N / k`` (an upper bound of the run: no fixed part),
    which it then returns if the line is not resolved; at ``k = N`` it is the run's own
    time."""

    def clock(k):
        t0 = time.perf_counter()
        timed(k)
        return time.perf_counter() - t0

    warm = clock(1)
    t1 = min(warm, clock(1))
    k, tk, spent = 1, t1, warm + t1
    while k < N:
        k = min(max(2 * k, int(np.ceil(fraction * N))), N)
        tk = clock(k)
        spent += tk
        if k == N:
            return tk
        if (tk >= 2 * t1 and tk >= least) or spent >= share * tk * N / k:
            break
    if k == 1:
        return t1
    slope = (tk - t1) / (k - 1)
    if slope <= 0:
        return tk * N / k
    return max(t1 - slope, 0.0) + slope * N


def _ignore_interrupts():
    """Workers leave Ctrl-C to the driver, which stops them (no traceback from each)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _pool(workers):
    if not workers:
        return None
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(workers, initializer=_ignore_interrupts)


def _stop(pool, force=True):
    """Shut the pool down without waiting on its tasks; ``force`` ends its processes
    (after an interrupt: a task may run for minutes).

    Python before 3.14 has no public way to end a pool's processes: they are taken from
    ``_processes``, and the feeder thread of ``_call_queue``, which may be blocked
    writing to a pipe that no worker will read any more, is not waited for (otherwise
    the pool's management thread, and the interpreter's exit after it, would hang)."""
    if pool is None:
        return
    procs = list((getattr(pool, "_processes", None) or {}).values())
    calls = getattr(pool, "_call_queue", None)
    if force and calls is not None:
        calls.cancel_join_thread()
    pool.shutdown(wait=not force, cancel_futures=True)
    if force:
        for p in procs:
            p.terminate()
        for p in procs:
            p.join(2)
            if p.is_alive():
                p.kill()


class _Interrupts:
    """Ctrl-C during a run with worker processes.  The first raises ``KeyboardInterrupt``
    as usual: the driver stops, the workers are ended and :meth:`report` prints the one
    line ``line``.  A second one, wherever the first's clean-up is, kills the workers and
    leaves at once with exit status 130; so does any Ctrl-C after the first until the
    process ends (the handler stays: the command is only returning 130)."""

    def __init__(self, pool, line):
        self.pool, self.line, self.count, self.reported, self.previous = pool, line, 0, False, None
        self.pids = set()

    def __enter__(self):
        import signal
        import threading

        if self.pool is not None and threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        import signal

        if self.previous is not None and self.count == 0:
            signal.signal(signal.SIGINT, self.previous)
        return False

    def report(self):
        if not self.reported:
            self.reported = True
            print(self.line, file=sys.stderr, flush=True)

    def leave(self):
        """After a real Ctrl-C with workers, end the process here (exit status 130).  The
        pool's management thread may be blocked reading a result that a killed worker
        left half sent, and the interpreter's exit would wait on it for ever
        (``concurrent.futures`` joins it at exit); everything worth keeping is on disk
        already (each block's record is saved after its bytes are flushed)."""
        if self.count:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)

    def _handler(self, signum, frame):
        import signal

        self.count += 1
        self.pids.update(getattr(self.pool, "_processes", None) or {})  # gone from the pool once it shuts down
        if self.count == 1:
            raise KeyboardInterrupt
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass  # already gone
        if not self.reported:
            os.write(2, (self.line + "\n").encode())
        os._exit(130)


def _runs_as_tasks(args):
    return bool(args.workers or args.block_rows or args.shards > 1 or args.resume)


def _compute(rp, args, model, params, X, y, loss, out, progress, pool, shards=None):
    # as tasks (docs/derivations.md §11) with --workers, --block-rows, --shards or --resume
    tasks = dict(block_rows=args.block_rows, shards=args.shards if shards is None else shards,
                 executor=pool) if _runs_as_tasks(args) else {}
    if args.curvature in ("hessian", "ggn", "residual"):
        return getattr(rp, args.curvature)(model, params, X, y, loss, out=out, progress=progress, **tasks)
    mc = 1 if args.mc_samples is None else args.mc_samples
    return rp.fisher(model, params, X, y, loss, curvature=args.curvature, samples=mc,
                     seed=0 if args.seed is None else args.seed, out=out, progress=progress, **tasks)


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
    h.add_argument("--samples", type=positive_int, help="random samples when no --data (default 32)")
    h.add_argument("--params", metavar="FILE.npz", help="arrays param0, param1, ... (default: PyTorch's init)")
    h.add_argument("--loss", choices=("ce", "mse", "bce"), default="ce",
                   help="cross-entropy, squared error or binary cross-entropy on logits (default ce)")
    h.add_argument("--reduction", choices=("mean", "sum"), default="mean")
    h.add_argument("--mc-samples", type=positive_int, help="Monte Carlo targets per sample for --curvature mc_fisher "
                                                            "(default 1)")
    h.add_argument("--seed", type=nonnegative_int, help="seed of random data, initial parameters and Monte Carlo "
                                                        "targets (default 0)")
    h.add_argument("--out", metavar="FILE.npy", help="write the matrix here (a memory map) instead of printing its "
                                                     "spectrum; it is written to FILE.npy.partial and renamed once "
                                                     "complete, with its record FILE.npy.refprune.json")
    h.add_argument("--dry-run", action="store_true", help="print the estimate and stop")
    h.add_argument("--workers", type=nonnegative_int, default=0,
                   help="compute blocks of rows in this many worker processes (docs/derivations.md §11)")
    h.add_argument("--block-rows", type=positive_int, help="rows per block when run as tasks (default: a layer)")
    h.add_argument("--shards", type=positive_int, default=1, help="split the samples into this many shards")
    h.add_argument("--resume", action="store_true", help="continue an interrupted run from FILE.npy.partial, "
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
    except KeyboardInterrupt:
        print(f"refprune {args.command}: interrupted", file=sys.stderr)
        return 130
