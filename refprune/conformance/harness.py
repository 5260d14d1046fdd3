"""Check another implementation against refprune over the zoo.

The caller wraps their code in an :class:`Adapter`: one callable per quantity they
have, each taking a :class:`~refprune.conformance.zoo.Case` and returning a NumPy array
(or something ``numpy.asarray`` understands: a CPU tensor, a JAX array).  :func:`check`
runs every callable on every case, compares with refprune under the conventions of
``docs/conventions.md`` and returns a :class:`Report`: per quantity the largest relative
error, pass or fail at the stated tolerance and, for a failure, the smallest case that
shows it, the conventions it was compared under and what the difference looks like.

Every quantity is a row of :data:`QUANTITIES`, ``name: (reference(case, options),
conventions, defaults)``; the pruning quantities come from
:mod:`refprune.conformance.pruning_quantities`, and a module of further quantities adds
its own table with one ``QUANTITIES.update(...)``.  An adapter chooses a quantity's
variant with ``Adapter(options={name: {...}})``, checked against the quantity's
``defaults`` and the options table (``refprune.options.TABLE["Adapter options"]``).
"""

import time
from dataclasses import dataclass, field

import numpy as np

from .. import derivatives as _d
from ..curvature import diagonal as _diag
from ..curvature import exact as _c
from .. import options as _options
from ..curvature.kronecker import check_kfac_options, kfac
from ..curvature.layout import blocks_to_flat
from ..params import flatten_params
from ..scalars import is_number
from . import neighbours as _neighbours
from .diagnosis import compare_pairs, constant_factor, diagnose, real_array, relative_error
from .optimizer_quantities import OPTIMIZER_NEIGHBOURS, OPTIMIZER_QUANTITIES, optimizer_options
from .pruning_quantities import (EKFAC_NOT_UNIQUE, PRUNING_QUANTITIES, Grouped, NotCompared, checked_ekfac,  # noqa: F401
                                 clusters, ekfac_is_well_defined, exact_curvature, monte_carlo)
from .zoo import Case, zoo

_PARAMS = "theta in PyTorch order (weight.ravel() then bias, layer by layer; docs/conventions.md §1)"
_LOSS = "L = R sum_n l_n, PyTorch's reductions, R = 1/N (cross-entropy mean), 1/(N C) (squared-error and " \
        "binary cross-entropy mean), 1 (sum) " \
        "(docs/conventions.md §2)"


def _obs(case):
    """``(G + lambda I)^-1`` of the case (the OBS quantities use it)."""
    G = _c.ggn(*case.args())
    return np.linalg.inv(G + case.obs_damping * np.eye(len(G)))


def _obs_update(case, options):
    Hinv = _obs(case)
    q = case.obs_index
    return -(case.theta[q] / Hinv[q, q]) * Hinv[:, q]


def _kfac_kw(case, options):
    """K-FAC's options; with ``curvature="mc_fisher"`` the case's sampled targets, so
    that the adapter can replay them (``case.targets``)."""
    return dict(options, **monte_carlo(case, options))


_clusters = clusters
_ekfac_curvature = exact_curvature


def _kfac_dense(case, options):
    """The K-FAC matrix in theta order, assembled from its ``(S, A)`` pairs by the public
    layout helper (and so a check of ``KFAC.to_dense`` in the self-check)."""
    return blocks_to_flat(case.model, kfac(*case.args(), **_kfac_kw(case, options)).factors(), options["bias"])


def _no_options(fn):
    """A reference of a quantity without options: ``fn(case)`` as ``reference(case, options)``
    (``options`` may be left out)."""
    return lambda case, options=None: fn(case)


_KFAC_DEFAULTS = dict(curvature="ggn", approx="expand", bias="fold")

