"""Optimizer quantities: refprune's preconditioned direction, one whole step and ``k``
steps of K-FAC, EKFAC and the exact natural gradient on a zoo case, with the state
conventions stated, for checking another optimizer one step at a time
(``docs/optimizers.md`` §6, "Checking another optimizer against refprune").

:data:`OPTIMIZER_QUANTITIES` maps a name to ``(reference, conventions, defaults)``:
``reference(case, options)`` is refprune's value on the case (``options`` are the
defaults updated by the caller's), ``conventions`` says what is computed (the harness
appends the options in force) and ``defaults`` lists the options with their defaults.
:data:`OPTIMIZER_NEIGHBOURS` maps the same names to ``fn(case, options) -> [(description,
array)]``: the same quantity with one realistic bug planted (a moving average started
at the identity, no KL clip, the damping in another place, ...), for naming a difference.

The update is the one of ``docs/optimizers.md`` §1 (``refprune/optim/base.py``)::

    d     = P g                          the direction (P: the damped preconditioner)
    nu    = min(1, sqrt(c / (lr^2 d.g))) KL clip, only when kl_clip = c (Ba et al. 2017, §5)
    d     = nu d + weight_decay theta
    buf   = momentum buf + d
    theta = theta - lr buf

and every curvature statistic (K-FAC's factors, the natural gradient's matrix) is
averaged as ``x_u = eps_u x_{u-1} + (1 - eps_u) X_u`` over the updates ``u = 1, 2, ...``
(Martens & Grosse 2015, §5).  ``ema_start`` chooses the start and the schedule:

- ``"first"`` (refprune's optimizers): ``eps_u = min(decay, 1 - 1/u)``, so the first
  estimate is the first batch's own, then a running mean until ``1/(1 - decay)``
  updates, then an exponential average;
- ``"zero"``: ``x_0 = 0``, ``eps_u = decay``, no bias correction;
- ``"zero_debiased"``: ``x_0 = 0``, ``eps_u = decay``, the estimate is
  ``x_u / (1 - decay^u)`` (Kingma & Ba 2015, Algorithm 1);
- ``"identity"``: ``x_0 = I`` (every factor, or the whole matrix), ``eps_u = decay``
  (the start of the K-FAC implementations of the EigenDamage experiments).

Monte Carlo targets (``curvature="mc_fisher"``) are the case's ``case.targets``: a
step on the samples ``idx`` uses ``case.targets[:, idx]``, so an adapter replays them.
"""

import numpy as np
import scipy.linalg

from .. import options as _options
from ..checks import validate
from ..curvature.ekfac import EigenbasisMoments, EKFACBlock
from ..curvature.exact import exact_matrix
from ..curvature.kronecker import DAMPING_FORMS, KroneckerBlock, check_kfac_options, kfac, layer_statistics
from ..curvature.operators import block_diagonal
from ..curvature.output_factors import OutputFactor
from ..derivatives import grad
from ..optim.base import DivergenceError
from ..params import unflatten_params
from ..scalars import is_int
from ..vocabulary import CURVATURES, check_curvature
from .zoo import Case

#: the starts (and schedules) of a moving average; see the module docstring
EMA_STARTS = ("first", "zero", "zero_debiased", "identity")
#: the batches of ``k`` steps: the case's samples split into ``k`` contiguous parts, or all of them every step
BATCHES = ("split", "repeat")
#: optimizer families: the options table of each (``refprune.options.TABLE``)
_TABLES = {"kfac": "KFAC", "ekfac": "EKFAC", "natural_gradient": "NaturalGradient"}

_DIRECTION = "the direction d = P g (before the KL clip, weight decay, momentum and lr)"
_UPDATE = ("d = P g, nu = min(1, sqrt(kl_clip / (lr^2 d.g))) when kl_clip is set (Ba et al. 2017, §5; d before weight "
           "decay), d = nu d + weight_decay theta, buf = momentum buf + d, theta - lr buf")
_EMA = ("moving average x_u = eps_u x_(u-1) + (1 - eps_u) X_u with decay ema_decay, started as ema_start says: 'first' "
        "eps_u = min(decay, 1 - 1/u) (the first estimate is the first batch's); 'zero' x_0 = 0, eps_u = decay; "
        "'zero_debiased' the same divided by 1 - decay^u; 'identity' x_0 = I, eps_u = decay")
