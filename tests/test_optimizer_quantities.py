"""The optimizer quantities of the conformance harness (refprune/conformance/
optimizer_quantities.py) against an independent dense computation: K-FAC blocks formed
with ``np.kron`` and solved densely (Martens & Grosse 2015, §6.3 for the damping forms),
EKFAC's eigenvalues as ``diag(U^T F_l U)`` of the exact curvature's blocks (George et
al. 2018, eq. 10), the natural gradient with ``rp.fisher``/``rp.hessian`` and
``np.linalg.solve``, moving averages in closed form (a weighted sum over the history)
and the update of Ba et al. (2017, §5) written out.  Every planted bug of the neighbours
is computed the same way, and shown to differ from refprune's value on some zoo case.
refprune's optimizer classes reproduce the references exactly (the self-check)."""

import itertools

import numpy as np
import pytest

import refprune as rp
from refprune import conformance as cf
from refprune.checks import validate
from refprune.conformance import optimizer_quantities as oq
from refprune.curvature.output_factors import draw_targets

ZOO = cf.zoo()
#: one case per architecture, the losses taken in turn (every layer type, both losses)
CASES = [cf.make_case(a, lname) for a, lname in zip(cf.ARCHITECTURES, itertools.cycle(cf.LOSSES))]
RTOL = 1e-8


# ---------------------------------------------------------------- the dense computation


def blocks_of(model, bias):
    """``[(flat indices, position of each in row-major vec([W_r | b]))]`` per K-FAC
    block, from the PyTorch layout alone (weight ``(c, ...)`` raveled, then bias)."""
    out, offsets = [], model.param_offsets()
    for j, layer in enumerate(model):
        if not isinstance(layer, (rp.Linear, rp.Conv2d)):
            continue
        c, o = layer.out_units, int(offsets[j])
        r = layer.n_weight // c
        if bias == "separate" and layer.bias:
            out.append((np.arange(o, o + c * r), np.arange(c * r)))
            out.append((np.arange(o + c * r, o + c * r + c), np.arange(c)))
            continue
        p = r + (1 if layer.bias else 0)
        perm = [i * p + q for i in range(c) for q in range(r)] + ([i * p + r for i in range(c)] if layer.bias else [])
        out.append((np.arange(o, o + len(perm)), np.array(perm)))
    return out


def flat(K, perm):
    """A matrix over row-major ``vec(M)`` in flat parameter order."""
    return K[np.ix_(perm, perm)]


def closed_form_average(history, x0, eps):
    """``x_u`` of ``x_v = eps_v x_(v-1) + (1 - eps_v) X_v`` written as a weighted sum:
    ``prod(eps) x0 + sum_v (1 - eps_v) prod_(w > v) eps_w X_v``."""
    u = len(history)
    w0 = np.prod(eps)
    out = None if x0 is None or w0 == 0 else [w0 * np.asarray(a, float) for a in x0]
    for v in range(u):
        w = (1 - eps[v]) * np.prod(eps[v + 1 :])
        term = [w * X for X in history[v]]
        out = term if out is None else [a + b for a, b in zip(out, term)]
    return out


def schedule(start, decay, first_update, count, bugs, from_state):
    """The ``eps`` of updates ``first_update, ..., first_update + count - 1``."""
    eps = []
    for u in range(first_update, first_update + count):
        if start == "first":
            e = 0.0 if (u == 1 and not from_state) else (decay if "ema_constant" in bugs else min(decay, 1 - 1 / u))
            if e != 0 and "ema_swapped" in bugs:
                e = 1 - e
        else:
            e = 1 - decay if "ema_swapped" in bugs else decay
        eps.append(e)
    return eps


def average(history, start, decay, state, updates, bugs):
    """The estimate after the updates in ``history`` from ``state`` (``None``: the start)."""
    if "state_ignored" in bugs:
        return history[-1]
    x0 = state
    if x0 is None and start == "zero" or x0 is None and start == "zero_debiased":
        x0 = [np.zeros_like(X) for X in history[0]]
    elif x0 is None and start == "identity":
        x0 = [np.eye(len(X)) for X in history[0]]
    eps = schedule(start, decay, updates + 1, len(history), bugs, state is not None)
    est = closed_form_average(history, x0, eps)
    if start == "zero_debiased":
        est = [a / (1 - decay ** (updates + len(history))) for a in est]
    return est