#: ``name: (reference(case, options), conventions, defaults)``: refprune's computation, the
#: conventions it is compared under, and the options the quantity takes with their
#: defaults (``{}``: none; an adapter sets them with ``Adapter(options={name: {...}})``).
#: A module of further quantities adds its table in one line (``QUANTITIES.update(...)``).
QUANTITIES = {
    "loss": (_no_options(lambda c: _d.loss(*c.args())), _LOSS, {}),
    "grad": (_no_options(lambda c: _d.grad(*c.args())), f"dL/dtheta, {_PARAMS}", {}),
    "per_sample_grads": (_no_options(lambda c: _d.per_sample_grads(*c.args())),
                         "(N, n), row n is R dl_n/dtheta so that rows sum to grad (docs/conventions.md §2)", {}),
    "hvp": (_no_options(lambda c: _d.hvp(*c.args(), c.v)), "H v for v = case.v", {}),
    "hessian": (_no_options(lambda c: _c.hessian(*c.args())), f"d^2 L/dtheta^2, (n, n), {_PARAMS}", {}),
    "ggn": (_no_options(lambda c: _c.ggn(*c.args())),
            "R sum_n J_n^T Lambda_n J_n, Lambda = 2I for squared error, diag(yhat) - yhat yhat^T for cross-entropy, "
            "diag(p (1 - p)), p = sigmoid(f), for binary cross-entropy (docs/conventions.md §3)", {}),
    "residual": (_no_options(lambda c: _c.residual(*c.args())), "H - GGN", {}),
    "fisher": (_no_options(lambda c: _c.fisher(*c.args(), curvature="fisher")),
               "true Fisher with the likelihoods of docs/conventions.md §3 (Gaussian variance 1/2, Bernoulli for "
               "binary cross-entropy), = GGN", {}),
    "mc_fisher": (_no_options(lambda c: _c.fisher(*c.args(), curvature="mc_fisher", targets=c.targets)),
                  "R sum_n mean_s g_n(y_s) g_n(y_s)^T over the sampled targets case.targets", {}),
    "empirical_fisher": (_no_options(lambda c: _c.fisher(*c.args(), curvature="empirical_fisher")),
                         "R sum_n g_n g_n^T at the observed targets (g_n = dl_n/dtheta, unscaled)", {}),
    "hessian_diagonal": (_no_options(lambda c: _diag.hessian_diagonal(*c.args())), "diag(H)", {}),
    "ggn_diagonal": (_no_options(lambda c: _diag.ggn_diagonal(*c.args())), "diag(GGN)", {}),
    "empirical_fisher_diagonal": (_no_options(lambda c: _diag.fisher_diagonal(*c.args(),
                                                                              curvature="empirical_fisher")),
                                  "diag of the empirical Fisher", {}),
    "mc_fisher_diagonal": (_no_options(lambda c: _diag.fisher_diagonal(*c.args(), curvature="mc_fisher",
                                                                       targets=c.targets)),
                           "diag of the MC Fisher over case.targets", {}),
    "kfac": (_kfac_dense, "the K-FAC matrix (n, n), block diagonal, S kron A per layer over [W | b] "
                          "(docs/conventions.md §4)", dict(_KFAC_DEFAULTS)),
    "kfac_factors": (lambda c, o: [(b.S, b.A) for b in kfac(*c.args(), **_kfac_kw(c, o)).blocks],
                     "[(S, A)] per block, the (G, A) pairs other libraries store: S = R sum g g^T over the layer's "
                     "outputs, A = (1/(N T)) sum a a^T over its inputs (docs/conventions.md §4); bias='fold': one "
                     "pair per Linear/Conv2d, A over [inputs; 1]; bias='separate': per layer with a bias two "
                     "pairs, (S, A_W) over the inputs then the bias block (S, [[1]])", dict(_KFAC_DEFAULTS)),
    "ekfac": (lambda c, o: checked_ekfac(c, o).to_dense(),
              "EKFAC matrix (n, n): K-FAC's eigenbasis, eigenvalues re-estimated (docs/conventions.md §5)",
              dict(_KFAC_DEFAULTS)),
    "obd_saliencies": (_no_options(lambda c: flatten_params(c.params) ** 2 * _diag.hessian_diagonal(*c.args()) / 2),
                       "theta_q^2 H_qq / 2 for every coordinate, exact Hessian diagonal (docs/conventions.md §7)", {}),
    "obs_saliencies": (_no_options(lambda c: c.theta**2 / (2 * np.diag(_obs(c)))),
                       "theta_q^2 / (2 [(G + lambda I)^-1]_qq) for every coordinate, lambda = case.obs_damping, G "
                       "the GGN (docs/conventions.md §7)", {}),
    "obs_update": (_obs_update, "the change of theta when case.obs_index is removed: "
                                "-(theta_q / [H^-1]_qq) H^-1 e_q, H = GGN + case.obs_damping I", {}),
}
QUANTITIES.update(PRUNING_QUANTITIES)
QUANTITIES.update(OPTIMIZER_QUANTITIES)
for _name, _fn in OPTIMIZER_NEIGHBOURS.items():  # their wrong variants, for the diagnosis of a failure
    if _name not in _neighbours.NEIGHBOURS:
        _neighbours.register(_name)(_fn)