_STATE = ("the state: factors (the averaged factors after `updates` updates, one (S, A) per block in the order "
          "and shapes of rp.kfac(..., bias=bias).factors(), or None for the start) and buf (the momentum buffer, "
          "None = 0); this step is update number updates + 1 and refreshes the preconditioner")
_MC = "curvature='mc_fisher': the Monte Carlo targets case.targets[:, idx] of the step's samples idx"
_KFAC_P = ("P = the damped (S kron A)^-1 of every block (Martens & Grosse 2015, §6.3): 'exact' S kron A + lam I; "
           "'factored' (S + sqrt(lam) I) kron (A + sqrt(lam) I); 'pi' (S + sqrt(lam)/pi I) kron "
           "(A + pi sqrt(lam) I), pi = sqrt((tr A / dim A) / (tr S / dim S)); S, A the averaged K-FAC factors of the "
           "batch (docs/conventions.md §4)")
_EKFAC_P = ("P = U_SA diag(1 / (kappa + lam)) U_SA^T (George et al. 2018, Algorithm 1): U_SA = U_S kron U_A the "
            "eigenvectors of the averaged K-FAC factors, kappa_ij = R sum_(n,k) [U_S^T G_nk U_A]_ij^2 re-estimated "
            "on the batch's per-sample gradients (eq. 10) and averaged with scale_decay (restarted at every refresh of "
            "the basis, the first estimate the re-estimate's own)")
_NG_P = ("P = (F + lam I)^-1 with F the exact curvature matrix of the batch (structure='layer': its per-layer diagonal "
         "blocks), averaged over steps, solved by Cholesky (docs/optimizers.md §2)")
_STEPS = ("k steps from the fresh state (no averages yet, buf = 0); batches='split': step u uses the u-th of k "
          "contiguous parts of the case's samples (numpy.array_split), 'repeat': all of them every step; the "
          "preconditioner is refreshed at steps 1, 1 + refresh_interval, ... and used unchanged in between; "
          "the result is theta after step k")


def _kron_defaults(family):
    d = dict(curvature="ggn", approx="expand", bias="fold", damping=1e-3)
    if family == "kfac":
        d["damping_form"] = "pi"
    return d


def _ng_defaults():
    return dict(curvature="fisher", damping=1e-3, structure="full")


def _defaults(family, kind):
    d = _ng_defaults() if family == "natural_gradient" else _kron_defaults(family)
    d.update(ema_decay=0.0 if family == "natural_gradient" else 0.95, ema_start="first")
    if kind != "steps":
        d.update({("matrix" if family == "natural_gradient" else "factors"): None, "updates": 0})
    if kind != "direction":
        d.update(lr=1.0 if family == "natural_gradient" else 0.1, momentum=0.0, weight_decay=0.0, kl_clip=None)
    if kind == "step":
        d["buf"] = None
    if kind == "steps":
        if family != "natural_gradient":
            d["refresh_interval"] = 1
        if family == "ekfac":
            d.update(scale_interval=1, scale_decay=0.95)
        d.update(k=3, batches="split")
    return d


# ---------------------------------------------------------------- options