def recursive_average(history, start, decay, state, updates, bugs):
    """The same estimate as :func:`average`, update by update.  EKFAC's eigenbasis is
    taken from these: where a factor has a repeated eigenvalue its eigenvectors are not
    unique, and only the same matrix (bit for bit) gives the same ones; :func:`average`'s
    closed form checks the averages themselves (K-FAC, the natural gradient)."""
    if "state_ignored" in bugs:
        return history[-1]
    x = state
    for u, X in enumerate(history, start=updates + 1):
        if start == "first":
            eps = decay if "ema_constant" in bugs and u > 1 else min(decay, 1 - 1 / u)
            if x is None or eps == 0:
                x = [np.array(a) for a in X]
                continue
        else:
            eps = decay
            x = x if x is not None else [np.eye(len(a)) if start == "identity" else np.zeros_like(a) for a in X]
        if "ema_swapped" in bugs:
            x = [(1 - eps) * a + eps * b for a, b in zip(x, X)]
        else:
            x = [eps * a + (1 - eps) * b for a, b in zip(x, X)]
    if start == "zero_debiased":
        x = [a / (1 - decay ** (updates + len(history))) for a in x]
    return x


class NotUnique(Exception):
    """The EKFAC depends on which eigenvectors numpy.linalg.eigh picks: not comparable."""


def clusters(w):
    """Index groups of the sorted eigenvalues ``w`` closer than 1e-6 of the largest."""
    tol = 1e-6 * max(np.abs(w).max(), 1e-300)
    groups = [[0]]
    for i in range(1, len(w)):
        if w[i] - w[i - 1] <= tol:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def check_unique(s, a, U, F_l, strict):
    """Raise :class:`NotUnique` unless ``diag(U^T F_l U)`` and the EKFAC built on it are
    the same for every eigenbasis of the factors: ``F_l`` compressed to each product of
    eigenspaces of ``S`` (eigenvalues ``s``) and ``A`` (``a``) must be a multiple of
    the identity (``strict``: no repeated eigenvalue at all, for a basis used wrongly)."""
    p = len(a)
    for cs in clusters(s):
        for ca in clusters(a):
            if len(cs) * len(ca) == 1:
                continue
            if strict:
                raise NotUnique
            cols = [i * p + j for i in cs for j in ca]
            C = U[:, cols].T @ F_l @ U[:, cols]
            if np.abs(C - np.mean(np.diag(C)) * np.eye(len(C))).max() > 1e-9 * max(np.abs(F_l).max(), 1e-300):
                raise NotUnique


def exact_curvature(case, params, X, y, curvature, targets, structure="full"):
    model, loss = case.model, case.loss
    if curvature == "hessian":
        F = rp.hessian(model, params, X, y, loss)
    elif curvature == "ggn":
        F = rp.ggn(model, params, X, y, loss)
    else:
        F = rp.fisher(model, params, X, y, loss, curvature=curvature,
                      **({"targets": targets} if curvature == "mc_fisher" else {}))
    if structure == "layer":  # keep the per-layer diagonal blocks
        keep = np.zeros_like(F, dtype=bool)
        offsets = list(model.param_offsets()) + [model.n_params]
        for a, b in zip(offsets[:-1], offsets[1:]):
            keep[a:b, a:b] = True
        F = np.where(keep, F, 0.0)
    return F


