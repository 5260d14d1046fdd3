"""One table of options for pruning, training and minimising: for every keyword option
of :func:`refprune.prune`, :func:`refprune.obs_trace`, :func:`refprune.saliencies`,
:func:`refprune.minimize`, :func:`refprune.train`, the optimizers ``SGD``, ``KFAC``,
``EKFAC`` and ``NaturalGradient`` and the conformance harness (``Adapter``, its
per-quantity ``"Adapter options"`` and ``check``), its type, its range, and the methods and curvatures it
applies to.

Every one of these entry points checks its options through this table, in two passes:

1. :func:`convert`: each value against its type and range.  A number given as text,
   ``None`` or a bool raises :class:`OptionTypeError` (a ``TypeError``); a number out of
   range, a choice that is not one of the choices, raises ``ValueError``.  Flags must be
   ``True`` or ``False`` (``"no"`` is not false).  Every message names the function, the
   option, the value given and what is accepted.
2. :func:`refuse_inapplicable`: an option given a value other than its default that does
   not apply to the chosen ``method`` (or curvature) is refused by name, saying which
   methods (curvatures) it applies to.  An option left at its default is never refused.

Read the table with :func:`describe`::

    >>> import refprune as rp
    >>> print(rp.options.describe("prune", method="obs"))    # doctest: +SKIP

or directly: ``TABLE[function]`` is a tuple of :class:`Option` rows, each with ``name``,
``kind``, ``default``, ``accepted`` (the type and range in words), ``methods`` (``None``:
every method) and ``curvatures`` (``None``: every curvature).  :func:`applicable` lists
the options that apply to one method.

The module imports only refprune's leaf modules, so that every entry point can use it.
"""

from dataclasses import dataclass

import numpy as np

from .curvature.kronecker import BIAS_TREATMENTS, DAMPING_FORMS, KFAC_APPROX
from .scalars import is_int, is_number
from .vocabulary import CURVATURES, FISHER_LIKE

# ---------------------------------------------------------------- choices of the options

#: ``prune``'s criteria that choose single weights
UNSTRUCTURED = ("magnitude", "obd", "obs", "woodfisher", "layer_obs")
#: ``prune``'s criteria that remove whole output units
STRUCTURED = ("c_obd", "c_obs", "kron_obd", "kron_obs")
#: every ``prune`` method
METHODS = UNSTRUCTURED + STRUCTURED + ("eigendamage",)
#: the methods :func:`refprune.saliencies` ranks by
SALIENCY_METHODS = ("magnitude", "obd", "obs", "woodfisher") + STRUCTURED
#: OBD's diagonals: exact, or LeCun et al.'s approximation (without ``phi''``)
DIAGONALS = ("exact", "obd", "obd_lm")
#: what OBS does with a damped matrix that is not positive definite
INDEFINITE = ("raise", "damp", "abs", "ggn")
#: OBS's quadratic model: at a minimum, or with the gradient term
TAYLOR = ("second_order", "full")
#: layer-wise OBS: how many weights each row gives up
SELECTIONS = ("exact", "greedy", "obc")
#: EigenDamage's eigenvalues
EIGENVALUES = ("ekfac", "kfac")
#: NaturalGradient: the whole matrix or its per-layer blocks
STRUCTURES = ("full", "layer")
#: :func:`refprune.minimize`: SciPy's trust-region methods
TRUST_REGION = ("trust-exact", "trust-krylov", "trust-ncg", "trust-constr")

#: prune's unstructured criteria that rank single weights by a score or OBS
_RANKED = ("magnitude", "obd", "obs", "woodfisher")
#: methods that form a curvature matrix
_CURVED = ("obd", "obs", "woodfisher") + STRUCTURED + ("eigendamage",)
_MC = ("mc_fisher",)
#: methods whose curvature is damped
_DAMPED = ("obs", "woodfisher", "layer_obs", "c_obs", "kron_obd", "kron_obs")


class OptionTypeError(TypeError, ValueError):
    """An option of the wrong type (a number given as text, ``None`` or a bool).

    A ``TypeError``; also a ``ValueError``, so that code written when these were
    reported as ``ValueError`` still catches them."""


