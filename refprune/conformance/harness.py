"""Check another implementation against refprune over the zoo.

The caller wraps their code in an :class:`Adapter`: one callable per quantity they
have, each taking a :class:`~refprune.conformance.zoo.Case` and returning a NumPy array
(or something ``numpy.asarray`` understands: a CPU tensor, a JAX array).  :func:`check`
runs every callable on every case, compares with refprune under the conventions of
``docs/conventions.md`` and returns a :class:`Report`: per quantity the largest relative
error, pass or fail at the stated tolerance and, for a failure, the smallest case that
shows it, the conventions it was compared under and what the difference looks like.
"""

import time
from dataclasses import dataclass, field

import numpy as np

from .. import derivatives as _d
from ..curvature import diagonal as _diag
from ..curvature import exact as _c
from ..curvature.ekfac import ekfac
from ..curvature.kronecker import check_kfac_options, kfac
from ..params import flatten_params
from ..scalars import is_number
from .diagnosis import constant_factor, diagnose, real_array, relative_error
from .zoo import Case, zoo

_PARAMS = "theta in PyTorch order (weight.ravel() then bias, layer by layer; docs/conventions.md §1)"
_LOSS = "L = R sum_n l_n, PyTorch's reductions, R = 1/N (cross-entropy mean), 1/(N C) (squared-error and " \
        "binary cross-entropy mean), 1 (sum) " \
        "(docs/conventions.md §2)"


def _obs(case):
    """``(G + lambda I)^-1`` of the case (the OBS quantities use it)."""
    G = _c.ggn(*case.args())
    return np.linalg.inv(G + case.obs_damping * np.eye(len(G)))


def _obs_update(case):
    Hinv = _obs(case)
    q = case.obs_index
    return -(case.theta[q] / Hinv[q, q]) * Hinv[:, q]


def _kfac_kw(case, options):
    """K-FAC's options; with ``curvature="mc_fisher"`` the case's sampled targets, so
    that the adapter can replay them (``case.targets``)."""
    return dict(options, targets=case.targets) if options["curvature"] == "mc_fisher" else dict(options)


def _clusters(w, tol):
    """Index groups of the sorted eigenvalues ``w`` closer than ``tol`` to a neighbour."""
    groups, cur = [], [0]
    for i in range(1, len(w)):
        if w[i] - w[i - 1] <= tol:
            cur.append(i)
        else:
            groups.append(cur)
            cur = [i]
    return groups + [cur]


def ekfac_is_well_defined(op, F, rtol=1e-9, gap=1e-6):
    """Whether the dense EKFAC matrix of ``op`` does not depend on which eigenvectors
    ``numpy.linalg.eigh`` picks for K-FAC's factors.

    Within an eigenspace ``E`` of ``S`` (or ``A``) of dimension > 1 any orthonormal basis
    is as good, and EKFAC's eigenvalues ``diag(U^T F_l U)`` (George et al. 2018, eq. 10)
    on ``E_S kron E_A`` are independent of that choice only when ``F_l`` compressed to
    ``E_S kron E_A`` is a multiple of the identity.  ``F`` is the exact curvature matrix
    the EKFAC approximates (its layer blocks are the ``F_l``); eigenvalues closer than
    ``gap`` times the largest are taken as one eigenspace.  Such an EKFAC changes with
    the BLAS kernels (by up to 27 % on the zoo's convolutional 'reduce' cases, where
    ``A`` is singular and ``F_l`` is not zero on its null space), so it is left out of
    the fixtures."""
    for blk in op.blocks:
        lay = blk.layout
        s, US, a, UA = blk.kron.eigh()
        Fl = F[lay.offset : lay.offset + lay.size, lay.offset : lay.offset + lay.size]
        tol = rtol * max(float(np.abs(Fl).max()), 1e-300)
        for cs in _clusters(s, gap * max(float(np.abs(s).max()), 1e-300)):
            for ca in _clusters(a, gap * max(float(np.abs(a).max()), 1e-300)):
                if len(cs) * len(ca) == 1:
                    continue
                M = np.einsum("ci,pj->ijcp", US[:, cs], UA[:, ca]).reshape(-1, lay.c, lay.p)
                B = lay.from_matrix(M)  # the basis vectors of E_S kron E_A, in flat order
                C = B.T @ Fl @ B
                if np.abs(C - np.mean(np.diag(C)) * np.eye(len(C))).max() > tol:
                    return False
    return True


EKFAC_NOT_UNIQUE = ("not uniquely defined: K-FAC's factors have a repeated eigenvalue and the curvature compressed "
                    "to that eigenspace is not a multiple of the identity, so EKFAC depends on the eigenvectors "
                    "chosen (and on the BLAS)")


def _ekfac_curvature(case, options):
    """The exact curvature matrix an EKFAC with these options approximates."""
    curv = options["curvature"]
    if curv == "ggn":
        return _c.ggn(*case.args())
    return _c.fisher(*case.args(), curvature=curv, **({"targets": case.targets} if curv == "mc_fisher" else {}))


