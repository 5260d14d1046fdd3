"""Cross-library report: refprune's conformance harness run against torch.func, JAX,
curvlinops, BackPACK, nngeometry and ASDL on the conformance zoo.

    python validation/crosscheck.py [--out validation/results/crosscheck.md]

Every library that is not installed is skipped (and listed as skipped).  For each
quantity the report gives the largest relative difference from refprune as the library
computes it ("as is"); where that is not rounding, the convention that explains it
(docs/conventions.md §8) and the difference after converting by that convention.
Install the libraries without replacing your torch (README, "Optional extras").
"""

import argparse
import contextlib
import dataclasses
import importlib
import os
import platform
import sys
import time
import warnings

import report  # noqa: F401 (first: pins the BLAS and OpenMP threads before NumPy and torch start theirs)
import numpy as np

import refprune as rp
from refprune import conformance as cf

HERE = os.path.dirname(os.path.abspath(__file__))


def _have(name):
    try:
        importlib.import_module(name)
        return True
    except Exception:
        return False


def _version(name):
    try:
        from importlib.metadata import version

        return version({"asdl": "asdfghjkl", "backpack": "backpack-for-pytorch",
                        "curvlinops": "curvlinops-for-pytorch"}.get(name, name))
    except Exception:
        return "?"


@contextlib.contextmanager
def float64_default(torch):
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


# ----------------------------------------------------------------------------- torch.func

def torch_flat(case):
    import torch

    tm, lf, X, y = case.torch()
    names = [k for k, _ in tm.named_parameters()]
    shapes = [p.shape for p in tm.parameters()]
    sizes = [p.numel() for p in tm.parameters()]

    def unflat(theta):
        return dict(zip(names, [t.reshape(s) for t, s in zip(torch.split(theta, sizes), shapes)]))

    def out(theta, x=X):
        return torch.func.functional_call(tm, unflat(theta), (x,))

    def f(theta):
        return lf(out(theta), y)

    return torch, f, out, torch.from_numpy(case.theta), lf, X, y


def torch_func_checks():
    def loss(c):
        torch, f, _, th, *_ = torch_flat(c)
        return f(th).item()

    def grad(c):
        torch, f, _, th, *_ = torch_flat(c)
        return torch.func.grad(f)(th)

    def per_sample(c):
        torch, _, out, th, lf, X, y = torch_flat(c)
        n = len(X)

        def one(x, t):
            return torch.func.grad(lambda p: lf(out(p, x[None]), t[None]))(th)

        # torch's loss of one sample has its own reduction: rescale to refprune's R dl_n
        g = torch.func.vmap(one)(X, y)
        c_out = c.model.output_shape(c.X.shape[1:])[0]
        R, r1 = c.loss.scale(n, c_out), c.loss.scale(1, c_out)
        return g * (R / r1)

    def hvp(c):
        # reverse over reverse: torch 2.13's forward-over-reverse (jvp of grad) raises
        # "ZeroTensors are immutable" through MSELoss (see the notes of the report)
        torch, f, _, th, *_ = torch_flat(c)
        v = torch.from_numpy(c.v)
        return torch.func.grad(lambda p: torch.dot(torch.func.grad(f)(p), v))(th)

    def hessian(c):
        torch, f, _, th, *_ = torch_flat(c)
        return torch.func.hessian(f)(th)

    def ggn(c):
        torch, _, out, th, lf, X, y = torch_flat(c)
        J = torch.func.jacrev(out)(th).reshape(-1, th.numel())  # (N C, n)
        fo = out(th).detach()
        Lam = torch.func.hessian(lambda o: lf(o, y))(fo).reshape(J.shape[0], J.shape[0])
        return J.T @ Lam @ J

    def obs_update(c):
        import torch

        G = torch.from_numpy(np.asarray(ggn(c))) + c.obs_damping * torch.eye(c.n_params, dtype=torch.float64)
        Hinv = torch.linalg.inv(G)
        q = c.obs_index
        return -(c.theta[q] / Hinv[q, q]) * Hinv[:, q]

    return [("loss", loss, None), ("grad", grad, None), ("per_sample_grads", per_sample, None), ("hvp", hvp, None),
            ("hessian", hessian, None), ("ggn", ggn, None),
            ("hessian_diagonal", lambda c: np.diag(np.asarray(hessian(c))), None), ("obs_update", obs_update, None)]


