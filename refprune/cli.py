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
import warnings

import numpy as np

from .cli_parsing import OneLineParser, add_options, parse_checked


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
    for ch in spec:
        depth += ch == "("
        depth -= ch == ")"
        if (ch.isspace() or ch == "-") and depth == 0:  # a minus sign belongs inside an argument list
            if cur:
                out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        out.append(cur)
    return out


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
    seed = args.seed
    if args.data:
        d = _npz(args.data, "--data")
        if "X" not in d or "y" not in d:
            raise UsageError(f"--data {args.data} must hold arrays 'X' (N, per-sample input shape) and 'y' (N labels "
                             f"or N x outputs); it holds {sorted(d) or 'nothing'}")
        X, y = d["X"], d["y"]
    else:
        if not args.input_shape:
            raise UsageError("give --data FILE.npz or --input-shape (and --samples) for random data")
        samples = args.samples
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
        # validates everything before any cost; an output that overflows is named by
        # refprune's FloatingPointError alone, without NumPy's warning from inside the layer
        with np.errstate(over="ignore", invalid="ignore"):
            rp.loss(model, params, X, y, loss)
    except FloatingPointError as err:
        given = " and ".join(f"{o} {v}" for o, v in (("--data", args.data), ("--params", args.params)) if v)
        raise UsageError(f"the model at {given or 'its initial parameters'}: {err}") from None
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
    from .memory import amounts

    model, params, X, y, loss = _model_and_data(args)
    n, N = model.n_params, len(X)
    if args.shards > N:
        raise UsageError(f"--shards {args.shards} is more than the {N} samples (a shard holds at least one sample)")
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
        _check_resumable(args, partial, model, params, X, y, loss)
        print(f"{args.curvature}: resuming {partial} (blocks recorded as done are kept)", file=sys.stderr)
    elif args.out:
        where = os.path.dirname(os.path.abspath(args.out))  # an existing directory (the options table)
        free = shutil.disk_usage(where).free
        if need > free:
            raise UsageError("the {} x {} matrix needs {} but the disk has {} free".format(n, n, *amounts(need, free)))
        if os.path.exists(partial + ".refprune.json"):
            os.remove(partial + ".refprune.json")  # the record of an earlier run over the bytes about to go
        dest = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float64, shape=(n, n))
    else:
        free = available_memory()
        if need > free:
            raise UsageError("the {} x {} matrix needs {} but only {} of memory are available; give --out FILE.npy "
                             "to write it to disk".format(n, n, *amounts(need, free)))
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
                                                   shards=min(args.shards, k)), N,
                                saturates=_samples_per_chunk(model, X) * args.shards)
                if args.out:
                    est += _store_seconds(dest, n)
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


def _check_resumable(args, partial, model, params, X, y, loss):
    """Refuse ``--resume`` when the partial file's record is for another computation
    and holds finished blocks: the store would compute every block again (the record
    covers one choice of ``--block-rows`` and ``--shards``, docs/derivations.md §11).
    With no finished block recorded there is nothing to lose: say so and go on."""
    from .checks import validate
    from .curvature import exact, store

    try:
        with open(partial + ".refprune.json", "rb") as fh:
            rec = store.parse_record(fh.read(), partial + ".refprune.json", "refprune hessian", n=model.n_params)
    except (OSError, ValueError) as err:  # IncompleteResultError is a ValueError
        print(f"{args.curvature}: the record of {partial} cannot be used ({err}); every block is computed again",
              file=sys.stderr)
        warnings.filterwarnings("ignore", message=".*every block is computed again", category=RuntimeWarning)
        return
    done = sorted(k for k, d in rec["digests"].items() if d is not None)
    layout = exact._layout(model, args.block_rows)
    inp = validate(model, params, X, y, loss)
    mc = dict(samples=args.mc_samples, seed=args.seed, targets=None)
    want = exact._fingerprint(inp, args.curvature, exact._mc_targets(inp, args.curvature, mc), args.block_rows,
                              args.shards)
    same_blocks = rec["layout"] == {k: (o, e, [tuple(r) for r in rows]) for k, (o, e, rows) in layout.items()}
    if rec["fingerprint"] == want and same_blocks:
        return
    kept = f"{len(done)} finished block" + ("s" if len(done) > 1 else "")
    if not done:  # said here, in one line, rather than by the store's warning
        print(f"{args.curvature}: {partial} records no finished block; every block is computed", file=sys.stderr)
        warnings.filterwarnings("ignore", message=".*is for another computation", category=RuntimeWarning)
        return
    if not same_blocks:
        rows = "whole layers" if args.block_rows is None else f"--block-rows {args.block_rows}"
        theirs = ", ".join(sorted(rec["layout"])[:3]) + (", ..." if len(rec["layout"]) > 3 else "")
        raise UsageError(f"--resume: {partial} was written in other blocks ({theirs}) than {rows} gives; give the "
                         f"--block-rows of the interrupted run to keep its {kept}, or run "
                         "without --resume to start again")
    for shards in range(1, min(len(X), 64) + 1):  # name the --shards of the interrupted run if that is all
        if shards != args.shards and exact._fingerprint(inp, args.curvature, exact._mc_targets(
                inp, args.curvature, mc), args.block_rows, shards) == rec["fingerprint"]:
            raise UsageError(f"--resume with --shards {args.shards}: {partial} was written with --shards {shards}; "
                             f"give --shards {shards} to keep its {kept}, or run without "
                             "--resume to start again")
    raise UsageError(f"--resume: {partial} was written for another computation (other data, parameters, loss, "
                     f"--curvature, --seed, --block-rows or --shards than these); give the options of the interrupted run to keep "
                     f"its {kept}, or run without --resume to start again")