#: ``name: (refprune's computation, conventions it is compared under)``
QUANTITIES = {
    "loss": (lambda c: _d.loss(*c.args()), _LOSS),
    "grad": (lambda c: _d.grad(*c.args()), f"dL/dtheta, {_PARAMS}"),
    "per_sample_grads": (lambda c: _d.per_sample_grads(*c.args()),
                         "(N, n), row n is R dl_n/dtheta so that rows sum to grad (docs/conventions.md §2)"),
    "hvp": (lambda c: _d.hvp(*c.args(), c.v), "H v for v = case.v"),
    "hessian": (lambda c: _c.hessian(*c.args()), f"d^2 L/dtheta^2, (n, n), {_PARAMS}"),
    "ggn": (lambda c: _c.ggn(*c.args()), "R sum_n J_n^T Lambda_n J_n, Lambda = 2I for squared error, "
                                         "diag(yhat) - yhat yhat^T for cross-entropy, diag(p (1 - p)), p = sigmoid(f), "
                                         "for binary cross-entropy (docs/conventions.md §3)"),
    "residual": (lambda c: _c.residual(*c.args()), "H - GGN"),
    "fisher": (lambda c: _c.fisher(*c.args(), curvature="fisher"),
               "true Fisher with the likelihoods of docs/conventions.md §3 (Gaussian variance 1/2, "
               "Bernoulli for binary cross-entropy), = GGN"),
    "mc_fisher": (lambda c: _c.fisher(*c.args(), curvature="mc_fisher", targets=c.targets),
                  "R sum_n mean_s g_n(y_s) g_n(y_s)^T over the sampled targets case.targets"),
    "empirical_fisher": (lambda c: _c.fisher(*c.args(), curvature="empirical_fisher"),
                         "R sum_n g_n g_n^T at the observed targets (g_n = dl_n/dtheta, unscaled)"),
    "hessian_diagonal": (lambda c: _diag.hessian_diagonal(*c.args()), "diag(H)"),
    "ggn_diagonal": (lambda c: _diag.ggn_diagonal(*c.args()), "diag(GGN)"),
    "empirical_fisher_diagonal": (lambda c: _diag.fisher_diagonal(*c.args(), curvature="empirical_fisher"),
                                  "diag of the empirical Fisher"),
    "mc_fisher_diagonal": (lambda c: _diag.fisher_diagonal(*c.args(), curvature="mc_fisher", targets=c.targets),
                           "diag of the MC Fisher over case.targets"),
    "kfac": (lambda c, o: kfac(*c.args(), **_kfac_kw(c, o)).to_dense(),
             "the K-FAC matrix (n, n), block diagonal, S kron A per layer over [W | b] (docs/conventions.md §4), "
             "options {kfac_options}"),
    "kfac_factors": (lambda c, o: [(b.S, b.A) for b in kfac(*c.args(), **_kfac_kw(c, o)).blocks],
                     "[(S, A)] per layer, S = R sum g g^T, A = (1/(N T)) sum a a^T with the bias folded as a "
                     "constant 1 (docs/conventions.md §4), options {kfac_options}"),
    "ekfac": (lambda c, o: ekfac(*c.args(), **_kfac_kw(c, o)).to_dense(),
              "EKFAC matrix (n, n): K-FAC's eigenbasis, eigenvalues re-estimated (docs/conventions.md §5), "
              "options {kfac_options}"),
    "obd_saliencies": (lambda c: flatten_params(c.params) ** 2 * _diag.hessian_diagonal(*c.args()) / 2,
                       "theta_q^2 H_qq / 2 for every coordinate, exact Hessian diagonal (docs/conventions.md §7)"),
    "obs_saliencies": (lambda c: c.theta**2 / (2 * np.diag(_obs(c))),
                       "theta_q^2 / (2 [(G + lambda I)^-1]_qq) for every coordinate, lambda = case.obs_damping, G "
                       "the GGN (docs/conventions.md §7)"),
    "obs_update": (_obs_update, "the change of theta when case.obs_index is removed: "
                                "-(theta_q / [H^-1]_qq) H^-1 e_q, H = GGN + case.obs_damping I"),
}
_KFAC_QUANTITIES = ("kfac", "kfac_factors", "ekfac")

#: default relative tolerances; see docs/conventions.md §9 for how they were chosen
DEFAULT_RTOL = 1e-9