def dense_run(case, name, options, bugs=()):
    """The quantity from dense matrices; the same ``bugs`` as the module plants."""
    fam, kind = name.rsplit("_", 1)
    o = dict(oq.OPTIMIZER_QUANTITIES[name][2], **options)
    bugs = set(bugs)
    model, loss = case.model, case.loss
    N = len(case.X)
    k = o.get("k", 1)
    idxs = np.array_split(np.arange(N), k) if kind == "steps" and o["batches"] == "split" else [np.arange(N)] * k
    theta = case.theta
    buf = np.zeros_like(theta) if o.get("buf") is None else np.asarray(o["buf"], float)
    curvature = o["curvature"]
    for c in ("empirical_fisher", "hessian", "fisher"):
        if c in bugs:
            curvature = c
    if "true_fisher" in bugs:
        curvature = "fisher"
    approx = o.get("approx")
    if "other_approx" in bugs:
        approx = {"expand": "reduce", "reduce": "expand"}[approx]
    state = o.get("matrix") if fam == "natural_gradient" else (
        None if o.get("factors") is None else [m for pair in o["factors"] for m in pair])
    history, scale_history = [], []
    basis = used = None
    lam = o["damping"]
    for u, idx in enumerate(idxs, start=1):
        params = rp.unflatten_params(model, theta)
        X, y = case.X[idx], case.y[idx]
        t = case.targets[:, idx]
        g = rp.grad(model, params, X, y, loss)
        wd = o.get("weight_decay", 0.0)
        gp = g + wd * theta if "weight_decay_preconditioned" in bugs else g
        if fam == "natural_gradient":
            structure = o["structure"]
            if "other_structure" in bugs:
                structure = {"full": "layer", "layer": "full"}[structure]
            history.append([exact_curvature(case, params, X, y, curvature, t, structure)])
            F = average(history, o["ema_start"], o["ema_decay"], None if state is None else [state],
                        o.get("updates", 0), bugs)[0]
            d = np.linalg.solve(F + lam * np.eye(len(F)), gp)
        else:
            kw = {"targets": t} if curvature == "mc_fisher" else {}
            factors = rp.kfac(model, params, X, y, loss, curvature=curvature, approx=approx, bias=o["bias"],
                              **kw).factors()
            history.append([m for pair in factors for m in pair])
            avg = recursive_average if fam == "ekfac" else average
            est = avg(history, o["ema_start"], o["ema_decay"], state, o.get("updates", 0), bugs)
            pairs = [(est[2 * i], est[2 * i + 1]) for i in range(len(factors))]
            interval = o.get("refresh_interval", 1)
            due = (u - 1) % interval == 0
            if "refresh_every_step" in bugs:
                due = True
            if "refresh_at_multiples" in bugs:
                due = u % interval == 0
            d = np.zeros_like(g)
            layout = blocks_of(model, o["bias"])
            if fam == "kfac":
                if used is None or due:
                    used = pairs
                for (S, A), (fl, perm) in zip(used, layout):
                    d[fl] = np.linalg.solve(damped_block(S, A, perm, lam, o["damping_form"], bugs), gp[fl])
            else:
                refresh = basis is None or due
                rescale = refresh or (u - 1) % o.get("scale_interval", 1) == 0
                if refresh:
                    basis, spectra, scale_history = [], [], []
                    for (S, A), (fl, perm) in zip(pairs, layout):
                        (s, US), (a, UA) = np.linalg.eigh(S), np.linalg.eigh(A)
                        if "basis_transposed" in bugs:
                            US, UA = US.T, UA.T
                        basis.append(np.kron(US, UA)[perm, :])  # columns: the eigenvectors in flat order
                        spectra.append((s, a))
                if rescale:
                    F = exact_curvature(case, params, X, y, curvature, t)
                    kappas = []
                    for U, (s, a), (fl, perm) in zip(basis, spectra, layout):
                        check_unique(s, a, U, F[np.ix_(fl, fl)], "basis_transposed" in bugs)
                        if "kfac_eigenvalues" in bugs:
                            kappas.append(np.outer(s, a).ravel())
                        elif "scales_from_batch_gradient" in bugs:
                            kappas.append((U.T @ g[fl]) ** 2)
                        else:
                            kappas.append(np.diag(U.T @ F[np.ix_(fl, fl)] @ U))
                    scale_history.append(kappas)
                    eps = schedule("first", o.get("scale_decay", 0.95), 1, len(scale_history), (), False)
                    kappa = closed_form_average(scale_history, None, eps)
                for U, kap, (fl, perm) in zip(basis, kappa, layout):
                    d[fl] = U @ ((U.T @ gp[fl]) / (kap + lam))
        if kind == "direction":
            return d
        lr, m, c = o["lr"], o["momentum"], o["kl_clip"]
        wd_term = 0 * theta if "weight_decay_preconditioned" in bugs else wd * theta

        def nu(v):
            if c is None or "no_kl_clip" in bugs:
                return 1.0
            q = (lr if "kl_lr_not_squared" in bugs else lr**2) * (v @ g)
            if q <= c:  # (q < 0 is possible only for a direction the bug changed)
                return 1.0
            return c / q if "kl_no_sqrt" in bugs else np.sqrt(c / q)

        if "momentum_before_clip" in bugs:
            buf = m * buf + d + wd_term
            buf = nu(buf) * buf
        else:
            step = nu(d + wd_term) * (d + wd_term) if "kl_after_weight_decay" in bugs else nu(d) * d + wd_term
            buf = m * buf + ((1 - m) if "momentum_dampening" in bugs else 1) * step
        theta = theta - (lr**2 if "lr_twice" in bugs else lr) * buf
    return theta


def damped_block(S, A, perm, lam, form, bugs=()):
    """Martens & Grosse (2015), §6.3: ``S kron A + lam I`` or ``(S + r/pi I) kron (A + r pi I)``."""
    if form == "exact":
        return flat(np.kron(S, A), perm) + lam * np.eye(len(perm))
    r = lam if "damping_not_sqrt" in bugs else np.sqrt(lam)
    pi = 1.0
    if form == "pi":
        pi = np.sqrt(np.trace(A) / np.trace(S)) if "pi_unnormalised" in bugs else \
            np.sqrt((np.trace(A) / len(A)) / (np.trace(S) / len(S)))
    return flat(np.kron(S + r / pi * np.eye(len(S)), A + r * pi * np.eye(len(A))), perm)


def close(a, b, rtol=RTOL):
    return np.abs(np.asarray(a) - np.asarray(b)).max() <= rtol * max(np.abs(b).max(), 1e-300)