def optimizer_options(name, given=None):
    """The options of quantity ``name``: its defaults updated by ``given`` (a dict),
    each checked against its type and range (``refprune.options.TABLE`` for the
    optimizer's own options).  Raises ``ValueError`` for an unknown quantity or
    option, or an option that does not apply, ``TypeError`` for a wrong type; every
    message names the quantity, the option, the value given and what is accepted."""
    if not isinstance(name, str) or name not in OPTIMIZER_QUANTITIES:
        raise ValueError(f"optimizer quantities: unknown quantity {name!r}; known: {sorted(OPTIMIZER_QUANTITIES)}")
    where = f"optimizer quantity {name}"
    given = {} if given is None else given
    if not isinstance(given, dict):
        raise TypeError(f"{where}: options must be a dict, got {type(given).__name__}")
    defaults = OPTIMIZER_QUANTITIES[name][2]
    unknown = sorted((k for k in given if k not in defaults), key=str)
    if unknown:
        raise ValueError(f"{where}: unknown options {unknown}; it takes {sorted(defaults)}")
    o = dict(defaults, **given)
    family = _family(name)
    table = _TABLES[family]
    rows = {r.name for r in _options.TABLE[table]}
    o.update(_options.convert(table, {k: v for k, v in o.items() if k in rows and k != "curvature"}, where=where))
    if family == "natural_gradient":
        check_curvature(o["curvature"], CURVATURES, where)
    else:
        check_kfac_options(o["curvature"], o["approx"], o["bias"], where)
    if o["ema_start"] not in EMA_STARTS:
        raise ValueError(f"{where}: ema_start must be one of {EMA_STARTS}, got {o['ema_start']!r}")
    if "k" in o:
        if not is_int(o["k"]):
            raise TypeError(f"{where}: k must be a positive int, got {o['k']!r}")
        if o["k"] < 1:
            raise ValueError(f"{where}: k must be a positive int, got {o['k']!r}")
        o["k"] = int(o["k"])
        if o["batches"] not in BATCHES:
            raise ValueError(f"{where}: batches must be one of {BATCHES}, got {o['batches']!r}")
    state = "matrix" if family == "natural_gradient" else "factors"
    if state in o:
        if not is_int(o["updates"]) or isinstance(o["updates"], (bool, np.bool_)):
            raise TypeError(f"{where}: updates must be a non-negative int, got {o['updates']!r}")
        if o["updates"] < 0:
            raise ValueError(f"{where}: updates must be a non-negative int, got {o['updates']!r}")
        o["updates"] = int(o["updates"])
        if o[state] is None and o["updates"]:
            raise ValueError(f"{where}: updates={o['updates']} needs the averaged {state} they made ({state}=); "
                             f"without {state}= the state is the start and updates must be 0")
        if o[state] is not None and o["updates"] == 0 and o["ema_start"] == "first":
            raise ValueError(f"{where}: {state}= given with updates=0; with ema_start='first' an average exists only "
                             "after an update (updates >= 1)")
        if o[state] is None and o["ema_start"] == "first" and o["ema_decay"] != defaults["ema_decay"]:
            raise ValueError(f"{where}: ema_decay={o['ema_decay']!r} does not apply to a first step from the start "
                             f"with ema_start='first' (its estimate is the batch's own); give {state}= and updates=, "
                             f"or leave ema_decay at {defaults['ema_decay']!r}")
    return o


def _family(name):
    return name.rsplit("_", 1)[0]


def _kind(name):
    return name.rsplit("_", 1)[1]


def _check_state(case, o, where, blocks_like=None):
    """The state arrays of ``o`` checked against the case: ``buf (n,)``, ``matrix
    (n, n)``, ``factors`` a list of ``(S, A)`` shaped as the case's K-FAC blocks."""
    n = case.n_params
    out = {}
    if o.get("buf") is not None:
        out["buf"] = _real(o["buf"], (n,), f"{where}: buf")
    if o.get("matrix") is not None:
        out["matrix"] = _real(o["matrix"], (n, n), f"{where}: matrix")
    if o.get("factors") is not None:
        shapes = [(b.S.shape, b.A.shape) for b in blocks_like]
        f = o["factors"]
        if not isinstance(f, (list, tuple)) or len(f) != len(shapes):
            raise ValueError(f"{where}: factors must be a list of {len(shapes)} (S, A) pairs (one per K-FAC block, "
                             f"bias={o['bias']!r}), got {type(f).__name__}"
                             + (f" of length {len(f)}" if isinstance(f, (list, tuple)) else ""))
        arrays = []
        for i, (pair, (sS, sA)) in enumerate(zip(f, shapes)):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise ValueError(f"{where}: factors[{i}] must be a pair (S, A), got {type(pair).__name__}")
            arrays += [_real(pair[0], sS, f"{where}: factors[{i}] S"), _real(pair[1], sA, f"{where}: factors[{i}] A")]
        out["factors"] = arrays
    return out


def _real(a, shape, what):
    try:
        arr = np.asarray(a)
    except Exception:  # an object numpy cannot read is refused below by its type
        arr = np.asarray(None)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{what} must be a real array of shape {shape}, got {type(a).__name__} of dtype {arr.dtype}")
    if arr.shape != shape:
        raise ValueError(f"{what} must have shape {shape}, got {arr.shape}")
    arr = np.array(arr, dtype=np.float64)  # a copy: the caller's array is never written to
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contains NaN or inf")
    return arr


# ---------------------------------------------------------------- the engine


def _identity_like(arrays):
    return [np.eye(len(a)) for a in arrays]