_KFAC_QUANTITIES = ("kfac", "kfac_factors", "ekfac")

#: default relative tolerances; see docs/conventions.md §9 for how they were chosen
DEFAULT_RTOL = 1e-9


class Adapter:
    """Another implementation, one callable per quantity (any subset of :data:`QUANTITIES`).

    Each callable takes a :class:`~refprune.conformance.zoo.Case` and returns the
    quantity for it (a NumPy array, a CPU tensor or a JAX array; a list of them for the
    per-layer quantities).

    ``options`` says which variant a quantity computes: ``{name: {option: value}}``,
    each option one of the quantity's (``QUANTITIES[name][2]`` lists them with their
    defaults; ``refprune.options.describe("Adapter options")`` what each accepts).  An
    option the quantity does not take is refused by name.  ``kfac_options`` (a dict of
    ``curvature``, ``approx``, ``bias``) sets the same for every one of ``kfac``,
    ``kfac_factors`` and ``ekfac`` the adapter has; it is refused for an adapter without
    these quantities.  With ``curvature="mc_fisher"`` the reference uses the case's
    sampled targets ``case.targets``: replay them.

    Example
    -------
    >>> Adapter(grad=lambda case: my_grad(case.torch()), hessian=my_hessian)  # doctest: +SKIP
    >>> Adapter(kron_obs_saliencies=mine, options={"kron_obs_saliencies": {"shortcut": True}})  # doctest: +SKIP
    """

    def __init__(self, kfac_options=None, options=None, **quantities):
        unknown = sorted(set(quantities) - set(QUANTITIES))
        if unknown:
            raise ValueError(f"Adapter: unknown quantities {unknown}; known: {sorted(QUANTITIES)}")
        if not quantities:
            raise ValueError(f"Adapter: give at least one quantity callable; known: {sorted(QUANTITIES)}")
        for name, fn in quantities.items():
            if not callable(fn):
                raise TypeError(f"Adapter: {name} must be a callable taking a Case, got {type(fn).__name__}")
        self.quantities = dict(quantities)
        kopts = dict(_KFAC_DEFAULTS)
        if kfac_options is not None:
            if not isinstance(kfac_options, dict):
                raise TypeError(f"Adapter: kfac_options must be a dict with keys among {sorted(kopts)}, got "
                                f"{type(kfac_options).__name__}")
            unknown = sorted(set(kfac_options) - set(kopts), key=str)
            if unknown:
                raise ValueError(f"Adapter: kfac_options has unknown keys {unknown}; known: {sorted(kopts)}")
            if not set(quantities) & set(_KFAC_QUANTITIES):
                raise ValueError(f"Adapter: kfac_options apply to {list(_KFAC_QUANTITIES)}, which the adapter does not "
                                 f"compute (it has {sorted(quantities)})")
            kopts.update(kfac_options)
            check_kfac_options(kopts["curvature"], kopts["approx"], kopts["bias"], "Adapter: kfac_options")
        self.kfac_options = kopts
        per = {}
        if options is not None:
            if not isinstance(options, dict):
                raise TypeError(f"Adapter: options must be a dict {{quantity name: {{option: value}}}}, got "
                                f"{type(options).__name__}")
            for name, given in options.items():
                if name not in quantities:
                    raise ValueError(f"Adapter: options names {name!r}, which the adapter does not compute (it has "
                                     f"{sorted(quantities)})")
                if not isinstance(given, dict):
                    raise TypeError(f"Adapter: options[{name!r}] must be a dict {{option: value}}, got "
                                    f"{type(given).__name__}")
                if kfac_options is not None and name in _KFAC_QUANTITIES:
                    raise ValueError(f"Adapter: {name} has options both in kfac_options and in options; give them "
                                     "in one place")
                per[name] = given
        self.options = {}
        for name in quantities:
            defaults = QUANTITIES[name][2]
            opts = dict(defaults)
            if name in _KFAC_QUANTITIES:
                opts.update(kopts)
            given = per.get(name, {})
            unknown = sorted(set(given) - set(defaults), key=str)
            if unknown:
                known = f"its options: {sorted(defaults)}" if defaults else "it takes no options"
                raise ValueError(f"Adapter: options[{name!r}] has unknown keys {unknown}; {known}")
            if name in OPTIMIZER_QUANTITIES:  # the optimizers' own rows of the options table check them
                opts = optimizer_options(name, given)
            else:
                opts.update(quantity_options(name, given, defaults))
            if {"curvature", "approx", "bias"} <= set(opts):
                check_kfac_options(opts["curvature"], opts["approx"], opts["bias"], f"Adapter: options[{name!r}]")
            self.options[name] = opts