# ---------------------------------------------------------------- option grids

CURVS = ("ggn", "fisher", "empirical_fisher", "mc_fisher")


def state_for(case, name, o):
    """A state that is not the start: averaged factors (matrix) and a momentum buffer."""
    rng = np.random.default_rng(7)
    fam, kind = name.rsplit("_", 1)
    out = {}
    if fam == "natural_gradient":
        B = rng.standard_normal((case.n_params, case.n_params))
        out["matrix"] = B @ B.T / case.n_params
    else:
        kw = {"targets": case.targets} if o.get("curvature", "ggn") == "mc_fisher" else {}
        f = rp.kfac(*case.args(), curvature=o.get("curvature", "ggn"), approx=o.get("approx", "expand"),
                    bias=o.get("bias", "fold"), **kw).factors()
        out["factors"] = [(S * 1.5 + 0.1 * np.eye(len(S)), A + 0.2 * np.eye(len(A))) for S, A in f]
    out["updates"] = 2
    if kind == "step":
        out["buf"] = rng.standard_normal(case.n_params)
    return out


def grid(name):
    """Option sets exercising every option value of ``name``, and their combinations
    where they interact (damping form x curvature, clip x momentum x weight decay,
    average start x batching x refresh)."""
    fam, kind = name.rsplit("_", 1)
    out = []
    if fam == "natural_gradient":
        for curv, st in itertools.product(CURVS + ("hessian",), ("full", "layer")):
            out.append(dict(curvature=curv, structure=st, damping=10.0 if curv == "hessian" else 0.05))
    else:
        forms = ("pi", "factored", "exact") if fam == "kfac" else (None,)
        for curv, form in itertools.product(CURVS, forms):
            o = dict(curvature=curv, damping=0.05)
            if form:
                o["damping_form"] = form
            out.append(o)
        out += [dict(approx="reduce"), dict(bias="separate"), dict(approx="reduce", bias="separate", damping=0.3)]
    extra = []
    for start in oq.EMA_STARTS:
        extra.append(dict(ema_start=start, ema_decay=0.8, with_state=True))
        if start != "first":
            extra.append(dict(ema_start=start, ema_decay=0.7))
    if kind == "steps":
        extra = [dict(ema_start=s, ema_decay=0.8, batches=b) for s in oq.EMA_STARTS for b in oq.BATCHES]
        extra += [dict(k=4, batches="repeat", refresh_interval=2), dict(k=1), dict(k=2, refresh_interval=3)]
        if fam == "ekfac":
            extra += [dict(k=4, batches="repeat", refresh_interval=3, scale_interval=2, scale_decay=0.6),
                      dict(k=3, scale_interval=2, scale_decay=0.0)]
        if fam == "natural_gradient":
            extra = [{k: v for k, v in e.items() if k != "refresh_interval"} for e in extra]
    if kind != "direction":
        for clip, m, wd in itertools.product((None, 1e-3, 10.0), (0.0, 0.6), (0.0, 0.02)):
            extra.append(dict(kl_clip=clip, momentum=m, weight_decay=wd, lr=0.3))
        if kind == "step":
            extra.append(dict(kl_clip=1e-3, momentum=0.6, weight_decay=0.02, with_state=True))
    return out + extra


def resolved(case, name, o):
    o = dict(o)
    if o.pop("with_state", False):
        o.update(state_for(case, name, o))
    return o


NAMES = list(oq.OPTIMIZER_QUANTITIES)


def test_names_and_defaults():
    assert NAMES == [f"{f}_{k}" for f in ("kfac", "ekfac", "natural_gradient") for k in ("direction", "step", "steps")]
    for name, (ref, conv, defaults) in oq.OPTIMIZER_QUANTITIES.items():
        assert callable(ref) and "{" not in conv  # no placeholder: the harness appends the options in force
        assert set(oq.OPTIMIZER_NEIGHBOURS) == set(NAMES)
        for word in ("ema_start", "'first'", "'identity'", "'zero_debiased'", "case.targets"):
            assert word in conv, (name, word)
    assert oq.OPTIMIZER_QUANTITIES["kfac_direction"][2]["damping_form"] == "pi"
    assert oq.OPTIMIZER_QUANTITIES["natural_gradient_step"][2]["lr"] == 1.0  # the class's default


def test_layout_of_the_dense_computation():
    """The dense blocks built here from the PyTorch layout are refprune's K-FAC matrix."""
    for case in CASES:
        for bias in ("fold", "separate"):
            op = rp.kfac(*case.args(), bias=bias)
            K = np.zeros((case.n_params, case.n_params))
            for (S, A), (fl, perm) in zip(op.factors(), blocks_of(case.model, bias)):
                K[np.ix_(fl, fl)] = flat(np.kron(S, A), perm)
            assert np.array_equal(K, op.to_dense()) or close(K, op.to_dense(), 1e-13)