class Adapter:
    """Another implementation, one callable per quantity (any subset of :data:`QUANTITIES`).

    Each callable takes a :class:`~refprune.conformance.zoo.Case` and returns the
    quantity for it.  ``kfac_options`` (a dict of ``curvature``, ``approx``, ``bias``) says
    which K-FAC variant the ``kfac``, ``kfac_factors`` and ``ekfac`` callables compute
    (``curvature="mc_fisher"``: over the sampled targets ``case.targets``); it is refused
    for an adapter without these quantities.

    Example
    -------
    >>> Adapter(grad=lambda case: my_grad(case.torch()), hessian=my_hessian)  # doctest: +SKIP
    """

    def __init__(self, kfac_options=None, **quantities):
        unknown = sorted(set(quantities) - set(QUANTITIES))
        if unknown:
            raise ValueError(f"Adapter: unknown quantities {unknown}; known: {sorted(QUANTITIES)}")
        if not quantities:
            raise ValueError(f"Adapter: give at least one quantity callable; known: {sorted(QUANTITIES)}")
        for name, fn in quantities.items():
            if not callable(fn):
                raise TypeError(f"Adapter: {name} must be a callable taking a Case, got {type(fn).__name__}")
        self.quantities = dict(quantities)
        opts = dict(curvature="ggn", approx="expand", bias="fold")
        if kfac_options is not None:
            if not isinstance(kfac_options, dict):
                raise TypeError(f"Adapter: kfac_options must be a dict with keys among {sorted(opts)}, got "
                                f"{type(kfac_options).__name__}")
            unknown = sorted(set(kfac_options) - set(opts), key=str)
            if unknown:
                raise ValueError(f"Adapter: kfac_options has unknown keys {unknown}; known: {sorted(opts)}")
            if not set(quantities) & set(_KFAC_QUANTITIES):
                raise ValueError(f"Adapter: kfac_options apply to {list(_KFAC_QUANTITIES)}, which the adapter does not "
                                 f"compute (it has {sorted(quantities)})")
            opts.update(kfac_options)
            check_kfac_options(opts["curvature"], opts["approx"], opts["bias"], "Adapter: kfac_options")
        self.kfac_options = opts


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


def _result(name, raw, case):
    """The adapter's result as float64 arrays (``kfac_factors``: a list of pairs);
    ``TypeError`` names a complex, boolean or non-numeric result."""
    what = f"the adapter's {name} for case {case.name}"
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


def _compare(name, got, ref, case, tol):
    if name == "kfac_factors":
        if len(got) != len(ref):
            return float("inf"), [f"{len(got)} factor pairs, refprune has {len(ref)} (one per Linear/Conv2d layer)"]
        errs, notes = [], []
        for i, ((S, A), (rS, rA)) in enumerate(zip(got, ref)):
            eS, eA = relative_error(S, rS), relative_error(A, rA)
            errs += [eS, eA]
            if eS > tol or eA > tol:
                notes.append(f"layer pair {i}: S error {eS:.2e}, A error {eA:.2e}")
                rs = constant_factor(S, rS) if S.shape == rS.shape else None
                ra = constant_factor(A, rA) if A.shape == rA.shape else None
                if rs is not None and ra is not None and abs(rs * ra - 1) < 1e-8:
                    notes.append(f"layer pair {i}: S off by {rs:.6g} and A by {ra:.6g}, the same Kronecker product "
                                 "split differently (refprune.express_kfac converts between libraries)")
                elif S.shape == rS.shape and A.shape != rA.shape:
                    notes.append(f"layer pair {i}: A has shape {A.shape}, refprune's {rA.shape}: the bias row of A "
                                 "(refprune folds it in) is missing or extra")
        return max(errs), notes
    ref = np.asarray(ref, dtype=float)
    err = relative_error(got, ref)
    return err, (diagnose(got, ref, case, tol) if err > tol else [])


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
    if not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"check: progress must be True or False, got {progress!r}")
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
        reference, conventions = QUANTITIES[name]
        if name in _KFAC_QUANTITIES:
            conventions = conventions.format(kfac_options=adapter.kfac_options)
        t0 = time.perf_counter()
        for case in cases:
            if name == "ekfac":
                op = ekfac(*case.args(), **_kfac_kw(case, adapter.kfac_options))
                if not ekfac_is_well_defined(op, _ekfac_curvature(case, adapter.kfac_options)):
                    res.skipped.append((case.name, EKFAC_NOT_UNIQUE))
                    continue
            ref = reference(case, adapter.kfac_options) if name in _KFAC_QUANTITIES else reference(case)
            res.cases += 1
            try:
                raw = fn(case)
            except Exception as err:  # the other implementation failing is a finding, not a crash
                res.failures.append(Failure(case, float("inf"), conventions, [], f"{type(err).__name__}: {err}"))
                res.max_error, res.worst_case = float("inf"), case.name
                continue
            try:
                got = _result(name, raw, case)
            except TypeError as err:  # complex, boolean, text: refused by name, never converted
                res.failures.append(Failure(case, float("inf"), conventions, [str(err)]))
                res.max_error, res.worst_case = float("inf"), case.name
                continue
            err, notes = _compare(name, got, ref, case, tols[name])
            if err > res.max_error or not res.worst_case:
                res.max_error, res.worst_case = err, case.name
            if err > tols[name]:
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