def _fold(raw, batch, u, decay, start, bugs):
    """One update ``u`` (1-based) of the moving average; returns ``(raw, estimate)``
    (they differ only for ``"zero_debiased"``).  Martens & Grosse (2015, §5) for the
    average, ``refprune.optim.base.MovingAverage`` for ``"first"``."""
    if start == "first":
        eps = decay if "ema_constant" in bugs and u > 1 else min(decay, 1.0 - 1.0 / u)
        if raw is None or eps == 0:
            new = [np.array(b, dtype=np.float64) for b in batch]
            return new, new
    else:
        eps = decay
        if raw is None:
            raw = [np.zeros_like(b) for b in batch] if start in ("zero", "zero_debiased") else _identity_like(batch)
    if "ema_swapped" in bugs:
        new = [(1 - eps) * v + eps * b for v, b in zip(raw, batch)]
    else:
        new = [eps * v + (1 - eps) * b for v, b in zip(raw, batch)]
    if start == "zero_debiased":
        return new, [v / (1 - decay**u) for v in new]
    return new, new


def _batches(case, o, k):
    n = len(case.X)
    if k == 1 or o["batches"] == "repeat":  # only k steps have batches (and k > 1)
        return [np.arange(n)] * k
    if k > n:
        raise ValueError(f"optimizer quantities: k={k} steps with batches='split' need at least k samples; case "
                         f"{case.name} has {n} (use batches='repeat' or a smaller k)")
    return np.array_split(np.arange(n), k)


def case_targets(case):
    """The Monte Carlo targets of a step on the samples ``idx`` of ``case``: ``case.targets[:, idx]``."""
    return lambda u, params, idx: case.targets[:, idx]


class _Kron:
    """K-FAC and EKFAC preconditioners with their averages, as in
    ``refprune/optim/kronecker.py`` (written out so that the planted bugs can change
    one piece at a time)."""

    def __init__(self, family, o, state, bugs):
        self.family, self.o, self.bugs = family, o, bugs
        self.raw = state.get("factors")
        self.updates = o.get("updates", 0)
        self.blocks = self.basis = None
        self.scale_raw, self.scale_updates = None, 0
        self.start = o["ema_start"]

    def _due(self, u, interval):
        if "refresh_at_multiples" in self.bugs:
            return u % interval == 0
        if "refresh_every_step" in self.bugs:
            return True
        return (u - 1) % interval == 0

    def direction(self, u, model, params, X, y, loss, targets, g):
        o = self.o
        curvature = o["curvature"]
        if "empirical_fisher" in self.bugs:
            curvature, targets = "empirical_fisher", None
        if "true_fisher" in self.bugs:
            curvature, targets = "fisher", None
        approx = {"expand": "reduce", "reduce": "expand"}[o["approx"]] if "other_approx" in self.bugs else o["approx"]
        kw = dict(targets=targets) if curvature == "mc_fisher" else {}
        op = kfac(model, params, X, y, loss, curvature=curvature, approx=approx, bias=o["bias"], **kw)
        layouts = [b.layout for b in op.blocks]
        batch = [m for b in op.blocks for m in (b.S, b.A)]
        if "state_ignored" in self.bugs:  # one call: a direction or a step (the state is never read again)
            avg = batch
        else:
            self.raw, avg = _fold(self.raw, batch, self.updates + u, o["ema_decay"], self.start, self.bugs)
        averaged = [(avg[2 * i], avg[2 * i + 1], lay) for i, lay in enumerate(layouts)]
        # the intervals are read from the second step on, which only k steps (which have them) take
        if self.family == "kfac":
            if self.blocks is None or self._due(u, o["refresh_interval"]):
                self.blocks = [KroneckerBlock(S.copy(), A.copy(), lay) for S, A, lay in averaged]
            return self._kfac_direction(g)
        refresh = self.basis is None or self._due(u, o["refresh_interval"])
        rescale = refresh or (u - 1) % o["scale_interval"] == 0
        if refresh:
            self.basis = [KroneckerBlock(S.copy(), A.copy(), lay) for S, A, lay in averaged]
            if "basis_transposed" in self.bugs:
                for b in self.basis:
                    s, US, a, UA = b.eigh()
                    b._eig = (s, US.T.copy(), a, UA.T.copy())
            self.scale_raw, self.scale_updates = None, 0
        if rescale:
            scales = self._scales(model, params, X, y, loss, curvature, kw, g)
            self.scale_updates += 1
            self.scale_raw, est = _fold(self.scale_raw, scales, self.scale_updates, o.get("scale_decay", 0.95),
                                        "first", frozenset())
            self.blocks = [EKFACBlock(b, s) for b, s in zip(self.basis, est)]
        lam = o["damping"]
        d = np.zeros_like(g)
        for b in self.blocks:
            sl = slice(b.layout.offset, b.layout.offset + b.layout.size)
            d[sl] = b.inverse_matmat(g[sl, None], lam)[:, 0]
        return d

    def _scales(self, model, params, X, y, loss, curvature, kw, g):
        if "kfac_eigenvalues" in self.bugs:  # no re-estimation: K-FAC's sigma_i alpha_j
            return [b.eigenvalues() for b in self.basis]
        if "scales_from_batch_gradient" in self.bugs:  # (U_S^T G U_A)^2 of the mini-batch gradient G
            out = []
            for b in self.basis:
                _, US, _, UA = b.eigh()
                M = b.layout.to_matrix(g[b.layout.offset : b.layout.offset + b.layout.size, None])[0]
                out.append((US.T @ M @ UA) ** 2)
            return out
        inp = validate(model, params, X, y, loss)
        moments = EigenbasisMoments(self.basis, model)
        layer_statistics(inp, OutputFactor(inp, curvature, targets=kw.get("targets"), where="ekfac step"),
                         moments.visit)
        return moments.scales(inp)

    def _kfac_direction(self, g):
        o, bugs = self.o, self.bugs
        lam, form = o["damping"], o["damping_form"]
        d = np.zeros_like(g)
        for b in self.blocks:
            sl = slice(b.layout.offset, b.layout.offset + b.layout.size)
            if not bugs & {"damping_not_sqrt", "pi_unnormalised"}:
                d[sl] = b.inverse_matmat(g[sl, None], lam, form)[:, 0]
                continue
            # the factored forms with a wrong shift (Martens & Grosse 2015, §6.3 for the right one)
            r = lam if "damping_not_sqrt" in bugs else np.sqrt(lam)
            pi = 1.0
            if form == "pi":
                pi = np.sqrt(np.trace(b.A) / np.trace(b.S)) if "pi_unnormalised" in bugs else b.pi()
            s, US, a, UA = b.eigh()
            M = b.layout.to_matrix(g[sl, None])[0]
            d[sl] = b.layout.from_matrix((US @ ((US.T @ M @ UA) / np.outer(s + r / pi, a + r * pi)) @ UA.T)[None])[:, 0]
        return d