@pytest.mark.parametrize("name", NAMES)
def test_reference_against_dense(name):
    compared = attempted = 0
    # every option set on up to three of the cases, in turn, so that every case meets every kind of option
    runs = [(case, opts) for i, opts in enumerate(grid(name)) for case in CASES[i % 7 :: 3]]
    for case, opts in runs:
        o = resolved(case, name, opts)
        attempted += 1
        try:
            want = dense_run(case, name, o)
        except NotUnique:
            continue
        except np.linalg.LinAlgError:  # an indefinite damped Hessian: refprune refuses it too
            with pytest.raises(np.linalg.LinAlgError):
                oq.run(case, name, o)
            continue
        got = oq.OPTIMIZER_QUANTITIES[name][0](case, dict(oq.OPTIMIZER_QUANTITIES[name][2], **o))
        assert got.shape == (case.n_params,)
        assert close(got, want), (name, case.name, o, np.abs(got - want).max() / np.abs(want).max())
        compared += 1
    # EKFACs that are not unique are left out (a fifth at most); an indefinite damped Hessian raises
    assert compared >= attempted * (0.8 if name.startswith("ekfac") else 0.9), (compared, attempted)


def test_the_grid_reaches_every_branch():
    """The KL clip bites, the split batches differ from the repeated, momentum and the
    state matter: otherwise the dense comparison above would not test them."""
    case = CASES[1]
    base = dict(lr=0.3)
    assert not close(oq.run(case, "kfac_step", dict(base, kl_clip=1e-3)), oq.run(case, "kfac_step", base), 1e-6)
    assert close(oq.run(case, "kfac_step", dict(base, kl_clip=10.0)), oq.run(case, "kfac_step", base), 0)
    split, repeat = (oq.run(case, "kfac_steps", dict(batches=b)) for b in ("split", "repeat"))
    assert not close(split, repeat, 1e-6)
    assert not close(oq.run(case, "ekfac_steps", dict(momentum=0.6)), oq.run(case, "ekfac_steps", {}), 1e-6)
    s = state_for(case, "kfac_direction", {})
    assert not close(oq.run(case, "kfac_direction", s), oq.run(case, "kfac_direction", {}), 1e-6)


def test_direction_is_the_preconditioned_gradient():
    """Fresh state: K-FAC's direction is rp.kfac(...).inverse(lam, form) @ g and EKFAC's
    rp.ekfac(...).inverse(lam) @ g, the natural gradient's solve(F + lam I, g)."""
    for case in CASES:
        g = rp.grad(*case.args())
        for form in ("pi", "factored", "exact"):
            want = rp.kfac(*case.args()).inverse(0.01, form).to_dense() @ g
            assert close(oq.run(case, "kfac_direction", dict(damping=0.01, damping_form=form)), want, 1e-9)
        want = rp.ekfac(*case.args()).inverse(0.01).to_dense() @ g
        assert close(oq.run(case, "ekfac_direction", dict(damping=0.01)), want, 1e-9)
        F = rp.fisher(*case.args())
        assert close(oq.run(case, "natural_gradient_direction", dict(damping=0.01)),
                     np.linalg.solve(F + 0.01 * np.eye(len(F)), g), 1e-9)


def test_moving_average_starts_by_hand():
    """Two updates of each start on the scalar sequence X_1 = 1, X_2 = 3, decay 0.5:
    'first' 0.5*1 + 0.5*3 = 2; 'zero' 0.5*(0.5*1) + 0.5*3 = 1.75; 'zero_debiased'
    1.75 / 0.75; 'identity' 0.5*(0.5*1 + 0.5*1) + 0.5*3 = 2."""
    want = {"first": 2.0, "zero": 1.75, "zero_debiased": 1.75 / 0.75, "identity": 2.0}
    for start, w in want.items():
        raw = None
        for u, X in enumerate([np.array([[1.0]]), np.array([[3.0]])], start=1):
            raw, est = oq._fold(raw, [X], u, 0.5, start, frozenset())
        assert est[0][0, 0] == pytest.approx(w, rel=1e-15), start
    # and the dense computation's closed form agrees
    for start, w in want.items():
        est = average([[np.array([[1.0]])], [np.array([[3.0]])]], start, 0.5, None, 0, ())
        assert est[0][0, 0] == pytest.approx(w, rel=1e-15), start


# ---------------------------------------------------------------- the neighbours