def _seconds(t):
    return f"{t:.1f} s" if t < 600 else f"{t / 60:.0f} min"


def _estimate(timed, N, least=0.5, fraction=1 / 16, saturates=None):
    """The seconds of the whole run, from runs of the same computation on the first
    ``k`` samples (``timed(k)`` runs one).

    The arithmetic (docs/derivations.md §4) is a sum over samples: ``b N`` multiply-adds
    plus a part ``a`` that does not depend on ``N`` (writing the ``n x n`` result, with
    workers sending it back; Python's work per layer).  But the time per multiply-add
    is not constant: the assembly takes all samples up to ``CHUNK_FLOATS`` at once, and
    its contraction (4.2) then runs on operands whose sample axis is ``N`` long, at a
    speed that falls as ``N`` grows (measured on 2 cores shared with other work, an MLP
    of 1,415 parameters: 0.83 s for 200 samples, 2.9 s for 400, 11.7 s for 800).
    So the time is modelled as ``a + b N + c N min(N, saturates)`` (``saturates``: the
    samples per chunk, beyond which chunks repeat and the time is linear again), with
    ``a, b, c >= 0`` measured on this network, on this machine, now: after a warm-up
    (imports, the workers' start), ``k = fraction N`` samples (doubled until a run takes
    ``least`` seconds, above the timer's and the machine's noise), ``2k`` and ``4k`` are
    timed (a run on fewer than ``N`` samples shorter than ``2 least`` twice, keeping the faster: other processes
    sharing the cores slow some runs down).  If the time per sample grows from the
    first pair to the second by more than 30%, ``8k`` is timed too and the curve is
    fitted on the three largest; it is extrapolated to ``N``.  When the smallest of them is
    already past ``saturates`` the curve is a line there (least squares through the points).  Two lines
    measured worse on benchmarks/bench_cli_estimate.py: one from a single sample to
    ``N/8`` samples gave 0.52 to 1.77 times the measured time, one through ``N/16`` and
    ``N/8`` samples 0.26 to 2.42, and the curve through ``N/32``, ``N/16`` and ``N/8``
    samples 0.28 to 1.75: the time per sample may grow only beyond ``N/8``, so the
    calibration reaches ``N/4``.  The
    calibration costs about ``7 fraction`` of the run when the time is linear (up to
    twice that when runs are short and timed twice), less when it grows faster; a run on
    few samples is timed whole."""

    def clock(k, again=False):
        t0 = time.perf_counter()
        timed(k)
        t = time.perf_counter() - t0
        if again and t < 2 * least:  # a short run is timed twice: the faster is the one not slowed by others
            t = min(t, clock(k))
        return t

    clock(min(N, 2))  # warm-up, not counted
    k = min(N, max(1, int(np.ceil(fraction * N))))
    # a run on all N samples is timed once: a second would cost as much as the run itself
    t = clock(k, k < N)
    while t < least and k < N:
        k = min(N, 2 * k)
        t = clock(k, k < N)
    points = [(k, t)]
    while len(points) < 3 and k < N:
        k = min(N, 2 * k)
        points.append((k, clock(k, k < N)))
    if k == N:
        return points[-1][1]
    (k1, t1), (k2, t2), (k3, t3) = points
    if (t3 - t2) / (k3 - k2) > 1.3 * (t2 - t1) / (k2 - k1) and 2 * k < N:
        # the time per sample grows: one more point, so the curve is fitted on the three
        # largest (the extrapolation amplifies the noise of a curve fitted far from N)
        k = 2 * k
        points = points[1:] + [(k, clock(k))]
    cap = N if saturates is None else max(1, saturates)
    ks = np.array([p[0] for p in points], float)
    ts = np.array([p[1] for p in points])
    if cap > ks[0]:
        coef = np.linalg.solve(np.stack([np.ones_like(ks), ks, ks * np.minimum(ks, cap)], axis=1), ts)
        if np.all(coef >= 0):
            return float(coef @ [1.0, N, N * min(N, cap)])
    else:
        # every point is past saturation, and so is N: the time is the line a + (b + c cap) k
        # (the third column would be cap times the second, a singular system)
        coef = np.linalg.lstsq(np.stack([np.ones_like(ks), ks], axis=1), ts, rcond=None)[0]
        if np.all(coef >= 0):
            return float(coef @ [1.0, N])
    # noise larger than the curvature: a line through the last two points
    (k1, t1), (k2, t2) = points[-2:]
    slope = (t2 - t1) / (k2 - k1)
    if slope <= 0:
        return t2 * N / k2
    return min(max(t2 - slope * k2, 0.0), t1) + slope * N