class _Natural:
    """The exact natural gradient's preconditioner and its average
    (``refprune/optim/natural.py``)."""

    def __init__(self, o, state, bugs):
        self.o, self.bugs = o, bugs
        self.raw = None if state.get("matrix") is None else [state["matrix"]]
        self.updates = o.get("updates", 0)

    def direction(self, u, model, params, X, y, loss, targets, g):
        o, bugs = self.o, self.bugs
        curvature = next((c for c in ("empirical_fisher", "hessian", "fisher") if c in bugs), o["curvature"])
        if "true_fisher" in bugs:
            curvature = "fisher"
        structure = {"full": "layer", "layer": "full"}[o["structure"]] if "other_structure" in bugs else o["structure"]
        kw = dict(targets=targets) if curvature == "mc_fisher" else {}
        if structure == "layer":
            F = block_diagonal(model, params, X, y, loss, curvature=curvature, **kw).to_dense()
        else:
            F = exact_matrix(model, params, X, y, loss, curvature=curvature, **kw)
        if "state_ignored" in bugs:  # one call: a direction or a step (the state is never read again)
            avg = F
        else:
            self.raw, est = _fold(self.raw, [F], self.updates + u, o["ema_decay"], o["ema_start"], bugs)
            avg = est[0]
        M = avg + o["damping"] * np.eye(len(avg))
        try:
            return scipy.linalg.cho_solve(scipy.linalg.cho_factor(M), g)
        except np.linalg.LinAlgError:
            raise np.linalg.LinAlgError(f"natural gradient: the damped {curvature} matrix is not positive definite "
                                        f"(smallest eigenvalue {np.linalg.eigvalsh(M)[0]:.3e}); use a larger "
                                        "damping") from None