@dataclass(frozen=True)
class Option:
    """One row of :data:`TABLE`.

    ``kind``: ``"flag"`` (``True``/``False``), ``"real"`` (a finite number in
    ``[low, high]``, ends open where ``low_open``/``high_open``), ``"int"`` (an int
    ``>= low``), ``"choice"`` (one of ``choices``), ``"seed"`` (a non-negative int, or a
    sequence of them where ``sequence``), or an object the function checks itself
    (``"curvature"``, ``"array"``, ``"dict"``, ``"callable"``, ``"optimizer"``).
    ``none``: ``None`` is accepted too.  ``methods``/``curvatures``: what the option
    applies to (``None``: everything); ``or_when``: another option whose non-default
    value makes this one apply as well.  ``note``: added to a refusal."""

    name: str
    kind: str
    default: object
    doc: str
    low: float = None
    high: float = None
    low_open: bool = False
    high_open: bool = False
    none: bool = False
    choices: tuple = ()
    sequence: bool = False
    methods: tuple = None
    curvatures: tuple = None
    or_when: str = None
    note: str = ""
    renamed: tuple = ()  # ((old value, message), ...) for earlier spellings
    refusal: str = ""  # the whole refusal, where one message says it best
    accepted_text: str = ""

    @property
    def accepted(self):
        """What the option accepts, in words."""
        if self.accepted_text:
            return self.accepted_text
        if self.kind == "flag":
            return "True or False"
        if self.kind == "real":
            text = "a finite number" + _range_text(self)
        elif self.kind == "int":
            text = {0: "a non-negative int", 1: "a positive int"}.get(self.low, f"an int >= {self.low}")
        elif self.kind == "choice":
            text = f"one of {self.choices}"
        elif self.kind == "seed":
            text = "a non-negative int" + (" or a sequence of non-negative ints" if self.sequence else "")
        else:
            text = _OBJECTS[self.kind]
        return text + (" or None" if self.none and self.kind not in _OBJECTS else "")

    def applies(self, method, curvature, values):
        """Whether the option applies to ``method`` with ``curvature`` (a name, or
        ``None`` for a method without a curvature or a precomputed one)."""
        ok = (self.methods is None or method in self.methods) and (
            self.curvatures is None or (isinstance(curvature, str) and curvature in self.curvatures))
        if not ok and self.or_when is not None:
            return not is_default(_row(values["__table__"], self.or_when), values[self.or_when])
        return ok


#: what the options a function checks itself accept
_OBJECTS = {
    "curvature": "a curvature name (docs/conventions.md §3), a symmetric (n, n) array or a CurvatureOperator",
    "array": "a bool array of shape (n,) or None",
    "targets": "an array of sampled targets or None",
    "dict": "a dict or None",
    "metrics": "a dict of name -> callable(model, params) or None",
    "callable": "a callable or None",
    "optimizer": "a refprune.optim optimizer or None",
}


def _range_text(o):
    parts = []
    if o.low is not None:
        parts.append(f"{'>' if o.low_open else '>='} {o.low:g}")
    if o.high is not None:
        parts.append(f"{'<' if o.high_open else '<='} {o.high:g}")
    return (" " + " and ".join(parts)) if parts else ""


def _nonneg(name, doc, **kw):
    return Option(name, "real", 0.0, doc, low=0.0, **kw)


def _mc(where_doc, methods=None, seed_or_when=None, sequence=True):
    """``samples``, ``seed`` and ``targets``: the Monte Carlo targets of ``"mc_fisher"``."""
    return (
        Option("samples", "int", 1, f"Monte Carlo targets per data point{where_doc}", low=1, methods=methods,
               curvatures=_MC),
        Option("seed", "seed", 0, f"seed of numpy.random.default_rng for the Monte Carlo targets{where_doc}",
               sequence=sequence, methods=None if seed_or_when else methods, curvatures=_MC, or_when=seed_or_when),
        Option("targets", "targets", None, "the caller's Monte Carlo targets, (n_mc, N) labels or (n_mc, N, C) values",
               methods=methods, curvatures=_MC),
    )


_OLD_DIAGONALS = (
    ("ggn", "write curvature='ggn', diagonal='exact'"),
    ("fisher", "write curvature='mc_fisher', diagonal='exact'"),
    ("empirical", "write curvature='empirical_fisher', diagonal='exact'"),
)

# ---------------------------------------------------------------- the table

_OPTIMIZER = (
    Option("lr", "real", 0.1, "learning rate", low=0.0),
    Option("momentum", "real", 0.0, "heavy-ball momentum", low=0.0, high=1.0, high_open=True),
    _nonneg("weight_decay", "added to the direction after preconditioning, times theta"),
    Option("kl_clip", "real", None, "KL clipping bound c (Ba et al. 2017, §5)", low=0.0, low_open=True, none=True,
           accepted_text="a finite number > 0 or None (no clipping)"),
)
_KRONECKER = (
    Option("damping", "real", 1e-3, "lam", low=0.0),
    Option("curvature", "choice", "mc_fisher", "the Fisher K-FAC approximates", choices=FISHER_LIKE),
    Option("approx", "choice", "expand", "KFC variant for convolutions", choices=KFAC_APPROX),
    Option("bias", "choice", "fold", "bias folded into A or kept apart", choices=BIAS_TREATMENTS),
    Option("ema_decay", "real", 0.95, "decay of the factors' moving averages", low=0.0, high=1.0, high_open=True),
    Option("refresh_interval", "int", 1, "steps between eigendecompositions", low=1),
) + _mc(" (curvature='mc_fisher')", sequence=False)[:2]