#: options under which each planted bug applies (added to the quantity's defaults)
BUG_OPTIONS = {
    "ema_constant": [dict(with_state=True), dict(ema_decay=0.3)],
    "ema_swapped": [dict(with_state=True), dict(ema_start="zero", ema_decay=0.8)],
    "state_ignored": [dict(with_state=True)],
    "damping_not_sqrt": [dict(damping=0.3), dict(damping=0.3, damping_form="factored")],
    "pi_unnormalised": [dict(damping=0.3)],
    "kfac_eigenvalues": [{}],
    "basis_transposed": [{}],
    "scales_from_batch_gradient": [{}],
    "empirical_fisher": [{}],
    "true_fisher": [dict(curvature="mc_fisher")],
    "hessian": [dict(damping=10.0)],
    "fisher": [dict(curvature="hessian", damping=10.0)],
    "other_approx": [{}, dict(approx="reduce")],
    "other_structure": [{}, dict(structure="layer")],
    "refresh_every_step": [dict(refresh_interval=2, k=3)],
    "refresh_at_multiples": [dict(refresh_interval=2, k=3)],
    "no_kl_clip": [dict(kl_clip=1e-3, lr=0.3)],
    "kl_no_sqrt": [dict(kl_clip=1e-3, lr=0.3)],
    "kl_lr_not_squared": [dict(kl_clip=1e-3, lr=0.3)],
    "kl_after_weight_decay": [dict(kl_clip=1e-3, weight_decay=0.5, lr=0.3)],
    "momentum_before_clip": [dict(kl_clip=1e-3, momentum=0.6, lr=0.3, with_state=True),
                             dict(kl_clip=1e-3, momentum=0.6, lr=0.3)],
    "momentum_dampening": [dict(momentum=0.6, with_state=True), dict(momentum=0.6)],
    "weight_decay_preconditioned": [dict(weight_decay=0.05, damping=0.1)],
    "lr_twice": [{}],
}


def test_every_bug_has_options():
    assert set(BUG_OPTIONS) == set(oq.NEIGHBOUR_BUGS)


def _applicable(name, extra):
    """The options of ``extra`` that ``name`` takes (others dropped); ``None`` if the
    result does not exist for the quantity."""
    defaults = oq.OPTIMIZER_QUANTITIES[name][2]
    o = {k: v for k, v in extra.items() if k in defaults or k == "with_state"}
    if o.get("with_state") and name.endswith("steps"):
        return None
    return o


@pytest.mark.parametrize("bug", list(oq.NEIGHBOUR_BUGS))
def test_bug_formula_and_difference(bug):
    """Each planted bug equals the dense computation with the same bug, and differs from
    refprune's value on at least one case (else it could never be named)."""
    desc, applies = oq.NEIGHBOUR_BUGS[bug]
    differs, checked = 0, 0
    for name in NAMES:
        fam, kind = name.rsplit("_", 1)
        for extra in BUG_OPTIONS[bug]:
            base = _applicable(name, extra)
            if base is None:
                continue
            for case in CASES[::2]:
                o = resolved(case, name, base)
                try:
                    full = oq.optimizer_options(name, o)
                except ValueError:  # an option of another quantity (curvature='hessian' for K-FAC)
                    continue
                if not applies(fam, kind, full):
                    continue
                try:
                    want = dense_run(case, name, o, bugs=[bug])
                    got = oq.run(case, name, o, bugs=[bug])
                    ref = oq.run(case, name, o)
                except (np.linalg.LinAlgError, NotUnique):  # a singular damped matrix; an EKFAC not unique
                    continue
                assert close(got, want), (bug, name, case.name, np.abs(got - want).max() / np.abs(want).max())
                checked += 1
                differs += not close(got, ref, 1e-9)
    assert checked > 0 and differs > 0, (bug, checked, differs)


def test_neighbours_are_listed_and_differ():
    """OPTIMIZER_NEIGHBOURS returns the applicable bugs and the other conventions (damping
    forms, starts, batching), each different from the reference."""
    case = CASES[2]
    seen = set()
    for name in NAMES:
        defaults = oq.OPTIMIZER_QUANTITIES[name][2]
        opts = dict(defaults)
        if "kl_clip" in defaults:
            opts.update(kl_clip=1e-3, momentum=0.5, weight_decay=0.05, lr=0.3)
        if "refresh_interval" in defaults:
            opts["refresh_interval"] = 2
        ref = oq.OPTIMIZER_QUANTITIES[name][0](case, opts)
        out = oq.OPTIMIZER_NEIGHBOURS[name](case, opts)
        assert out, name
        for desc, arr in out:
            assert isinstance(desc, str) and arr.shape == ref.shape
            assert not close(arr, ref, 1e-12), (name, desc)
            seen.add(desc.split(" instead")[0].split(" (")[0])
    texts = " | ".join(sorted(seen))
    for words in ("no KL clip", "damping form 'exact'", "damping form 'factored'", "ema_start='identity'",
                  "ema_start='zero'", "learning rate applied twice", "momentum applied before the KL clip",
                  "batches='repeat'"):
        assert words in texts, (words, texts)