def quantity_options(name, given, defaults):
    """``given`` options of quantity ``name`` checked through the options table
    (``refprune.options.TABLE["Adapter options"]``); an option without a row there (a
    quantity added by another module) must be of its default's kind: a flag, a finite
    number, a name."""
    where = f"Adapter: options[{name!r}]"
    rows = {o.name for o in _options.TABLE["Adapter options"]}
    out = _options.convert("Adapter options", {k: v for k, v in given.items() if k in rows}, where)
    for key in given:
        if key in rows:
            continue
        d, v = defaults[key], given[key]
        if isinstance(d, bool):
            ok = isinstance(v, (bool, np.bool_))
            kind = "True or False"
        elif is_number(d):
            ok = is_number(v) and np.isfinite(float(v))
            kind = "a finite number"
        elif isinstance(d, str):
            ok = isinstance(v, str)
            kind = "a name (str)"
        else:
            ok, kind = True, ""
        if not ok:
            raise TypeError(f"{where}: {key} must be {kind} like its default {d!r}, got {v!r}")
        out[key] = v
    return out


@dataclass
class Failure:
    """The smallest case on which a quantity failed."""

    case: object
    error: float
    conventions: str
    diagnosis: list
    exception: str = None

    def explain(self):
        """The failure in words: the case, the error or exception, the diagnosis and
        the conventions of the comparison."""
        lines = [f"case {self.case.describe()}"]
        if self.exception:
            lines.append(f"the adapter raised {self.exception}")
        else:
            lines.append(f"relative error {self.error:.3e}")
            lines += [f"- {d}" for d in self.diagnosis]
        lines.append(f"compared under: {self.conventions}")
        return "\n".join(lines)


@dataclass
class QuantityResult:
    name: str
    tolerance: float
    cases: int = 0
    max_error: float = 0.0
    worst_case: str = ""
    failures: list = field(default_factory=list)
    seconds: float = 0.0
    #: ``[(case name, reason)]`` of the cases not compared (an EKFAC that is not unique)
    skipped: list = field(default_factory=list)

    @property
    def passed(self):
        """``True`` if no case failed and at least one was compared."""
        return not self.failures and self.cases > 0

    @property
    def smallest_failure(self):
        """The failure on the smallest case (cases run smallest first), or ``None``."""
        return self.failures[0] if self.failures else None