# ----------------------------------------------------------------------------- JAX

def jax_checks():
    import jax

    from refprune.bridges import jax_loss_function

    def L(c):
        return jax_loss_function(c.model, c.X, c.y, c.loss)

    return [("loss", lambda c: float(L(c)(c.theta)), None),
            ("grad", lambda c: np.asarray(jax.grad(L(c))(c.theta)), None),
            ("hvp", lambda c: np.asarray(jax.jvp(jax.grad(L(c)), (c.theta,), (c.v,))[1]), None),
            ("hessian", lambda c: np.asarray(jax.hessian(L(c))(c.theta)), None)]


# ----------------------------------------------------------------------------- curvlinops

def curvlinops_checks():
    import curvlinops
    import torch

    def setup(c):
        tm, lf, X, y = c.torch()
        return tm, lf, list(tm.parameters()), [(X, y)]

    def dense(op, n):
        return (op @ torch.eye(n, dtype=torch.float64)).detach().numpy()

    def lin(cls, **kw):
        return lambda c: dense(cls(*setup(c), check_deterministic=False, **kw), c.n_params)

    def kfac_op(c, **kw):
        return curvlinops.KFACLinearOperator(*setup(c), check_deterministic=False, separate_weight_and_bias=False,
                                             **kw)

    return [
        ("hessian", lin(curvlinops.HessianLinearOperator), None),
        ("ggn", lin(curvlinops.GGNLinearOperator), None),
        ("empirical_fisher", lin(curvlinops.EFLinearOperator), None),
        ("kfac", lambda c: dense(kfac_op(c, fisher_type="type-2"), c.n_params), None),
        ("kfac reduce", lambda c: dense(kfac_op(c, fisher_type="type-2", kfac_approx="reduce"), c.n_params), None),
        ("kfac empirical", lambda c: dense(kfac_op(c, fisher_type="empirical"), c.n_params), None),
        ("kfac mc (replayed draws)", lambda c: dense(kfac_op(c, fisher_type="mc", mc_samples=2), c.n_params), None),
        ("ekfac", lambda c: dense(curvlinops.EKFACLinearOperator(*setup(c), check_deterministic=False,
                                                                 separate_weight_and_bias=False,
                                                                 fisher_type="type-2"), c.n_params), None),
    ]


def curvlinops_mc_targets(case, samples=2, seed=2147483647):
    """The labels curvlinops' MC K-FAC draws (its default seed, one batch), replayed:
    a generator seeded once, ``samples`` draws in order (curvlinops/kfac.py,
    ``draw_label``)."""
    import torch

    tm, lf, X, y = case.torch()
    gen = torch.Generator().manual_seed(seed)
    out = tm(X).detach()
    draws = []
    for _ in range(samples):
        if isinstance(case.loss, rp.CrossEntropyLoss):
            draws.append(out.softmax(dim=1).multinomial(num_samples=1, generator=gen).squeeze(-1).numpy())
        elif isinstance(case.loss, rp.BCEWithLogitsLoss):
            draws.append(out.sigmoid().bernoulli(generator=gen).numpy())
        else:
            draws.append((out + np.sqrt(0.5) * torch.randn(out.shape, dtype=out.dtype, generator=gen)).numpy())
    return np.stack(draws)


# ----------------------------------------------------------------------------- BackPACK