def _samples_per_chunk(model, X):
    """Samples the assembly takes at once, in the layer that takes the most
    (docs/derivations.md §4: temporaries of at most ``CHUNK_FLOATS`` values, ``K_l``
    tangent directions per sample for layer ``l``, the smaller of its seeds)."""
    from types import SimpleNamespace

    from . import derivatives as d
    from .nn import AffineLayer

    width = d.work_width(SimpleNamespace(model=model, X=X))
    s, most = X.shape[1:], 1
    for layer in model:
        out = layer.output_shape(s)
        if isinstance(layer, AffineLayer):
            most = max(most, d.chunk_length(min(layer.n_params, int(np.prod(out))), width))
        s = out
    return most


def _store_seconds(dest, n):
    """Seconds the run spends on its file besides the computation (docs/derivations.md
    §11): writing the matrix to disk (timed: the calibration wrote every entry, the
    flush writes them), and hashing each block's rows and mirror twice (once when it is
    recorded, once when :func:`refprune.load_matrix` verifies the result), timed on a
    slice of rows and one of columns and scaled to the whole matrix."""
    from .curvature import store

    t0 = time.perf_counter()
    dest.flush()
    flush = time.perf_counter() - t0
    m = max(1, min(n, 2**21 // n))  # about 16 MB of rows or columns
    t0 = time.perf_counter()
    store.digest(np.asarray(dest[:m]))
    store.digest(np.asarray(dest[:, :m]).T)
    hashing = (time.perf_counter() - t0) * n / m
    return flush + 2 * hashing


def _ignore_interrupts():
    """Workers leave Ctrl-C to the driver, which stops them (no traceback from each)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _pool(workers):
    """``--workers`` processes, each with ``cores // workers`` BLAS threads (at least one;
    docs/derivations.md §11.1), ignoring Ctrl-C."""
    if not workers:
        return None
    from .curvature.parallel import WorkerPool

    return WorkerPool(workers, initializer=_ignore_interrupts)


def _stop(pool, force=True):
    """Shut the pool down; ``force`` (after an interrupt: a task may run for minutes)
    cancels the queued tasks and ends the workers at once (:meth:`WorkerPool.stop`)."""
    if pool is not None:
        pool.stop(wait=not force)


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
        self.pids.update(self.pool.worker_pids())  # lock-free: the main thread may be anywhere
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
    return rp.fisher(model, params, X, y, loss, curvature=args.curvature, samples=args.mc_samples, seed=args.seed,
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
    """The argument parser with every subcommand; the options of each are the rows of
    :data:`refprune.options.TABLE` (``"refprune hessian"``, ...), read as text and
    checked by :func:`refprune.cli_parsing.parse_checked`."""
    ap = OneLineParser(prog="refprune", description="Ground-truth second-order quantities for pruning.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)
    sub.add_parser("demo", help="train, inspect and prune a small net on built-in spirals (--help for options)",
                   add_help=False)
    ap.commands = {
        "hessian": sub.add_parser("hessian", help="an exact Hessian, GGN, residual or Fisher into an .npy file"),
        "fixtures": sub.add_parser("fixtures", help="write the golden fixtures (.npz + manifest.json) into DIR"),
        "check": sub.add_parser("check", help="run the fast tests (or the built-in self-check) of the installed "
                                              "package"),
    }
    add_options(ap.commands["hessian"], "hessian", group=("--model", "--model-json"))
    add_options(ap.commands["fixtures"], "fixtures")
    add_options(ap.commands["check"], "check")
    return ap


def hessian_mode(v):
    """The mode of a ``refprune hessian`` run (:mod:`refprune.options`, CLI section):
    the words that decide which options apply, from the checked values ``v``."""
    mode = {f"curvature {v['curvature']}"}
    mode.update(word for word, on in (("data", v["data"]), ("out", v["out"]), ("dry-run", v["dry_run"])) if on)
    if not v["data"] or not v["params"] or v["curvature"] == "mc_fisher":
        mode.add("draws")
    return frozenset(mode)


_MODES = {"hessian": hessian_mode}


def main(argv=None):
    """Run the command line on ``argv``; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if argv and argv[0] == "demo":
        from . import demo

        return demo.main(argv[1:])
    command = argv[0] if argv and argv[0] in parser.commands else None
    if command is None:
        args = parser.parse_args(argv)  # a usage error or --help: argparse's one line
    else:
        args = parse_checked(parser, argv, command, _MODES.get(command, lambda v: frozenset()),
                             sub=parser.commands[command])
    try:
        with warnings.catch_warnings():  # filters set by a command end with it
            return {"hessian": cmd_hessian, "fixtures": cmd_fixtures, "check": cmd_check}[args.command](args)
    except (UsageError, ValueError, TypeError, OSError, MemoryError, FloatingPointError) as err:
        print(f"refprune {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"refprune {args.command}: interrupted", file=sys.stderr)
        return 130