def run(case, name, options=None, bugs=(), targets=None):
    """Quantity ``name`` on ``case`` with ``options`` (checked by
    :func:`optimizer_options`) and the planted ``bugs`` (names of
    :data:`NEIGHBOUR_BUGS`; none for refprune's value).  ``targets(u, params, idx)``
    gives the Monte Carlo targets of step ``u`` on the samples ``idx`` (default the
    case's own, :func:`case_targets`)."""
    if not isinstance(case, Case):
        raise TypeError(f"optimizer quantity {name}: case must be a refprune.conformance.Case, got "
                        f"{type(case).__name__}")
    o = optimizer_options(name, options)
    bugs = frozenset(bugs)
    family, kind = _family(name), _kind(name)
    where = f"optimizer quantity {name}"
    model, loss = case.model, case.loss
    blocks_like = None
    if o.get("factors") is not None:
        kw = dict(targets=case.targets) if o["curvature"] == "mc_fisher" else {}
        blocks_like = kfac(*case.args(), curvature=o["curvature"], approx=o["approx"], bias=o["bias"], **kw).blocks
    state = _check_state(case, o, where, blocks_like)
    targets = case_targets(case) if targets is None else targets
    pre = _Natural(o, state, bugs) if family == "natural_gradient" else _Kron(family, o, state, bugs)
    k = o.get("k", 1)
    theta = case.theta
    buf = state.get("buf", np.zeros_like(theta))
    lr, m, wd, c = o.get("lr"), o.get("momentum"), o.get("weight_decay"), o.get("kl_clip")
    for u, idx in enumerate(_batches(case, o, k), start=1):
        params = unflatten_params(model, theta)
        X, y = case.X[idx], case.y[idx]
        t = targets(u, params, idx) if o["curvature"] == "mc_fisher" else None
        g = grad(model, params, X, y, loss)
        if "weight_decay_preconditioned" in bugs:  # weight decay as part of the loss's gradient
            d = pre.direction(u, model, params, X, y, loss, t, g + wd * theta)
        else:
            d = pre.direction(u, model, params, X, y, loss, t, g)
        if kind == "direction":
            return d
        wd_term = 0.0 if "weight_decay_preconditioned" in bugs else wd * theta
        clip = c is not None and "no_kl_clip" not in bugs
        if "momentum_before_clip" in bugs:
            buf = m * buf + (d + wd_term)
            if clip:
                buf = buf * _kl_factor(buf, g, lr, c, bugs)
        else:
            if "kl_after_weight_decay" in bugs:
                d = d + wd_term
                d = d * (_kl_factor(d, g, lr, c, bugs) if clip else 1.0)
            else:
                # docs/optimizers.md §1: the clip's nu from d before weight decay
                d = d * (_kl_factor(d, g, lr, c, bugs) if clip else 1.0) + wd_term
            buf = m * buf + (1 - m) * d if "momentum_dampening" in bugs else m * buf + d
        with np.errstate(over="ignore", invalid="ignore"):
            theta = theta - (lr * lr if "lr_twice" in bugs else lr) * buf
        if not np.all(np.isfinite(theta)):
            raise DivergenceError(f"{where}: step {u} on case {case.name} diverged (parameters NaN or inf); lower lr "
                                  "or raise damping")
    return theta


def _kl_factor(d, g, lr, c, bugs):
    """Ba et al. (2017), §5: ``nu = min(1, sqrt(c / (lr^2 d.g)))``."""
    vg = (lr if "kl_lr_not_squared" in bugs else lr**2) * float(d @ g)
    if vg <= c:
        return 1.0
    return c / vg if "kl_no_sqrt" in bugs else float(np.sqrt(c / vg))


# ---------------------------------------------------------------- the tables


def _conventions(family, kind):
    p = {"kfac": _KFAC_P, "ekfac": _EKFAC_P, "natural_gradient": _NG_P}[family]
    what = {"direction": _DIRECTION + f" on the case's whole batch (case.X, case.y) from {_STATE}",
            "step": f"theta (n,) after one step on the case's whole batch from {_STATE}: {_UPDATE}",
            "steps": f"theta (n,) after {_STEPS}: {_UPDATE}"}[kind]
    if family == "natural_gradient":
        what = what.replace("factors (the averaged factors", "matrix (the averaged matrix (n, n)").replace(
            ", one (S, A) per block in the order and shapes of rp.kfac(..., bias=bias).factors()", "")
    if family == "ekfac":
        what = what.replace("refreshes the preconditioner", "refreshes the basis and re-estimates kappa")
    return f"{what}; {p}; {_EMA}; {_MC}"