@dataclass
class Report:
    """Per-quantity results; ``ok`` if every quantity passed on every case."""

    results: list

    @property
    def ok(self):
        """``True`` if every quantity passed on every case."""
        return all(r.passed for r in self.results)

    def __getitem__(self, name):
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(f"the report has no quantity {name!r}; it has {[r.name for r in self.results]}")

    def failed(self):
        """Names of the quantities that failed."""
        return [r.name for r in self.results if not r.passed]

    def table(self):
        """The results as a Markdown table."""
        rows = ["| quantity | cases | largest relative error | tolerance | result | smallest failing case |",
                "| --- | --- | --- | --- | --- | --- |"]
        for r in self.results:
            f = r.smallest_failure
            result = "pass" if r.passed else "FAIL" if r.failures else "FAIL: no case compared"
            if r.skipped:
                result += f" ({len(r.skipped)} skipped)"
            rows.append(f"| {r.name} | {r.cases} | {r.max_error:.2e} ({r.worst_case}) | {r.tolerance:.0e} | "
                        f"{result} | {f.case.name if f else ''} |")
        return "\n".join(rows)

    def summary(self):
        """The table followed by an explanation of every failed quantity."""
        parts = [self.table()]
        for r in self.results:
            if r.failures:
                parts.append(f"\n{r.name}: failed on {len(r.failures)} of {r.cases} cases; the smallest:\n"
                             + r.smallest_failure.explain())
            elif not r.passed:
                parts.append(f"\n{r.name}: compared on no case (every case was skipped)")
            if r.skipped:
                parts.append(f"\n{r.name}: not compared on {', '.join(n for n, _ in r.skipped)}: {r.skipped[0][1]}")
        return "\n".join(parts)

    __str__ = summary


def check_rtol(value, name):
    """``value`` as a float if it is a real number in ``[0, 1)``: Python's or NumPy's
    (``np.float32(1e-4)``), never a bool, a string, a negative number or NaN."""
    if not is_number(value):
        raise TypeError(f"{name} must be a real number in [0, 1), got {type(value).__name__} {value!r}")
    if not 0 <= value < 1:  # NaN fails both comparisons
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def _result(name, raw, case, ref=None):
    """The adapter's result as float64 arrays (``kfac_factors``: a list of pairs; a
    per-layer quantity, whose reference ``ref`` is a list: a list of arrays);
    ``TypeError`` names a complex, boolean or non-numeric result."""
    what = f"the adapter's {name} for case {case.name}"
    if name != "kfac_factors" and isinstance(ref, list):
        if isinstance(raw, (str, bytes, dict)) or not hasattr(raw, "__iter__") or hasattr(raw, "shape"):
            raise TypeError(f"{what} must be a list of arrays, one per layer, got {type(raw).__name__}")
        return [real_array(x, f"{what}: entry {i}") for i, x in enumerate(raw)]
    if name != "kfac_factors":
        return real_array(raw, what)
    try:
        pairs = list(raw)
    except TypeError:
        raise TypeError(f"{what} must be a list of (S, A) pairs, got {type(raw).__name__}") from None
    out = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:  # an (2, k) array is not a pair
            raise TypeError(f"{what}: entry {i} must be a pair (S, A), got {type(pair).__name__}")
        out.append((real_array(pair[0], f"{what}: S of pair {i}"), real_array(pair[1], f"{what}: A of pair {i}")))
    return out