def backpack_checks():
    import backpack
    import torch
    from backpack.extensions import KFLR, BatchGrad, DiagGGNExact, DiagHessian, SumGradSquared

    def run(c, ext, attr):
        tm, lf, X, y = c.torch()
        tm, lf = backpack.extend(tm), backpack.extend(lf)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with backpack.backpack(ext):
                lf(tm(X), y).backward()
        return [getattr(p, attr) for p in tm.parameters()]

    def flat(c, ext, attr, per_sample=False):
        got = run(c, ext, attr)
        if per_sample:
            return np.concatenate([g.detach().reshape(len(c.X), -1).numpy() for g in got], axis=1)
        return np.concatenate([g.detach().numpy().ravel() for g in got])

    def R(c):
        return c.loss.scale(len(c.X), c.model.output_shape(c.X.shape[1:])[0])

    def kflr(c):
        tm_params = run(c, KFLR(), "kflr")
        out = []
        for f in tm_params:
            S = f[0].detach().numpy()
            A = f[1].detach().numpy() if len(f) > 1 else np.ones((1, 1))
            out.append((S, A))
        return out

    return [
        ("per_sample_grads", lambda c: flat(c, BatchGrad(), "grad_batch", per_sample=True), None),
        ("hessian_diagonal", lambda c: flat(c, DiagHessian(), "diag_h"), None),
        ("ggn_diagonal", lambda c: flat(c, DiagGGNExact(), "diag_ggn_exact"), None),
        ("empirical_fisher_diagonal", lambda c: flat(c, SumGradSquared(), "sum_grad_squared"),
         ("SumGradSquared sums squared *scaled* per-sample gradients (R g_n)^2: R times refprune's R sum g_n^2",
          lambda c, got: np.asarray(got) / R(c))),
        ("kfac_factors", kflr,
         ("KFLR for Conv2d is S_reduce kron (T A_expand) (docs/conventions.md §8); converted with express_kfac",
          None)),
    ]


# ----------------------------------------------------------------------------- nngeometry

def nngeometry_checks():
    import torch
    from nngeometry.metrics import FIM
    from nngeometry.object import PMatDense, PMatKFAC
    from torch.utils.data import DataLoader, TensorDataset

    def fim(c, rep):
        tm, _, X, y = c.torch()
        variant = {"CrossEntropyLoss": "classif_logits", "MSELoss": "regression",
                   "BCEWithLogitsLoss": "classif_binary_logits"}[type(c.loss).__name__]
        with float64_default(torch):
            return FIM(model=tm, loader=DataLoader(TensorDataset(X, y), batch_size=len(X)), representation=rep,
                       variant=variant)

    def factors(c):
        return [(G.numpy(), A.numpy()) for A, G in fim(c, PMatKFAC).data.values()]

    def scale(c):
        from refprune.library_conventions import loss_rescaling

        return loss_rescaling("nngeometry", c.loss, len(c.X), c.model.output_shape(c.X.shape[1:])[0], "fisher")

    return [
        ("fisher", lambda c: fim(c, PMatDense).to_torch().numpy(),
         ("FIM averages over N and uses Lambda = I for regression: c = (1/N)/R (x 1/2 for squared error)",
          lambda c, got: np.asarray(got) / scale(c))),
        ("kfac_factors", factors,
         ("PMatKFAC splits the product as A T sqrt(K), G / (T sqrt(K)) and scales by c; converted with express_kfac",
          None)),
    ]


# ----------------------------------------------------------------------------- ASDL

def asdl_checks():
    import asdl

    def factors(c, fisher_type):
        tm, lf, X, y = c.torch()
        # ASDL's exact Fisher has no binary cross-entropy: its own error is reported as raised
        loss_type = {"CrossEntropyLoss": "cross_entropy", "MSELoss": "mse"}.get(type(c.loss).__name__, "bce")
        cfg = asdl.FisherConfig(fisher_type=fisher_type, fisher_shapes=["kron"], data_size=len(X),
                                loss_type=loss_type)
        fm = asdl.get_fisher_maker(tm, cfg)
        dummy = fm.setup_model_call(tm, X)
        fm.setup_loss_call(lf, dummy, y)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fm.forward_and_backward()
        out = []
        for m in tm.modules():
            if hasattr(m, "fisher") and m.fisher is not None:
                B, A = m.fisher.kron.B.numpy(), m.fisher.kron.A.numpy()
                out.append((B, A))
                if m.bias is not None:
                    out.append((B, np.ones((1, 1))))
        return out

    return [("kfac_factors", lambda c: factors(c, "fisher_exact"),
             ("fisher.kron keeps the bias apart (block B) and scales B by c = (1/N)/R (x 1/2 for squared error); "
              "converted with express_kfac", None))]