def _reference(name):
    return lambda case, options: run(case, name, options)


#: ``name: (reference(case, options), conventions, defaults)``
OPTIMIZER_QUANTITIES = {}
for _fam in _TABLES:
    for _k in ("direction", "step", "steps"):
        _name = f"{_fam}_{_k}"
        OPTIMIZER_QUANTITIES[_name] = (_reference(_name), _conventions(_fam, _k), _defaults(_fam, _k))

#: ``bug name: (description, applies(family, kind, options))``: the planted bugs of the neighbours
NEIGHBOUR_BUGS = {
    "ema_constant": ("moving average with eps_u = decay from the second update on (no running mean while "
                     "1 - 1/u < decay)", lambda f, k, o: o["ema_start"] == "first" and o["ema_decay"] > 0),
    "ema_swapped": ("moving average with the weights swapped: x_u = (1 - eps_u) x_(u-1) + eps_u X_u",
                    lambda f, k, o: o["ema_decay"] > 0 or o["ema_start"] != "first"),
    "state_ignored": ("the given state ignored: the batch's statistics alone",
                      lambda f, k, o: k != "steps" and (o.get("factors") is not None or o.get("matrix") is not None)),
    "damping_not_sqrt": ("factored damping with lam instead of sqrt(lam) added to each factor",
                         lambda f, k, o: f == "kfac" and o["damping_form"] != "exact" and o["damping"] > 0),
    "pi_unnormalised": ("pi = sqrt(tr A / tr S) without dividing the traces by the factors' dimensions",
                        lambda f, k, o: f == "kfac" and o["damping_form"] == "pi" and o["damping"] > 0),
    "kfac_eigenvalues": ("EKFAC without re-estimated eigenvalues: K-FAC's sigma_i alpha_j + lam (K-FAC with damping "
                         "form 'exact')", lambda f, k, o: f == "ekfac"),
    "basis_transposed": ("EKFAC's eigenbasis projection transposed: U_S, U_A used as U_S^T, U_A^T (rows taken for "
                         "eigenvectors)", lambda f, k, o: f == "ekfac"),
    "scales_from_batch_gradient": ("EKFAC's kappa from the squared projected mini-batch gradient (U_S^T G U_A)^2 "
                                   "instead of the sum of the per-sample squares", lambda f, k, o: f == "ekfac"),
    "empirical_fisher": ("the empirical Fisher (observed targets) in place of the chosen curvature",
                         lambda f, k, o: o["curvature"] != "empirical_fisher"),
    "true_fisher": ("the true Fisher (the expectation) in place of the Monte Carlo Fisher's sampled targets",
                    lambda f, k, o: o["curvature"] == "mc_fisher"),
    "hessian": ("the Hessian in place of the chosen curvature",
                lambda f, k, o: f == "natural_gradient" and o["curvature"] != "hessian"),
    "fisher": ("the Fisher (= the GGN) in place of the Hessian",
               lambda f, k, o: f == "natural_gradient" and o["curvature"] == "hessian"),
    "other_approx": ("the other K-FAC variant for convolutions (expand <-> reduce)",
                     lambda f, k, o: f != "natural_gradient"),
    "other_structure": ("the other structure (the whole matrix <-> its per-layer blocks)",
                        lambda f, k, o: f == "natural_gradient"),
    "refresh_every_step": ("the preconditioner refreshed at every step instead of every refresh_interval steps",
                           lambda f, k, o: k == "steps" and o.get("refresh_interval", 1) > 1),
    "refresh_at_multiples": ("the preconditioner refreshed at steps interval, 2 interval, ... (and the first) instead "
                             "of 1, 1 + interval, ...",
                             lambda f, k, o: k == "steps" and o.get("refresh_interval", 1) > 1),
    "no_kl_clip": ("no KL clip", lambda f, k, o: k != "direction" and o["kl_clip"] is not None),
    "kl_no_sqrt": ("KL clip nu = min(1, c / (lr^2 d.g)) without the square root",
                   lambda f, k, o: k != "direction" and o["kl_clip"] is not None),
    "kl_lr_not_squared": ("KL clip nu = min(1, sqrt(c / (lr d.g))) with lr not squared",
                          lambda f, k, o: k != "direction" and o["kl_clip"] is not None),
    "kl_after_weight_decay": ("KL clip computed on and applied to d + weight_decay theta (weight decay before the "
                              "clip)",
                              lambda f, k, o: k != "direction" and o["kl_clip"] is not None and o["weight_decay"] > 0),
    "momentum_before_clip": ("momentum applied before the KL clip: nu computed from and applied to the momentum "
                             "buffer",
                             lambda f, k, o: k != "direction" and o["kl_clip"] is not None and o["momentum"] > 0),
    "momentum_dampening": ("momentum with dampening: buf = momentum buf + (1 - momentum) d",
                           lambda f, k, o: k != "direction" and o["momentum"] > 0),
    "weight_decay_preconditioned": ("weight decay added to the gradient before preconditioning: P (g + weight_decay "
                                    "theta)", lambda f, k, o: k != "direction" and o["weight_decay"] > 0),
    "lr_twice": ("the learning rate applied twice: theta - lr^2 buf",
                 lambda f, k, o: k != "direction" and o["lr"] != 1),
}