TABLE = {
    "prune": (
        Option("method", "choice", "obs", "the criterion", choices=METHODS,
               accepted_text=f"one of {METHODS}"),
        Option("sparsity", "real", None, "fraction of prunable weights (units, directions) to remove", low=0.0,
               high=1.0, high_open=True, none=True, accepted_text="a number in [0, 1) or None"),
        Option("count", "int", None, "number of weights (units, directions) to remove", low=0, none=True),
        Option("steps", "int", 1, "rounds; the curvature is recomputed every round", low=1),
        Option("scope", "choice", "global", "one global ranking or the same fraction in every layer",
               choices=("global", "layer"), accepted_text="'global' or 'layer'", methods=_RANKED,
               note="layer_obs always prunes every layer to the fraction; the structured methods and EigenDamage "
                    "rank globally"),
        Option("curvature", "curvature", None, "a curvature name, or a precomputed symmetric matrix or operator",
               methods=_CURVED),
        Option("diagonal", "choice", "exact", "OBD's diagonal", choices=DIAGONALS, methods=("obd",),
               renamed=_OLD_DIAGONALS),
        Option("damping", "real", 0.0, "added to the curvature before it is inverted (factored damping of the "
               "Kronecker factors for c_obs, kron_obd, kron_obs)", low=0.0, methods=_DAMPED,
               note="OBD and C-OBD rank by the undamped diagonal, EigenDamage by undamped eigenvalues; magnitude uses "
                    "no curvature"),
        Option("group_size", "int", 1, "weights OBS removes at a time", low=1, methods=("obs", "woodfisher")),
        *_mc(" (curvature='mc_fisher')", methods=_CURVED, seed_or_when="retrain"),
        Option("mask", "array", None, "bool (n,): coordinates already pruned (False)",
               methods=UNSTRUCTURED + STRUCTURED,
               note="EigenDamage changes the architecture and takes a dense network"),
        Option("include_bias", "flag", False, "let biases be removed", methods=_RANKED,
               note="layer_obs prunes weights only; the structured methods remove whole units"),
        Option("retrain", "dict", None, "a dict of refprune.train options: fine-tune after every round", none=True),
        Option("max_layer_fraction", "real", 0.9, "EigenDamage: the largest fraction of a layer's directions",
               low=0.0, high=1.0, low_open=True, methods=("eigendamage",), accepted_text="in (0, 1]"),
        Option("eigenvalues", "choice", "ekfac", "EigenDamage: whose eigenvalues rank the directions",
               choices=EIGENVALUES, accepted_text="'ekfac' or 'kfac'", methods=("eigendamage",)),
        Option("progress", "flag", False, "report every round on stderr"),
        Option("protected", "array", None, "bool (n,): coordinates that are never removed", methods=_RANKED,
               note="protected= and skip_emptied= apply to magnitude, obd, obs and woodfisher"),
        Option("skip_emptied", "flag", False, "skip a removal that would empty a layer", methods=_RANKED,
               note="protected= and skip_emptied= apply to magnitude, obd, obs and woodfisher"),
        Option("taylor", "choice", "second_order", "OBS's quadratic model", choices=TAYLOR, methods=("obs",),
               note="taylor='full' is OBS's; every method records predicted_full anyway"),
        _nonneg("weight_decay", "prune L + weight_decay/2 |theta|^2", methods=_RANKED),
        Option("indefinite", "choice", "raise", "OBS when the damped matrix is not positive definite",
               choices=INDEFINITE, methods=("obs",)),
        Option("selection", "choice", "exact", "layer_obs: how many weights each row gives up", choices=SELECTIONS,
               methods=("layer_obs",)),
    ),
    "obs_trace": (
        Option("count", "int", None, "removals to make", low=0, none=True,
               accepted_text="an int in [0, the number of prunable free weights] or None"),
        Option("curvature", "curvature", "ggn", "a curvature name, or a precomputed symmetric matrix or operator"),
        Option("damping", "real", 0.0, "added to the curvature before it is inverted", low=0.0),
        Option("taylor", "choice", "second_order", "OBS's quadratic model", choices=TAYLOR),
        _nonneg("weight_decay", "sweep L + weight_decay/2 |theta|^2"),
        Option("protected", "array", None, "bool (n,): coordinates that are never removed"),
        Option("mask", "array", None, "bool (n,): coordinates already pruned (False)"),
        Option("include_bias", "flag", False, "let biases be removed"),
        Option("skip_emptied", "flag", False, "skip a removal that would empty a layer"),
        Option("indefinite", "choice", "raise", "when the damped matrix is not positive definite", choices=INDEFINITE),
        Option("evaluate_loss", "flag", True, "record the objective after every step"),
        Option("metrics", "metrics", None, "dict of name -> callable(model, params) -> float", none=True),
        *_mc(" (curvature='mc_fisher')"),
        Option("progress", "flag", False, "report on stderr every tenth of the sweep"),
    ),
    "saliencies": (
        Option("method", "choice", "obs", "the criterion", choices=SALIENCY_METHODS),
        Option("curvature", "curvature", None, "a curvature name, or a precomputed symmetric matrix or operator",
               methods=("obd", "obs", "woodfisher") + STRUCTURED),
        Option("diagonal", "choice", "exact", "OBD's diagonal", choices=DIAGONALS, methods=("obd",),
               renamed=_OLD_DIAGONALS),
        Option("damping", "real", 0.0, "added to the curvature before it is inverted (factored damping of the "
               "Kronecker factors for c_obs, kron_obd, kron_obs)", low=0.0, methods=_DAMPED[:2] + _DAMPED[3:],
               note="OBD and C-OBD rank by the undamped diagonal; magnitude uses no curvature"),
        Option("taylor", "choice", "second_order", "OBS's quadratic model", choices=TAYLOR, methods=("obs",),
               refusal="taylor='full' needs a dense curvature (method 'obs')"),
        _nonneg("weight_decay", "rank for L + weight_decay/2 |theta|^2", methods=("obd", "obs", "woodfisher"),
                note="magnitude has no loss model; the structured saliencies have no weight decay"),
        Option("include_bias", "flag", False, "rank biases too", methods=_RANKED),
        Option("mask", "array", None, "bool (n,): coordinates already pruned (False)", methods=_RANKED,
               note="the structured saliencies are those of the dense network"),
        Option("indefinite", "choice", "raise", "OBS when the damped matrix is not positive definite",
               choices=INDEFINITE, methods=("obs",)),
        *_mc(" (curvature='mc_fisher')", methods=("obd", "obs", "woodfisher") + STRUCTURED),
    ),
    "unit_saliencies": (
        Option("method", "choice", "kron_obs", "the structured criterion", choices=STRUCTURED),
        Option("curvature", "choice", "ggn", "the Fisher K-FAC approximates", choices=FISHER_LIKE),
        Option("damping", "real", 0.0, "factored damping of the Kronecker factors (no effect on c_obd's diagonal)",
               low=0.0),
        Option("shortcut", "flag", False, "the published code's row sums in place of w_i^T A w_i",
               methods=("kron_obd", "kron_obs")),
        *_mc(" (curvature='mc_fisher')"),
    ),
    "minimize": (
        _nonneg("weight_decay", "minimise L + weight_decay/2 |theta|^2"),
        Option("mask", "array", None, "bool (n,): free coordinates (True)"),
        Option("method", "choice", "trust-exact", "SciPy's trust-region method", choices=TRUST_REGION,
               accepted_text=f"one of SciPy's trust-region methods {TRUST_REGION}"),
        Option("gtol", "real", 1e-10, "SciPy's gradient tolerance", low=0.0, low_open=True),
        Option("maxiter", "int", 1000, "SciPy's iteration limit", low=1),
        Option("progress", "flag", False, "report every iteration on stderr"),
    ),
    "train": (
        Option("epochs", "int", 10, "passes over the data", low=0),
        Option("batch_size", "int", 32, "samples per step", low=1),
        Option("lr", "real", None, "SGD's learning rate (default 0.1) when no optimizer is given", low=0.0, none=True),
        Option("momentum", "real", None, "SGD's momentum (default 0.9) when no optimizer is given", low=0.0, high=1.0,
               high_open=True, none=True),
        Option("weight_decay", "real", None, "SGD's weight decay (default 0) when no optimizer is given", low=0.0,
               none=True),
        Option("mask", "array", None, "bool (n,): trainable coordinates (True)"),
        Option("seed", "seed", 0, "seed of numpy.random.default_rng for the batch order"),
        Option("progress", "flag", False, "report every epoch on stderr"),
        Option("optimizer", "optimizer", None, "a refprune.optim optimizer (SGD, NaturalGradient, KFAC, EKFAC)",
               none=True),
        Option("callback", "callable", None, "callback(epoch, params, loss) after every epoch", none=True),
    ),
    "SGD": (Option("lr", "real", 0.1, "learning rate", low=0.0),
            Option("momentum", "real", 0.9, "heavy-ball momentum", low=0.0, high=1.0, high_open=True)) + _OPTIMIZER[2:],
    "KFAC": _OPTIMIZER + _KRONECKER + (
        Option("damping_form", "choice", "pi", "how lam damps the factors", choices=DAMPING_FORMS),),
    "EKFAC": _OPTIMIZER + _KRONECKER + (
        Option("scale_interval", "int", 1, "steps between re-estimates of the eigenvalues", low=1),
        Option("scale_decay", "real", 0.95, "decay of the eigenvalues' moving average", low=0.0, high=1.0,
               high_open=True),),
    "NaturalGradient": (Option("lr", "real", 1.0, "learning rate", low=0.0),) + _OPTIMIZER[1:] + (
        Option("curvature", "choice", "fisher", "the exact matrix F", choices=CURVATURES),
        Option("damping", "real", 1e-3, "lam in (F + lam I)^-1 g", low=0.0),
        Option("structure", "choice", "full", "the whole matrix or its per-layer blocks", choices=STRUCTURES),
        Option("ema_decay", "real", 0.0, "moving average of F over steps", low=0.0, high=1.0, high_open=True),
        Option("max_bytes", "real", None, "refuse a matrix larger than this (structure='full')", low=0.0, none=True,
               methods=("full",), refusal="max_bytes= applies to structure='full' (the whole matrix); "
                                          "structure='layer' forms the per-layer blocks only",
               accepted_text="a finite number of bytes >= 0 or None (the memory available)"),
    ) + _mc(" (curvature='mc_fisher')", sequence=False)[:2],
}