# ----------------------------------------------------------------------------- running

LIBRARIES = [
    ("torch.func", "torch", torch_func_checks, {}),
    ("JAX", "jax", jax_checks, {}),
    ("curvlinops", "curvlinops", curvlinops_checks, {}),
    ("BackPACK", "backpack", backpack_checks, dict(curvature="ggn", approx="expand", bias="separate")),
    ("nngeometry", "nngeometry", nngeometry_checks, dict(curvature="fisher", approx="expand", bias="fold")),
    ("ASDL", "asdl", asdl_checks, dict(curvature="fisher", approx="expand", bias="separate")),
]
KFAC_VARIANTS = {"kfac reduce": dict(approx="reduce"), "kfac empirical": dict(curvature="empirical_fisher"),
                 "kfac mc (replayed draws)": dict(curvature="mc_fisher")}


def _run_one(quantity, fn, cases, kfac_options):
    """The harness on one quantity; labelled K-FAC variants map onto 'kfac'."""
    base = quantity if quantity in cf.QUANTITIES else "kfac"
    opts = dict(kfac_options)
    opts.update(KFAC_VARIANTS.get(quantity, {}))
    if quantity == "kfac mc (replayed draws)":
        cases = [dataclasses.replace(c, targets=curvlinops_mc_targets(c)) for c in cases]
        opts["targets"] = None
    # kfac_options apply to the K-FAC quantities only (the harness refuses them elsewhere)
    kw = dict(kfac_options=_kfac_opts(opts)) if base in ("kfac", "kfac_factors", "ekfac") else {}
    adapter = cf.Adapter(**kw, **{base: fn})
    if quantity == "kfac mc (replayed draws)":
        # the reference must use the replayed targets: K-FAC of those draws
        adapter.quantities = {"kfac": fn}
        return _check_mc(adapter, cases)
    return cf.check(adapter, cases)[base]


def _kfac_opts(opts):
    return {k: v for k, v in opts.items() if k in ("curvature", "approx", "bias")}


def _check_mc(adapter, cases):
    """MC K-FAC with each case's targets (the replayed ones): the harness's K-FAC
    reference takes the options, so pass the targets per case."""
    res = cf.QuantityResult("kfac", cf.DEFAULT_RTOL)
    for c in cases:
        ref = rp.kfac(*c.args(), curvature="mc_fisher", targets=c.targets).to_dense()
        got = adapter.quantities["kfac"](c)
        err = cf.relative_error(got, ref)
        res.cases += 1
        if err >= res.max_error:
            res.max_error, res.worst_case = err, c.name
        if err > res.tolerance:
            res.failures.append(cf.Failure(c, err, "K-FAC of the MC Fisher, curvlinops' draws replayed",
                                           cf.diagnose(got, ref, c, res.tolerance)))
    return res