def _compare(name, got, ref, case, tol, options=None, explain=True):
    """``(largest relative error, sentences)``; with ``explain`` the sentences name what
    differs, with refprune's neighbouring quantities tried (only for the smallest
    failing case: they cost a few of refprune's own computations)."""
    if name == "kfac_factors":
        return compare_pairs(got, ref, case, tol, options)
    if isinstance(ref, list):  # per layer: each entry against its own scale
        if len(got) != len(ref):
            return float("inf"), [f"{len(got)} entries, refprune has {len(ref)} (one per layer; see the conventions)"]
        errs, notes = [relative_error(a, b) for a, b in zip(got, ref)], []
        for i, (a, b, e) in enumerate(zip(got, ref, errs)):
            if e > tol:
                r = constant_factor(a, b) if a.shape == b.shape else None
                notes.append(f"entry {i}: " + (f"shape {a.shape}, refprune's is {b.shape}" if a.shape != b.shape else
                                               f"relative error {e:.2e}" + (f", off by a constant factor {r:.6g}"
                                                                            if r is not None else "")))
        return max(errs, default=0.0), notes
    ref = np.asarray(ref, dtype=float)
    err = relative_error(got, ref)
    if err <= tol:
        return err, []
    return err, (diagnose(got, ref, case, tol, quantity=name, options=options) if explain
                 else diagnose(got, ref, case, tol))


_VARIANT_WORDS = {
    ("shortcut", True): "the published EigenDamage code's shortcut (row sums sum_k W_ik^2 (A 1)_k in place of "
                        "w_i^T A w_i; for unit_updates the summed single-weight OBS updates)",
    ("shortcut", False): "the exact w_i^T A w_i (and group update), without the published code's shortcut",
}


def _option_neighbours(name, reference, got, case, opts, tol):
    """Notes naming the other option values of quantity ``name`` (one option changed at
    a time, every choice and flag of the options table) whose reference ``got`` matches:
    the adapter computes a variant other than the one compared."""
    rows = {o.name: o for o in _options.TABLE["Adapter options"]}
    notes = []
    for key, value in opts.items():
        row = rows.get(key)
        alternatives = row.choices if row is not None and row.kind == "choice" else (
            (not value,) if row is not None and row.kind == "flag" else ())
        for alt in alternatives:
            if alt == value:
                continue
            try:
                other, mine = reference(case, dict(opts, **{key: alt})), got
                if isinstance(other, Grouped):
                    if got.shape != other.values.shape:
                        continue
                    mine, other = other.project(got), other.project(other.values)
                err = _compare(name, mine, other, case, tol, explain=False)[0]
            except Exception:  # noqa: BLE001 (a variant undefined here names nothing)
                continue
            if err <= tol:
                words = _VARIANT_WORDS.get((key, alt), f"{key}={alt!r}")
                notes.append(f"matches refprune's {name} with {key}={alt!r}: {words}; it was compared with "
                             f"{key}={value!r} (set the adapter's options to the variant it computes)")
    return notes