# ---------------------------------------------------------------- harness block (refprune.conformance)
# The conformance harness's options: Adapter's and check's keywords, and the options an
# adapter sets per quantity (Adapter(options={quantity: {option: value}})).  Which
# quantity takes which option, with its default, is the quantity's own table
# (refprune.conformance.QUANTITIES[name][2]); these rows give the type and range of each.

#: the per-quantity options of the conformance harness's quantities
HARNESS_QUANTITY_OPTIONS = (
    Option("curvature", "choice", "ggn", "the Fisher K-FAC, EKFAC or a structured criterion approximates "
           "(mc_fisher: over the case's sampled targets case.targets)", choices=FISHER_LIKE),
    Option("approx", "choice", "expand", "KFC's convolution variant (Eschenhagen et al. 2023)", choices=KFAC_APPROX),
    Option("bias", "choice", "fold", "the bias folded into A or kept apart (ASDL, curvlinops)",
           choices=BIAS_TREATMENTS),
    Option("damping", "real", 1e-3, "factored damping of the Kronecker factors (unit criteria), or added to the "
           "layer Hessian 2 X X^T / N (layer-wise OBS)", low=0.0),
    Option("shortcut", "flag", False, "the published code's simplification: row sums in place of w_i^T A w_i "
           "(Kron-OBD/OBS), summed single-weight updates (C-OBS's unit update)"),
    Option("eigenvalues", "choice", "ekfac", "EigenDamage's eigenvalues", choices=EIGENVALUES),
)
TABLE["Adapter"] = (
    Option("kfac_options", "dict", None, "curvature, approx and bias of the kfac, kfac_factors and ekfac "
           "quantities", none=True, accepted_text="a dict with keys among curvature, approx, bias, or None"),
    Option("options", "dict", None, "per quantity, the options it takes (refprune.conformance.QUANTITIES[name][2])",
           none=True, accepted_text="a dict {quantity name: {option: value}} or None"),
)
TABLE["Adapter options"] = HARNESS_QUANTITY_OPTIONS
TABLE["check"] = (
    Option("cases", "cases", None, "the cases to run (default: the zoo)",
           accepted_text="a list of refprune.conformance.Case or None"),
    Option("rtol", "rtol", None, "relative tolerance on max |a - b| / max |b| (default 1e-9)",
           accepted_text="a real number in [0, 1), a dict of them per quantity of the adapter, or None"),
    Option("progress", "flag", False, "print one line per quantity"),
)
# ---------------------------------------------------------------- end of the harness block