def test_neighbour_of_the_other_convention_is_the_reference_under_it():
    """A moving average started at the identity is the reference with ema_start='identity';
    the damping added to the product is the reference with damping_form='exact'."""
    case = CASES[3]
    out = dict(oq.OPTIMIZER_NEIGHBOURS["kfac_steps"](case, dict(oq.OPTIMIZER_QUANTITIES["kfac_steps"][2])))
    key = next(d for d in out if "ema_start='identity'" in d)
    assert np.array_equal(out[key], oq.run(case, "kfac_steps", dict(ema_start="identity")))
    key = next(d for d in out if "damping form 'exact'" in d)
    assert np.array_equal(out[key], oq.run(case, "kfac_steps", dict(damping_form="exact")))
    # and the identity start is the closed form x_0 = I
    assert close(out[next(d for d in out if "ema_start='identity'" in d)],
                 dense_run(case, "kfac_steps", dict(ema_start="identity")))


# ---------------------------------------------------------------- the self-check


def _optimizer_run(case, cls, kw, k, batches):
    opt = cls(**kw)
    params = case.params
    idxs = np.array_split(np.arange(len(case.X)), k) if batches == "split" else [np.arange(len(case.X))] * k
    for idx in idxs:
        params = opt.step(case.model, params, case.X[idx], case.y[idx], case.loss)
    return rp.flatten_params(params)


def _draws(case, seed):
    """The Monte Carlo targets refprune's optimizers draw at step ``u`` (docs/optimizers.md §1)."""
    def targets(u, params, idx):
        X, y = case.X[idx], case.y[idx]
        return draw_targets(validate(case.model, params, X, y, case.loss), case.model(params, X), 1, [seed, u])
    return targets


SELF = {
    "kfac_steps": (rp.optim.KFAC, [dict(damping_form=f, curvature=c, approx=a, bias=b, ema_decay=0.9,
                                        refresh_interval=r)
                                   for f, c, a, b, r in [("pi", "ggn", "expand", "fold", 1),
                                                         ("factored", "mc_fisher", "reduce", "separate", 2),
                                                         ("exact", "empirical_fisher", "expand", "separate", 1),
                                                         ("pi", "fisher", "reduce", "fold", 3)]]),
    "ekfac_steps": (rp.optim.EKFAC, [dict(curvature=c, approx=a, bias=b, ema_decay=0.9, refresh_interval=r,
                                          scale_interval=s, scale_decay=0.5)
                                     for c, a, b, r, s in [("ggn", "expand", "fold", 1, 1),
                                                           ("mc_fisher", "reduce", "separate", 3, 2),
                                                           ("empirical_fisher", "expand", "fold", 2, 1)]]),
    "natural_gradient_steps": (rp.optim.NaturalGradient, [dict(curvature=c, structure=s, ema_decay=0.7)
                                                          for c, s in [("fisher", "full"), ("mc_fisher", "layer"),
                                                                       ("empirical_fisher", "full")]]),
}


@pytest.mark.parametrize("name", list(SELF))
def test_optimizer_classes_reproduce_the_reference(name):
    """rp.optim.KFAC, EKFAC and NaturalGradient, stepped over the same batches, give the
    reference bit for bit (with their own Monte Carlo draws replayed as the targets)."""
    cls, variants = SELF[name]
    updates = (dict(), dict(momentum=0.5, weight_decay=0.01, kl_clip=1e-3, lr=0.05))
    for j, (kw, upd, batches) in enumerate(itertools.product(variants, updates, oq.BATCHES)):
        kw2 = dict(kw, damping=0.1, **upd)
        o = dict(kw2, k=3, batches=batches)
        cls_kw = dict(kw2, seed=3) if kw2["curvature"] == "mc_fisher" else kw2
        for case in ZOO[j % 9 :: 11]:  # every combination on three cases, every case in turn
            got = _optimizer_run(case, cls, cls_kw, 3, batches)
            want = oq.run(case, name, o, targets=_draws(case, 3))
            assert np.array_equal(got, want), (name, case.name, kw2, batches)


def _class_adapter(name, cls, kw):
    """refprune's own optimizer class as another implementation would give the quantity:
    the direction as ``theta - step`` at ``lr = 1`` with no clip, momentum or decay."""
    if name.endswith("_direction"):
        return lambda c: c.theta - rp.flatten_params(cls(**dict(kw, lr=1.0)).step(*c.args()))
    if name.endswith("_step"):
        return lambda c: rp.flatten_params(cls(**kw).step(*c.args()))
    return lambda c: _optimizer_run(c, cls, kw, 3, "split")