def _form_neighbours(case, name, o):
    """K-FAC under the other damping forms: the damping added to the product instead
    of the factors, or the reverse."""
    if _family(name) != "kfac" or o["damping"] == 0:
        return []
    out = []
    for form in DAMPING_FORMS:
        if form != o["damping_form"]:
            where = "to the product" if form == "exact" else "to the factors"
            out.append((f"damping form {form!r} (lam added {where}) instead of {o['damping_form']!r}",
                        lambda form=form: run(case, name, dict(o, damping_form=form))))
    return out


def _option_neighbours(case, name, o):
    """The same quantity under another documented convention: the other moving-average
    starts and the other batching (``[(description, thunk)]``)."""
    out = []
    fam, kind = _family(name), _kind(name)
    state = "matrix" if fam == "natural_gradient" else "factors"
    for start in EMA_STARTS:
        if start == o["ema_start"] or (start == "first" and o.get(state) is not None and o["updates"] == 0):
            continue
        opts = dict(o, ema_start=start)
        if start == "first" and o.get(state) is None and kind != "steps":
            opts["ema_decay"] = OPTIMIZER_QUANTITIES[name][2]["ema_decay"]
        out.append((f"moving average started as ema_start={start!r} instead of {o['ema_start']!r} "
                    f"({_START_WORDS[start]})", lambda opts=opts: run(case, name, opts)))
    if kind == "steps" and o["k"] > 1:
        other = {"split": "repeat", "repeat": "split"}[o["batches"]]
        if other == "repeat" or o["k"] <= len(case.X):
            out.append((f"batches={other!r} instead of {o['batches']!r}",
                        lambda other=other: run(case, name, dict(o, batches=other))))
    return out


_START_WORDS = {"first": "the first estimate is the first batch's, eps_u = min(decay, 1 - 1/u)",
                "zero": "x_0 = 0 without bias correction", "zero_debiased": "x_0 = 0 with bias correction",
                "identity": "x_0 = I"}


def neighbours(case, name, options=None, rtol=1e-12):
    """``[(description, array)]``: quantity ``name`` on ``case`` with one realistic
    bug planted, for each bug that applies to ``options`` and changes the result by
    more than ``rtol`` relative to refprune's value (a variant equal to it names
    nothing); variants that cannot be computed (a singular damped matrix) are left out."""
    o = optimizer_options(name, options)
    fam, kind = _family(name), _kind(name)
    ref = run(case, name, o)
    scale = max(float(np.abs(ref).max()), 1e-300)
    candidates = [(desc, lambda b=bug: run(case, name, o, bugs=[b]))
                  for bug, (desc, applies) in NEIGHBOUR_BUGS.items() if applies(fam, kind, o)]
    candidates += _form_neighbours(case, name, o) + _option_neighbours(case, name, o)
    out = []
    for desc, fn in candidates:
        try:
            out.append((desc, fn()))
        except (np.linalg.LinAlgError, FloatingPointError):  # a variant the case makes singular or divergent
            continue
    return [(d, a) for d, a in out if np.all(np.isfinite(a)) and float(np.abs(a - ref).max()) > rtol * scale]


#: ``name: fn(case, options) -> [(description, array)]``, see :func:`neighbours`
OPTIMIZER_NEIGHBOURS = {name: (lambda case, options=None, name=name: neighbours(case, name, options))
                        for name in OPTIMIZER_QUANTITIES}