def _row(function, name):
    for o in TABLE[function]:
        if o.name == name:
            return o
    raise KeyError(f"{function} has no option {name!r}")


def is_default(option, value):
    """Whether ``value`` (already converted) is ``option``'s default: ``None`` and the
    flags by identity, numbers and names by equality; an array is never a default."""
    d = option.default
    if d is None or value is None:
        return value is d
    if isinstance(d, bool) or isinstance(value, (bool, np.bool_)):
        return isinstance(d, bool) and isinstance(value, (bool, np.bool_)) and bool(value) == d
    if isinstance(value, np.ndarray) or not isinstance(value, (str, int, float, np.integer, np.floating)):
        return False
    return isinstance(value, str) == isinstance(d, str) and value == d


def _type_note(name, value):
    if isinstance(value, str):
        what = "text"
    elif value is None:
        what = "None"
    elif isinstance(value, (bool, np.bool_)):
        what = "a bool"
    else:
        what = f"a {type(value).__name__}"
    return f"{name} must be a number, not {what}"


def _convert_one(where, o, value):
    if value is None and o.none:
        return None
    got = f"got {value!r}"
    if o.kind == "flag":
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{where}: {o.name} must be True or False, {got}")
        return bool(value)
    if o.kind == "real":
        if not is_number(value):
            raise OptionTypeError(f"{where}: {o.name} must be {o.accepted}, {got} ({_type_note(o.name, value)})")
        v = float(value)
        if not np.isfinite(v):
            raise ValueError(f"{where}: {o.name} must be {o.accepted}, {got}")
        if o.low is not None and (v < o.low or (o.low_open and v == o.low)):
            raise ValueError(f"{where}: {o.name} must be {o.accepted}, {got} ({o.name} must be "
                             f"{'>' if o.low_open else '>='} {o.low:g})")
        if o.high is not None and (v > o.high or (o.high_open and v == o.high)):
            raise ValueError(f"{where}: {o.name} must be {o.accepted}, {got} ({o.name} must be "
                             f"{'<' if o.high_open else '<='} {o.high:g})")
        return v
    if o.kind == "int":
        if not is_int(value):
            note = "an int, not a bool" if isinstance(value, (bool, np.bool_)) else (
                "an int, not text" if isinstance(value, str) else f"an int, not {type(value).__name__}")
            raise OptionTypeError(f"{where}: {o.name} must be {o.accepted}, {got} ({o.name} must be {note})")
        if value < o.low:
            raise ValueError(f"{where}: {o.name} must be {o.accepted}, {got}")
        return int(value)
    if o.kind == "seed":
        items = list(value) if (o.sequence and isinstance(value, (list, tuple))) else [value]
        if not items or not all(is_int(v) for v in items):
            raise OptionTypeError(f"{where}: {o.name} must be {o.accepted}, {got}")
        if any(v < 0 for v in items):
            raise ValueError(f"{where}: {o.name} must be {o.accepted}, {got}")
        return value
    if o.kind == "choice":
        for old, hint in o.renamed:
            if isinstance(value, str) and value == old:
                raise ValueError(f"{where}: {o.name}={value!r} is an earlier spelling; {hint} ({o.name}= now "
                                 f"only chooses {o.accepted})")
        if not (isinstance(value, str) and value in o.choices):
            raise ValueError(f"{where}: {o.name} must be {o.accepted}, {got}")
        return value
    if o.kind == "dict":
        if not isinstance(value, dict):
            raise TypeError(f"{where}: {o.name} must be {o.accepted}, {got}")
        return value
    if o.kind == "callable":
        if not callable(value):
            raise TypeError(f"{where}: {o.name} must be callable or None, got {type(value).__name__}")
        return value
    return value  # curvature, array, optimizer: the function checks these itself