def check(adapter, cases=None, rtol=None, progress=False):
    """Run ``adapter`` on every case and compare with refprune.

    Parameters
    ----------
    adapter : Adapter
    cases : list of Case, optional
        Default :func:`~refprune.conformance.zoo.zoo` (every layer type, every loss,
        both reductions), smallest first; :func:`~refprune.conformance.zoo.drawn_zoo`
        adds random networks.
    rtol : float or dict, optional
        Relative tolerance on ``max |a - b| / max |b|`` (a Python or NumPy real number
        in ``[0, 1)``); a dict sets it per quantity of the adapter.  Default
        :data:`DEFAULT_RTOL` (``1e-9``), for float64 implementations.
    progress : bool
        Print one line per quantity.

    Returns
    -------
    Report
        An EKFAC that is not uniquely defined on a case (K-FAC's factors with a repeated
        eigenvalue on whose eigenspace the curvature is not a multiple of the identity:
        it depends on the eigenvectors chosen) is not compared there; the report lists
        such cases, and a quantity compared on no case does not pass.  A result the adapter could not give as a real array (complex, boolean, text, a
        wrong structure) or with a NaN or inf is a failure of that case, named in the
        report, never converted: a complex result's imaginary part is not dropped.
    """
    if not isinstance(adapter, Adapter):
        raise TypeError(f"check: expected a refprune.conformance.Adapter, got {type(adapter).__name__}")
    if cases is not None:
        if isinstance(cases, (str, bytes, dict)) or not hasattr(cases, "__iter__"):
            raise TypeError(f"check: cases must be a list of refprune.conformance.Case, got {type(cases).__name__}")
        cases = list(cases)
        bad = [type(c).__name__ for c in cases if not isinstance(c, Case)]
        if bad:
            raise TypeError(f"check: cases must be a list of refprune.conformance.Case, got {bad[0]} among them "
                            "(build one with make_case or build_case)")
    cases = zoo() if cases is None else sorted(cases, key=lambda c: (c.n_params, c.name))
    if not cases:
        raise ValueError("check: no cases to check")
    progress = _options.convert("check", {"progress": progress})["progress"]
    if isinstance(rtol, dict):
        unknown = sorted(set(rtol) - set(adapter.quantities), key=str)
        if unknown:
            raise ValueError(f"check: rtol names {unknown}, which the adapter does not compute; its quantities: "
                             f"{sorted(adapter.quantities)}")
    elif rtol is not None and not is_number(rtol):
        raise TypeError(f"check: rtol must be a real number in [0, 1) or a dict of them per quantity, got "
                        f"{type(rtol).__name__} {rtol!r}")
    tols = {}
    for name in adapter.quantities:
        t = rtol.get(name, DEFAULT_RTOL) if isinstance(rtol, dict) else (DEFAULT_RTOL if rtol is None else rtol)
        tols[name] = check_rtol(t, f"check: rtol for {name}")
    results = []
    for name, fn in adapter.quantities.items():
        res = QuantityResult(name, tols[name])
        reference, conventions, _ = QUANTITIES[name]
        opts = adapter.options[name]
        if "{options}" in conventions:
            conventions = conventions.format(options=opts)
        elif opts:
            conventions = f"{conventions}, options {opts!r}"
        t0 = time.perf_counter()
        for case in cases:
            try:
                ref = reference(case, opts)
            except NotCompared as why:  # not defined or not unique on this case: said, not compared
                res.skipped.append((case.name, str(why)))
                continue
            except (np.linalg.LinAlgError, FloatingPointError) as why:  # e.g. a singular damped curvature
                res.skipped.append((case.name, f"refprune's reference is not defined here ({type(why).__name__}: "
                                               f"{why})"))
                continue
            res.cases += 1
            try:
                raw = fn(case)
            except Exception as err:  # the other implementation failing is a finding, not a crash
                res.failures.append(Failure(case, float("inf"), conventions, [], f"{type(err).__name__}: {err}"))
                res.max_error, res.worst_case = float("inf"), case.name
                continue
            try:
                got = _result(name, raw, case, ref)
            except TypeError as err:  # complex, boolean, text: refused by name, never converted
                res.failures.append(Failure(case, float("inf"), conventions, [str(err)]))
                res.max_error, res.worst_case = float("inf"), case.name
                continue
            full, grouped = got, (ref if isinstance(ref, Grouped) else None)
            if grouped is not None:  # only the sums over its groups are unique: compare those
                ref = grouped.values
                if got.shape == ref.shape:
                    got, ref = grouped.project(got), grouped.project(ref)
            err, notes = _compare(name, got, ref, case, tols[name], opts, explain=not res.failures)
            if err > tols[name] and grouped is not None:
                notes = notes + [grouped.describe()]
            if err > res.max_error or not res.worst_case:
                res.max_error, res.worst_case = err, case.name
            if err > tols[name]:
                if not res.failures:  # the smallest failing case: which variant of the quantity it matches
                    notes = notes + _option_neighbours(name, reference, full, case, opts, tols[name])
                res.failures.append(Failure(case, err, conventions, notes))
        res.seconds = time.perf_counter() - t0
        if progress:
            print(f"conformance: {name}: {'pass' if res.passed else 'FAIL'}, largest relative error "
                  f"{res.max_error:.2e} over {res.cases} cases ({res.seconds:.1f} s)")
        results.append(res)
    return Report(results)


def assert_conforms(adapter, cases=None, rtol=None):
    """``check`` and raise ``AssertionError`` with the report if anything failed: one
    line in a pytest test."""
    report = check(adapter, cases, rtol)
    if not report.ok:
        raise AssertionError("conformance with refprune failed:\n" + report.summary())
    return report