def _converted_kfac(library, cases, fn, opts):
    """Largest relative difference of the library's factors from express_kfac's."""
    worst = 0.0
    for c in cases:
        try:
            got = fn(c)
        except Exception:  # reported in the table as raised
            continue
        lib = {"BackPACK": "backpack", "nngeometry": "nngeometry", "ASDL": "asdl"}[library]
        exp = rp.express_kfac(*c.args(), lib, curvature=opts["curvature"] if lib == "asdl" else "ggn")
        if lib == "backpack":
            ref = []
            for f in exp:
                ref.append((f["weight"][0], f["weight"][1]))
                if f["bias"] is not None:
                    ref.append((f["bias"][0], np.ones((1, 1))))
        elif lib == "nngeometry":
            ref = [(f["G"], f["A"]) for f in exp]
        else:
            ref = []
            for f, layer in zip(exp, [m for m in c.model if isinstance(m, rp.nn.AffineLayer)]):
                ref.append((f["B"], f["A"]))
                if layer.bias:
                    ref.append((f["B"], np.ones((1, 1))))
        for (S, A), (rS, rA) in zip(got, ref):
            worst = max(worst, cf.relative_error(S, rS), cf.relative_error(A, rA))
    return worst


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(HERE, "results", "crosscheck.md"))
    args = ap.parse_args(argv)
    cases = cf.zoo()
    lines = ["# Cross-library report", "",
             f"refprune {rp.__version__}, Python {platform.python_version()}, numpy {np.__version__}, "
             f"{len(cases)} zoo cases (every architecture of `refprune.conformance.zoo` with cross-entropy, "
             "squared error and binary cross-entropy on logits, mean and sum). Relative difference = max |a - b| / max |b| over a case, largest over "
             f"the cases; harness tolerance {cf.DEFAULT_RTOL:.0e}. Written by `python validation/crosscheck.py`.", ""]
    skipped = []
    headline = []
    raised_notes = {}
    t0 = time.perf_counter()
    for library, module, make_checks, kfac_options in LIBRARIES:
        if not _have(module):
            skipped.append(library)
            continue
        version = _version(module)
        lines += [f"## {library} {version}", "", "| quantity | cases | as is | worst case | convention | converted |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for quantity, fn, convention in make_checks():
            res = _run_one(quantity, fn, cases, kfac_options)
            raised = [f for f in res.failures if f.exception]
            ran = res.cases - len(raised)
            as_is = max((f.error for f in res.failures if not f.exception), default=0.0)
            as_is = max(as_is, res.max_error if not raised else as_is)
            conv_text, conv_err = "", ""
            if convention is not None:
                conv_text, convert = convention
                usable = [c for c in cases if not any(r.case.name == c.name for r in raised)]
                if convert is not None and usable:
                    back = cf.check(cf.Adapter(**{quantity: (lambda f=fn, g=convert: lambda c: g(c, f(c)))()}),
                                    usable)
                    conv_err = f"{back[quantity].max_error:.1e}"
                elif convert is not None:
                    conv_err = "n/a"
                else:
                    conv_err = f"{_converted_kfac(library, cases, fn, kfac_options):.1e}"
            note = f" ({len(raised)} raised)" if raised else ""
            for r in raised:
                msg = r.exception.splitlines()[0][:160]
                if msg not in raised_notes:
                    raised_notes[msg] = f"{library} {quantity} on {r.case.name}"
            lines.append(f"| {quantity} | {ran}{note} | {as_is:.1e} | {res.worst_case} | {conv_text} | {conv_err} |")
            headline.append((library, quantity, as_is, conv_err))
            print(f"{library}: {quantity}: as is {as_is:.1e}{(', converted ' + conv_err) if conv_err else ''}",
                  file=sys.stderr)
        lines.append("")
    if skipped:
        lines += [f"Skipped (not installed): {', '.join(skipped)}.", ""]
    if raised_notes:
        lines += ["## Cases a library could not compute", "",
                  "Each distinct exception, with the first case that raised it:", ""]
        lines += [f"- {where}: `{msg}`" for msg, where in raised_notes.items()]
        lines.append("")
    notes_path = os.path.join(HERE, "crosscheck_notes.md")
    if os.path.exists(notes_path):
        with open(notes_path) as fh:
            lines += [fh.read().rstrip(), ""]
    rounding = [h for h in headline if h[2] <= cf.DEFAULT_RTOL]
    others = [h for h in headline if h[2] > cf.DEFAULT_RTOL]
    lines += ["## Headline", "",
              f"{len(rounding)} of {len(headline)} library quantities agree with refprune within the harness "
              "tolerance as computed; "
              f"the largest such difference is {max((h[2] for h in rounding), default=0):.1e}. "
              + (f"The other {len(others)} differ by a named convention; after converting by it the largest "
                 f"difference is {max((float(h[3]) for h in others if h[3]), default=0):.1e}."
                 if others else "")]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print(f"wrote {args.out} in {time.perf_counter() - t0:.0f} s (the run time is not written into the report, "
          "so that it regenerates byte for byte)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