def convert(function, values, where=None):
    """Check every option of ``function`` in ``values`` (a dict name -> value) against
    its type and range (:data:`TABLE`); returns the converted values (floats, ints,
    bools).  ``where`` names the caller in messages (default ``function``)."""
    where = where or function
    return {o.name: _convert_one(where, o, values[o.name]) for o in TABLE[function] if o.name in values}


def _shown(value):
    if isinstance(value, (str, bool, int, float, np.integer, np.floating)) or value is None:
        return f"={value!r}"
    return "= (given)"


def _list(names):
    names = [str(n) for n in names]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def refuse_inapplicable(function, values, method=None, curvature=None, where=None):
    """Raise ``ValueError`` naming the first option in ``values`` that is not at its
    default and does not apply to ``method`` with ``curvature`` (the curvature's name;
    a precomputed matrix counts as no name), saying what it applies to."""
    where = where or function
    ctx = dict(values, __table__=function)
    for o in TABLE[function]:
        if o.name in values and hasattr(o, "refusal_for"):  # typed on the command line: refused even at its default
            if not o.applies(method, curvature, ctx):
                raise ValueError(o.refusal_for(where, method, ctx))
            continue
        if o.name not in values or is_default(o, values[o.name]) or o.applies(method, curvature, ctx):
            continue
        v = values[o.name]
        if o.methods is not None and method not in o.methods:
            msg = (f"{where}: {o.name}{_shown(v)} does not apply to method {method!r}; {o.name}= applies to "
                   f"{_list(o.methods)}")
        else:
            got = f"curvature={curvature!r}" if isinstance(curvature, str) or curvature is None else \
                "a precomputed curvature"
            alt = f" (or with {o.or_when}=)" if o.or_when else ""
            msg = (f"{where}: {o.name}= is for curvature={_list(repr(c) for c in o.curvatures)}{alt}, got {got}; "
                   f"leave {o.name} at its default {o.default!r}")
        if o.note:
            msg += f" ({o.note})"
        raise ValueError(f"{where}: {o.refusal}" if o.refusal else msg)


def applicable(function, method=None, curvature=None):
    """The names of ``function``'s options that apply to ``method`` with ``curvature``
    (``None``: whatever the method's curvature; a name restricts to options of that
    curvature)."""
    out = []
    for o in TABLE[function]:
        m_ok = method is None or o.methods is None or method in o.methods
        c_ok = curvature is None or o.curvatures is None or curvature in o.curvatures or o.or_when is not None
        if m_ok and c_ok:
            out.append(o.name)
    return tuple(out)


def describe(function, method=None):
    """The table of ``function``'s options as text, one line each: name, default, what
    it accepts, what it applies to (only the rows for ``method`` when given)."""
    if function not in TABLE:
        raise ValueError(f"describe: function must be one of {tuple(TABLE)}, got {function!r}")
    rows = [o for o in TABLE[function] if method is None or o.methods is None or method in o.methods]
    lines = [f"{function}" + (f" (method={method!r})" if method else "") + ": options"]
    for o in rows:
        scope = []
        if o.methods is not None and method is None:
            scope.append("methods " + ", ".join(o.methods))
        if o.curvatures is not None:
            scope.append("curvature " + ", ".join(o.curvatures) + (f" (or with {o.or_when}=)" if o.or_when else ""))
        lines.append(f"  {o.name} = {o.default!r}: {o.doc}; accepts {o.accepted}"
                     + (f"; applies to {'; '.join(scope)}" if scope else ""))
    return "\n".join(lines)


# ================================================================ CLI: the command line
# (refprune hessian, demo, fixtures, check; checked by refprune.cli and refprune.demo)
#
# The command line reads every option as text.  :func:`cli_value` turns the text into
# the row's kind (an int, a number, a choice, a path checked on disk, a shape), then
# :func:`convert` checks it against the same row as a keyword option, and
# :func:`refuse_inapplicable` refuses an option that does not apply to the run.  What
# applies depends on the run's *mode*: a set of words such as ``"data"`` (``--data``
# given), ``"out"``, ``"draws"`` (something random is drawn) or ``"curvature ggn"``,
# formed by the command (refprune.cli.hessian_mode).  A row's ``needs`` lists
# ``(word, present, reason)``: the option applies only if ``word`` is (or is not) in the
# mode, and is otherwise refused with ``reason``.  Unlike a keyword option, an option
# typed on the command line is refused even when it repeats its default: typing it says
# that it was meant to act.