@pytest.mark.parametrize("name", NAMES)
def test_refprune_optimizers_pass_the_harness(name):
    """The self-check through the harness itself: refprune's optimizer classes, given as
    an adapter with the options set through ``Adapter(options=)``, pass on every case of
    a subset (the options chosen so that each quantity's convention is exercised)."""
    cls = {"kfac": rp.optim.KFAC, "ekfac": rp.optim.EKFAC, "natural": rp.optim.NaturalGradient}[name.split("_")[0]]
    kw = dict(curvature="ggn" if cls is not rp.optim.NaturalGradient else "fisher", damping=0.1)
    if not name.endswith("_direction"):
        kw.update(momentum=0.5, weight_decay=0.01, kl_clip=1e-3, lr=0.05)
    opts = dict(kw, k=3, batches="split") if name.endswith("_steps") else dict(kw)
    report = cf.check(cf.Adapter(**{name: _class_adapter(name, cls, kw)}, options={name: opts}), CASES)
    assert report.ok, report
    assert report[name].cases >= 4, report
    # the same adapter compared under other options fails and the report says so
    other = dict(opts, damping=0.3)
    assert not cf.check(cf.Adapter(**{name: _class_adapter(name, cls, kw)}, options={name: other}), CASES[:2]).ok


@pytest.mark.parametrize("name", list(SELF))
def test_every_variant_of_the_optimizer_classes_passes_the_harness(name):
    """Every option combination of :data:`SELF` (damping forms, curvatures, approx, bias,
    refresh and scale intervals, structure), with and without momentum, weight decay and
    the KL clip, through ``cf.check`` with the options given to ``Adapter(options=)``."""
    cls, variants = SELF[name]
    for kw, upd in itertools.product(variants, (dict(), dict(momentum=0.5, weight_decay=0.01, kl_clip=1e-3,
                                                              lr=0.05))):
        kw2 = dict(kw, damping=0.1, **upd)
        if kw2["curvature"] == "mc_fisher":  # the class draws its own targets; the harness replays case.targets
            continue
        adapter = cf.Adapter(**{name: (lambda c, kw2=kw2: _optimizer_run(c, cls, kw2, 3, "split"))},
                             options={name: dict(kw2, k=3, batches="split")})
        report = cf.check(adapter, CASES[:3])
        assert report.ok, (kw2, report)


def test_one_step_from_the_fresh_state_is_the_class_step():
    for case in CASES:
        for name, cls in (("kfac_step", rp.optim.KFAC), ("ekfac_step", rp.optim.EKFAC),
                          ("natural_gradient_step", rp.optim.NaturalGradient)):
            kw = dict(curvature="ggn", damping=0.1, momentum=0.5, weight_decay=0.01, kl_clip=1e-3, lr=0.05)
            got = rp.flatten_params(cls(**kw).step(*case.args()))
            assert np.array_equal(got, oq.run(case, name, kw)), (name, case.name)


# ---------------------------------------------------------------- bad options


def test_bad_options_are_refused_by_name():
    case = CASES[0]
    ref = oq.OPTIMIZER_QUANTITIES["kfac_step"][0]
    with pytest.raises(ValueError, match=r"optimizer quantity kfac_step: unknown options \['dampnig'\]"):
        ref(case, dict(dampnig=1.0))
    with pytest.raises(TypeError, match="optimizer quantity kfac_step: damping must be a finite number >= 0, got '1'"):
        ref(case, dict(damping="1"))
    with pytest.raises(TypeError, match="case must be a refprune.conformance.Case"):
        ref(case.args(), {})
    with pytest.raises(ValueError, match="unknown quantity 'kfac'"):
        oq.optimizer_options("kfac")


def test_split_needs_enough_samples():
    with pytest.raises(ValueError, match="k=5 steps with batches='split' need at least k samples"):
        oq.run(CASES[0], "kfac_steps", dict(k=5))
    assert oq.run(CASES[0], "kfac_steps", dict(k=5, batches="repeat")).shape == (CASES[0].n_params,)


def test_arguments_are_not_modified():
    case = CASES[1]
    s = state_for(case, "kfac_step", {})
    copies = [np.copy(s["buf"])] + [np.copy(m) for pair in s["factors"] for m in pair]
    theta = case.theta.copy()
    oq.run(case, "kfac_step", dict(s, momentum=0.5))
    assert np.array_equal(case.theta, theta)
    for a, b in zip(copies, [s["buf"]] + [m for pair in s["factors"] for m in pair]):
        assert np.array_equal(a, b)


def test_deterministic():
    case = CASES[4]
    for name in NAMES:
        assert np.array_equal(oq.run(case, name, {}), oq.run(case, name, {}))