#: the kinds of command-line value that the command line checks on disk or as a shape
_CLI_KINDS = ("text", "file", "newfile", "dir", "shape")


@dataclass(frozen=True)
class CliOption(Option):
    """A row of a command-line option, named as typed (``"--block-rows"``).

    Besides :class:`Option`'s fields: ``needs`` (see above; ``reason`` may name
    ``{curvature}``, ``{data}`` and any other option by its ``dest``), ``metavar`` and
    ``nargs`` for ``argparse``, and ``positional`` for an argument without dashes."""

    needs: tuple = ()
    metavar: str = None
    nargs: str = None
    positional: bool = False

    @property
    def dest(self):
        """The name of the option's attribute in ``argparse``'s namespace (``block_rows``)."""
        return self.name.lstrip("-").replace("-", "_")

    def applies(self, method, curvature, values):
        """``method`` is the run's mode (a set of words)."""
        return all((word in method) == present for word, present, _ in self.needs)

    def refusal_for(self, where, mode, values):
        """The one line refusing this option given on the command line in ``mode``."""
        fill = dict(getattr(mode, "values", {}))  # every option's value, typed or the default
        fill.update({k.lstrip("-").replace("-", "_"): v for k, v in values.items() if k != "__table__"})
        for word, present, reason in self.needs:
            if (word in mode) != present:
                given = values.get(self.name)
                text = f"{where}: {self.name} {reason.format_map(_Blank(fill))}"
                if isinstance(given, bool):
                    return text
                shown = " ".join(map(str, given)) if isinstance(given, (list, tuple)) else str(given)
                return f"{text} (got {self.name} {shown})"
        return None


class _Mode(frozenset):
    """A run's mode words, with ``values``: every option's value by ``dest``."""

    values = {}


class _Blank(dict):
    def __missing__(self, key):
        return "(not given)"


def _cli(name, kind, default, doc, **kw):
    return CliOption(name, kind, default, doc, **kw)


_RANDOM_DATA = (("data", False, "is for random data; --data {data} gives the samples and their shape"),)

TABLE["refprune hessian"] = (
    _cli("--model", "text", None, 'the layers, e.g. "Conv2d(1,4,3,padding=1) Tanh Flatten Linear(64,10)"',
         accepted_text="layers separated by spaces, arguments Python literals", metavar="LAYERS"),
    _cli("--model-json", "file", None, "a JSON list of layer specifications (as in the fixtures' manifest)",
         accepted_text="an existing JSON file", metavar="FILE"),
    _cli("--curvature", "choice", "hessian", "the matrix", choices=("hessian", "ggn", "residual") + CURVATURES[2:]),
    _cli("--data", "file", None, "arrays X (N, per-sample input shape) and y (N labels or N x outputs)",
         accepted_text="an existing .npz file", metavar="FILE.npz"),
    _cli("--input-shape", "shape", None, "per-sample input shape of random data", needs=_RANDOM_DATA, nargs="+",
         accepted_text="one or more positive ints", metavar="D"),
    _cli("--samples", "int", 32, "random samples when no --data", low=1, needs=_RANDOM_DATA),
    _cli("--params", "file", None, "arrays param0, param1, ... (default: PyTorch's init)",
         accepted_text="an existing .npz file", metavar="FILE.npz"),
    _cli("--loss", "choice", "ce", "cross-entropy, squared error or binary cross-entropy on logits",
         choices=("ce", "mse", "bce")),
    _cli("--reduction", "choice", "mean", "the loss's reduction", choices=("mean", "sum")),
    _cli("--mc-samples", "int", 1, "Monte Carlo targets per sample", low=1,
         needs=(("curvature mc_fisher", True, "applies only to --curvature mc_fisher, got --curvature {curvature}"),)),
    _cli("--seed", "seed", 0, "seed of random data, initial parameters and Monte Carlo targets",
         needs=(("draws", True, "draws random data, initial parameters or Monte Carlo targets; with --data, --params "
                                "and --curvature {curvature} nothing is drawn"),)),
    _cli("--out", "newfile", None, "write the matrix here (a memory map) instead of printing its spectrum; it is "
         "written to FILE.npy.partial and renamed once complete, with its record FILE.npy.refprune.json",
         accepted_text="a file name in an existing directory", metavar="FILE.npy"),
    _cli("--dry-run", "flag", False, "print the estimate and stop"),
    _cli("--workers", "int", 0, "compute blocks of rows in this many worker processes (docs/derivations.md §11)",
         low=0),
    _cli("--block-rows", "int", None, "rows per block when run as tasks, rounded down to whole output units of "
         "each layer, at least one (default: a layer)", low=1, none=True, accepted_text="a positive int"),
    _cli("--shards", "int", 1, "split the samples into this many shards (at most the number of samples)", low=1),
    _cli("--resume", "flag", False, "continue an interrupted run from FILE.npy.partial, computing only the blocks "
         "not recorded as done (with the --block-rows and --shards of that run)",
         needs=(("out", True, "continues an interrupted run: give the --out FILE.npy it was writing"),
                ("dry-run", False, "with --dry-run: --dry-run estimates a new run; --resume continues one: give "
                                   "one of them"))),
)

TABLE["refprune demo"] = (
    _cli("--net", "choice", "mlp", "mlp: two tanh layers on 2-d spirals; conv: a conv net on 8x8 images of bars",
         choices=("mlp", "conv")),
    _cli("--hidden", "int", None, "width of the hidden layers (mlp, default 16) or channels of the convolution "
         "(conv, default 8)", low=1, none=True, accepted_text="a positive int"),
    _cli("--steps", "int", 500, "full-batch training steps", low=1),
    _cli("--lr", "real", 0.05, "learning rate", low=0.0, low_open=True),
    _cli("--seed", "seed", 0, "seed of the data and the initial parameters"),
    _cli("--plot", "newfile", None, "save the spectra as a PNG (needs matplotlib)",
         accepted_text="a file name in an existing, writable directory", metavar="FILE"),
    _cli("--heatmaps", "newfile", None, "save the Hessian, GGN, K-FAC, EKFAC and diagonal side by side as a PNG "
         "(needs matplotlib)", accepted_text="a file name in an existing, writable directory", metavar="FILE"),
)

TABLE["refprune fixtures"] = (
    _cli("directory", "dir", None, "where to write the fixtures (created if missing)",
         accepted_text="a directory, or a path whose parent exists", positional=True),
    _cli("--quiet", "flag", False, "no progress lines"),
)

TABLE["refprune check"] = (
    _cli("--builtin", "flag", False, "the built-in self-check even if the tests are present"),
)


def _cli_path(where, o, text):
    import os

    if o.kind == "text":
        return text
    if o.kind == "file":
        if os.path.isdir(text):
            raise ValueError(f"{where}: {o.name} {text} is a directory; it must be {o.accepted}")
        if not os.path.isfile(text):
            raise ValueError(f"{where}: {o.name} {text}: no such file; it must be {o.accepted}")
        return text
    parent = os.path.dirname(os.path.abspath(text))
    if o.kind == "dir":
        if os.path.exists(text) and not os.path.isdir(text):
            raise ValueError(f"{where}: {o.name} {text} is a file; it must be {o.accepted}")
        if not os.path.isdir(parent):
            raise ValueError(f"{where}: {o.name} {text}: the directory {parent} does not exist")
        return text
    if os.path.isdir(text):  # newfile
        example = os.path.join(text, "H.npy" if o.metavar == "FILE.npy" else o.dest + ".png")
        raise ValueError(f"{where}: {o.name} {text} is a directory; give a file name such as {example}")
    if not os.path.isdir(parent):
        raise ValueError(f"{where}: {o.name} {text}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"{where}: {o.name} {text}: the directory {parent} is not writable")
    return text


def cli_value(where, o, text):
    """The value of command-line option ``o`` from its text (a list of texts for
    ``nargs``; a bool for a flag), of the row's kind; text that is not of the kind
    raises :class:`OptionTypeError` naming the option, the text and what is accepted.
    The range is :func:`convert`'s."""
    if o.kind == "flag" or text is None:
        return text
    if o.kind == "shape":
        dims = []
        for t in text:
            try:
                dims.append(int(t))
            except ValueError:
                raise OptionTypeError(f"{where}: {o.name} must be {o.accepted}, got {' '.join(text)!r} "
                                      f"({t!r} is not an int)") from None
            if dims[-1] < 1:
                raise ValueError(f"{where}: {o.name} must be {o.accepted}, got {' '.join(text)!r}")
        return tuple(dims)
    if o.kind in _CLI_KINDS:
        return _cli_path(where, o, text)
    if o.kind in ("int", "seed"):
        try:
            return int(text)
        except ValueError:
            raise OptionTypeError(f"{where}: {o.name} must be {o.accepted}, got {text!r} (not an int)") from None
    if o.kind == "real":
        try:
            return float(text)
        except ValueError:
            raise OptionTypeError(f"{where}: {o.name} must be {o.accepted}, got {text!r} (not a number)") from None
    return text  # a choice: convert() checks it


def check_command_line(command, given, mode):
    """Check the options of ``refprune COMMAND`` that were typed: ``given`` maps each
    option's name (``"--block-rows"``) to its text.  Each is read by :func:`cli_value`,
    checked by :func:`convert` and, against ``mode(values)`` (the run's set of mode
    words, from the converted values), by :func:`refuse_inapplicable`.  Returns every
    option's value by ``dest`` (``block_rows``), the table's default where not typed."""
    where = f"refprune {command}"
    rows = TABLE[where]
    values = {o.name: cli_value(where, o, given[o.name]) for o in rows if o.name in given}
    values = convert(where, values, where=where)
    full = {o.dest: values.get(o.name, o.default) for o in rows}
    words = _Mode(mode(full))
    words.values = full
    refuse_inapplicable(where, values, method=words, where=where)
    return full
