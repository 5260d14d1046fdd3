"""Naming a difference: what is off when another implementation disagrees with refprune.

Given the other result ``a`` and refprune's ``b`` for one case, :func:`diagnose` looks for
the usual suspects, in this order: a shape or a NaN; with the quantity named, a float32
computation and then the neighbouring quantities of :mod:`.neighbours` (the GGN where the
Hessian was meant, K-FAC "reduce" where "expand" was, only the upper triangle, ...)
matched to rounding, also up to a named factor; one constant factor (and which convention
explains it: ``Lambda = 2I`` against ``I``, ``R`` of "mean" against "sum", ``C`` outputs,
``T`` convolution locations, ``R`` applied twice); the parameter arrays where the
difference lives (a bias alone points at a missing or separately treated bias); a
transposed weight layout; a constant factor per layer.  :func:`diagnose_pairs` does the
same for K-FAC's per-layer factor pairs.  The catalogue: ``docs/conventions.md`` §9a.
"""

import numpy as np

from ..checks import real_array  # noqa: F401 (re-exported: the harness and fixtures read it here)
from ..nn import AffineLayer, BCEWithLogitsLoss, MSELoss
from . import neighbours as _nb


def relative_error(a, b):
    """``max |a - b| / max |b|`` (absolute when ``b`` is zero); ``inf`` on a shape
    mismatch or when ``a`` has a NaN or inf (a NaN would otherwise compare as a pass:
    every comparison with NaN is false).

    Raises ``TypeError`` for a complex or non-numeric ``a`` or ``b`` and ``ValueError``
    when the reference ``b`` is not finite.
    """
    a, b = real_array(a, "relative_error: a"), real_array(b, "relative_error: b")
    if not np.all(np.isfinite(b)):
        bad = int(b.size - np.count_nonzero(np.isfinite(b)))
        raise ValueError(f"relative_error: the reference b contains {bad} NaN or inf value(s)")
    if a.shape != b.shape or not np.all(np.isfinite(a)):
        return float("inf")
    scale = float(np.abs(b).max()) if b.size else 0.0
    diff = float(np.abs(a - b).max()) if b.size else 0.0
    return diff / scale if scale > 0 else diff


def constant_factor(a, b):
    """``r`` with ``a = r b`` up to rounding, or ``None``."""
    bb = float(np.vdot(b, b))
    if bb == 0:
        return None
    r = float(np.vdot(a, b)) / bb
    if relative_error(a, r * b) < 1e-8 and r != 0:
        return r
    return None


def _explanations(case):
    """Known convention factors for this case: ``[(value, words)]``."""
    n = len(case.X)
    c = case.model.output_shape(case.X.shape[1:])[0]
    # squared error's Lambda = 2 I and both per-element losses' R = 1/(N C) for "mean"
    # (docs/conventions.md §2, §3); cross-entropy's R = 1/N
    mse, bce = isinstance(case.loss, MSELoss), isinstance(case.loss, BCEWithLogitsLoss)
    out = []
    if mse:
        out.append((0.5, "Lambda = I for squared error where refprune (like PyTorch's MSELoss) has 2 I"))
        out.append((2.0, "Lambda = 4 I or a loss with 2 (f - y)^2"))
    if case.loss.reduction == "mean":
        out.append((float(n), "a sum over samples where the loss takes the mean (R = 1/N)"))
        if mse:
            out.append((float(n * c), "a sum where MSELoss 'mean' divides by N C"))
            out.append((float(c), "a mean over samples only where MSELoss 'mean' divides by N C"))
            out.append((0.5 * c, "Lambda = I and a mean over samples only (ASDL, nngeometry)"))
        if bce:
            out.append((float(n * c), "a sum where BCEWithLogitsLoss 'mean' divides by N C"))
            out.append((float(c), "a mean over samples only (nngeometry's and ASDL's convention) where "
                                  "BCEWithLogitsLoss 'mean' divides by N C"))
    else:
        out.append((1.0 / n, "a mean over samples where the loss takes the sum (R = 1)"))
        if mse:
            out.append((0.5 / n, "Lambda = I and a mean over samples (ASDL, nngeometry)"))
    locations, s = set(), case.X.shape[1:]
    for layer in case.model:
        nxt = layer.output_shape(s)
        if isinstance(layer, AffineLayer) and len(nxt) == 3:
            locations.add(int(np.prod(nxt[1:])))
        s = nxt
    for t in sorted(locations):
        if t > 1:
            out.append((float(t), f"the number of convolution output locations T = {t} (a KFC scaling)"))
            out.append((1.0 / t, f"1/T, T = {t} convolution output locations (a KFC scaling)"))
    out.append((-1.0, "a flipped sign"))
    return out


def _name_factor(r, case, explanations=None):
    # every known cause with this value is named: on a case where two of them coincide
    # (N = C, or N = 1) the case cannot tell them apart, and naming one would be a guess
    found = []
    for value, words in (_explanations(case) if explanations is None else explanations):
        if abs(r / value - 1) < 1e-6 and words not in found:
            found.append(words)
    if not found:
        return f"off by a constant factor {r:.6g}"
    if len(found) == 1:
        return f"off by a constant factor {r:.6g}: {found[0]}"
    return (f"off by a constant factor {r:.6g}: " + "; or ".join(found)
            + " (these coincide on this case; a case where they differ tells them apart)")


def _segments(model):
    """``[(label, start, stop, layer, part)]`` for every parameter array."""
    off = model.param_offsets()
    out = []
    for j, layer in enumerate(model):
        if isinstance(layer, AffineLayer):
            out.append((f"layer {j} {layer!r} weight", off[j], off[j] + layer.n_weight, layer, "weight"))
            if layer.bias:
                out.append((f"layer {j} {layer!r} bias", off[j] + layer.n_weight, off[j + 1], layer, "bias"))
    return out


#: a neighbour is named when the result is within this many times the tolerance of it
MATCH = 10
#: ... and this many times closer to it than to refprune's result
CLOSER = 10
#: quantities without an output Hessian Lambda (built from gradients alone)
_LAMBDA_FREE = ("empirical_fisher", "empirical_fisher_diagonal", "mc_fisher", "mc_fisher_diagonal", "grad",
                "per_sample_grads", "loss")
#: quantities that are curvature: a factor N on a sum loss or R twice can come from their per-sample terms
_CURVATURE = ("hessian", "ggn", "residual", "fisher", "mc_fisher", "empirical_fisher", "hessian_diagonal",
              "ggn_diagonal", "empirical_fisher_diagonal", "mc_fisher_diagonal", "kfac", "ekfac", "hvp",
              "obd_saliencies")
_LAMBDA_WORDS = ("Lambda = I for squared error where refprune (like PyTorch's MSELoss) has 2 I",
                 "Lambda = 4 I or a loss with 2 (f - y)^2",
                 "Lambda = I and a mean over samples only (ASDL, nngeometry)",
                 "Lambda = I and a mean over samples (ASDL, nngeometry)")


def _is_lambda_free(quantity, options):
    if quantity in _LAMBDA_FREE:
        return True
    return quantity in ("kfac", "kfac_factors", "ekfac") and (options or {}).get("curvature") in (
        "empirical_fisher", "mc_fisher")


def factor_explanations(case, quantity=None, options=None):
    """Convention factors of ``case`` for ``quantity``: ``[(value, words)]``.

    Without a quantity, those of :func:`_explanations`.  With one: no ``Lambda`` for a
    quantity built from gradients alone (an empirical or MC Fisher has no Lambda, and its
    ``1/C`` for squared-error "mean" comes from per-sample losses averaged over the
    outputs); for curvature, ``R`` applied twice and, on a sum loss, ``N`` from gradients
    multiplied by ``N`` as for a mean loss (docs/conventions.md §2, §8)."""
    out = _explanations(case)
    if quantity is None:
        return out
    n = len(case.X)
    c = case.model.output_shape(case.X.shape[1:])[0]
    R = case.loss.scale(n, c)
    mse, bce = isinstance(case.loss, MSELoss), isinstance(case.loss, BCEWithLogitsLoss)
    if _is_lambda_free(quantity, options):
        out = [(v, w) for v, w in out if w not in _LAMBDA_WORDS]
        if bce and quantity != "loss" and case.loss.reduction == "mean" and c > 1:
            out.insert(0, (1.0 / c, f"1/C = 1/{c}: per-sample gradients of a loss averaged over the C = {c} "
                                    "outputs (BCEWithLogitsLoss('mean') on one sample), squared; refprune's l_n "
                                    "sums over the outputs and R = 1/(N C) is applied once"))
        if mse and quantity != "loss":
            if case.loss.reduction == "mean" and c > 1:
                out.insert(0, (1.0 / c, f"1/C = 1/{c}: per-sample gradients of a loss averaged over the C = {c} "
                                        "outputs (MSELoss('mean') on one sample), squared; refprune's l_n sums over "
                                        "the outputs and R = 1/(N C) is applied once"))
            if quantity not in ("grad", "per_sample_grads"):
                out.insert(0, (0.25, "gradients f - y of (f - y)^2 / 2, squared, where refprune's l_n = "
                                     "sum (f - y)^2 has the gradient 2 (f - y)"))
    if quantity in _CURVATURE or quantity == "kfac_factors":
        if R != 1:
            out.insert(0, (R, f"R = {R:.6g} applied twice (per-sample terms that already carry R, like refprune's "
                              "per_sample_grads, summed and scaled by R again)"))
        if case.loss.reduction == "sum":
            out.insert(0, (float(n), f"N = {n}: gradients multiplied by N as if the loss took the mean (the style of "
                                     "EigenDamage-Pytorch, KFAC-Pytorch, ACKTR), where it takes the sum (R = 1)"))
    return out


def _name(r, explanations):
    for value, words in explanations:
        if abs(r / value - 1) < 1e-6:
            return words
    return None


def _fit(a, x):
    """``r`` minimising ``|a - r x|`` and the relative error of ``r x``."""
    xx = float(np.vdot(x, x))
    if xx == 0:
        return None, float("inf")
    r = float(np.vdot(a, x)) / xx
    return r, relative_error(a, r * x)


_EPS32 = float(np.finfo(np.float32).eps)


def _float32_note(a, b, tol):
    """A float32 computation: every entry of ``a`` a float32 number (refprune's are not),
    and a difference of float32 rounding size."""
    err = relative_error(a, b)
    if not tol < err <= 1e4 * _EPS32 or a.size == 0:
        return None
    if not np.array_equal(a, a.astype(np.float32).astype(float)) or np.array_equal(b, b.astype(np.float32).astype(
            float)):
        return None
    return (f"computed in float32: every entry is a float32 number and the relative error {err:.1e} is float32 "
            f"rounding (float32 eps {_EPS32:.1e}), where refprune computes in float64; compute in float64 or "
            "compare at a float32 tolerance (rtol ~1e-5)")


def neighbour_candidates(case, ref, quantity, options=None):
    """``[(description, array)]``: the quantity's registered neighbours, then the generic
    transformations of refprune's result ``ref``."""
    fn = _nb.NEIGHBOURS.get(quantity)
    out = list(fn(case, options)) if fn is not None else []
    return out + _nb.generic_neighbours(case, ref)


def match_neighbours(a, b, candidates, tol, explanations):
    """The sentence naming the candidate that ``a`` matches, or ``None``.

    A match is within ``MATCH`` times the tolerance and ``CLOSER`` times closer than ``b``;
    the first in order wins (specific neighbours come before generic ones).  When none
    matches as it is, one that matches up to a constant factor named in ``explanations``
    is named with it (not for a candidate proportional to ``b``: a constant factor of
    ``b`` is named as such)."""
    err_ref = relative_error(a, b)
    limit = MATCH * max(tol, 1e-12)
    usable = []
    for desc, x in candidates:
        # a registered neighbour's complex or boolean array is refused by name, never truncated
        x = real_array(x, f"match_neighbours: the candidate {desc!r}")
        if x.shape != a.shape or not np.all(np.isfinite(x)) or relative_error(x, b) <= tol:
            continue  # not comparable, or indistinguishable from refprune's own result
        e = relative_error(a, x)
        if e <= limit and e * CLOSER <= err_ref:
            return f"matches {desc} (relative error {e:.1e}, against {err_ref:.1e} from refprune's)"
        usable.append((desc, x))
    if constant_factor(a, b) is not None:
        return None
    for desc, x in usable:
        if constant_factor(x, b) is not None:
            continue
        r, e = _fit(a, x)
        if r is not None and e <= limit and e * CLOSER <= err_ref:
            words = _name(r, explanations)
            if words:
                return f"matches {desc}, off by a constant factor {r:.6g}: {words} (relative error {e:.1e})"
    return None


def diagnose(a, b, case, tol, quantity=None, options=None):
    """Sentences naming what differs between ``a`` (the other result) and ``b``
    (refprune's) on ``case``; ``tol`` is the relative tolerance in force.

    With ``quantity`` (a name of :data:`refprune.conformance.QUANTITIES`; ``options``
    its options, the K-FAC options for the K-FAC quantities) the neighbouring quantities
    of :mod:`refprune.conformance.neighbours` are computed (only here, on a failure)
    and a match is named first, and constant factors are named for that quantity."""
    a, b = real_array(a, "diagnose: a"), real_array(b, "diagnose: b")
    if a.shape != b.shape:
        return [f"shape {a.shape}, refprune's is {b.shape} (parameters in PyTorch order: weight.ravel() then bias, "
                "layer by layer)"]
    if not np.all(np.isfinite(a)):
        nan = int(np.isnan(a).sum())
        return [f"{nan} NaN and {int(np.size(a) - np.isfinite(a).sum()) - nan} inf entries of {a.size}"]
    expl = factor_explanations(case, quantity, options)
    if quantity is not None and relative_error(a, b) > tol:
        note = _float32_note(a, b, tol)
        if note:
            return [note]
        named = match_neighbours(a, b, neighbour_candidates(case, b, quantity, options), tol, expl)
        if named:
            return [named]
    notes = []
    r = constant_factor(a, b)
    if r is not None and a.size == 1:
        named = _name_factor(r, case, expl)
        return [named if ":" in named else f"value {float(a.ravel()[0])!r}, refprune's {float(b.ravel()[0])!r}"]
    if r is not None:
        return [_name_factor(r, case, expl)]
    n = case.n_params
    if a.ndim >= 1 and a.shape[0] == n and (a.ndim == 1 or a.shape == (n, n)):
        bad = []
        for label, s0, s1, layer, part in _segments(case.model):
            rows_a, rows_b = a[s0:s1], b[s0:s1]
            scale = max(float(np.abs(b).max()), 1e-300)
            if float(np.abs(rows_a - rows_b).max(initial=0.0)) / scale > tol:
                bad.append((label, s0, s1, layer, part))
        if bad:
            notes.append("differs in: " + "; ".join(lbl for lbl, *_ in bad))
            if all(part == "bias" for *_, part in bad):
                notes.append("only bias entries differ: is the bias missing, or treated apart from the weights "
                             "(refprune folds it into A as a constant input 1)?")
            for label, s0, s1, layer, part in bad:
                if part == "weight" and a.ndim == 1:
                    c_out = layer.out_units
                    w_a, w_b = a[s0:s1], b[s0:s1]
                    r_in = (s1 - s0) // c_out
                    if np.allclose(w_a.reshape(r_in, c_out).T.ravel(), w_b, rtol=tol, atol=0):
                        notes.append(f"{label}: transposed layout (refprune and PyTorch store weight as "
                                     f"(out, in) row-major)")
                        continue
                f = constant_factor(a[s0:s1], b[s0:s1])
                if f is not None:
                    notes.append(f"{label}: " + _name_factor(f, case, expl))
    if not notes:
        notes.append(f"relative error {relative_error(a, b):.3e}, not a constant factor and not confined to one "
                     "parameter array")
    return notes


# ---------------------------------------------------------------------------------------
# K-FAC's per-layer factor pairs


def _pair_labels(case, options):
    """A label for every pair refprune gives with these options."""
    from ..curvature.kronecker import kfac

    opts = _nb._kfac_options(options)
    op = kfac(*case.args(), **_nb._kfac_kw(case, opts))
    # a layer's position in the network, counted as _segments and PyTorch's module names count it: a layer
    # without parameters (Tanh, Flatten) starts at the same offset as the next one, so the offset cannot name it
    position = {id(layer): j for j, layer in enumerate(case.model)}
    labels = []
    for b in op.blocks:
        lay = b.layout
        j = position[id(lay.layer)]
        part = {"all": "", "weight": " weights", "bias": " bias"}[lay.part]
        labels.append((f"layer {j} {lay.layer!r}{part}", lay))
    return labels


def _locations(case):
    """``{layer offset: T}``: convolution output locations of every affine layer."""
    out, s = {}, case.X.shape[1:]
    off = case.model.param_offsets()
    for j, layer in enumerate(case.model):
        nxt = layer.output_shape(s)
        if isinstance(layer, AffineLayer):
            out[int(off[j])] = int(np.prod(nxt[1:])) if len(nxt) == 3 else 1
        s = nxt
    return out


def _a_explanations(case, t):
    """Factors of ``A = 1/(N T) sum a a^T`` alone (docs/conventions.md §4)."""
    n = len(case.X)
    out = [(float(n), f"N = {n}: A summed over the samples where refprune averages it (A = 1/(N T) sum a a^T)")]
    if t > 1:
        out += [(float(t), f"T = {t}: A summed over the convolution locations where refprune averages it "
                           "(expand: A = 1/(N T) sum a a^T)"),
                (float(n * t), f"N T = {n * t}: A summed over samples and locations, not averaged"),
                (1.0 / t, f"1/T = 1/{t}: A divided by the T = {t} locations twice")]
    out.append((-1.0, "a flipped sign"))
    return out


def _s_explanations(case, options, t):
    out = factor_explanations(case, "kfac_factors", options)
    if t > 1:
        out.insert(0, (float(t), f"T = {t}: S summed over the locations of this layer where refprune averages "
                                 "(or A averaged where refprune sums)"))
        out.insert(1, (1.0 / t, f"1/T = 1/{t}: S averaged over the locations of this layer where refprune sums "
                                "them (expand: S = R sum_{n,t} g g^T)"))
    return out


def _pairs_close(got, alt, limit):
    return len(got) == len(alt) and all(
        S.shape == aS.shape and A.shape == aA.shape and relative_error(S, aS) <= limit and relative_error(A, aA)
        <= limit for (S, A), (aS, aA) in zip(got, alt))


def _count_note(got, ref, case, opts):
    """Why ``got`` has another number of pairs than refprune's ``ref``."""
    from ..curvature.kronecker import kfac

    shapes = [(np.shape(S), np.shape(A)) for S, A in got]
    other = "separate" if opts["bias"] == "fold" else "fold"
    alt = kfac(*case.args(), **_nb._kfac_kw(case, dict(opts, bias=other))).blocks
    if shapes == [(b.S.shape, b.A.shape) for b in alt]:
        if other == "fold":
            return (f"{len(got)} factor pairs, one per layer with the bias folded into A (bias='fold'), where "
                    "bias='separate' was asked for: refprune then gives every layer with a bias two pairs, (S, A_W) "
                    "for its weights and (S, [[1]]) for its bias")
        return (f"{len(got)} factor pairs, a weight pair and a bias pair for every layer with a bias "
                "(bias='separate'), where bias='fold' was asked for: refprune then gives one pair per layer with the "
                "bias folded into A as a constant input 1")
    if opts["bias"] == "separate":
        labels = _pair_labels(case, opts)
        weights = [(np.shape(S), np.shape(A)) for (S, A), (_, lay) in zip(ref, labels) if lay.part != "bias"]
        if shapes == weights:
            return (f"{len(got)} factor pairs, refprune has {len(ref)}: the bias pairs are missing; with "
                    "bias='separate' every layer with a bias has a second pair (S, [[1]]) after its weight pair "
                    "(S, A_W)")
        return (f"{len(got)} factor pairs, refprune has {len(ref)} (bias='separate': one pair per Linear/Conv2d "
                "layer without a bias, two, weights then bias, per layer with one)")
    return f"{len(got)} factor pairs, refprune has {len(ref)} (one per Linear/Conv2d layer, the bias folded into A)"


def _alternative_pairs(case, opts):
    """``[(description, [(S, A)])]``: refprune's factor pairs with one option changed,
    swapped, centred."""
    out = [(d, [(b.S, b.A) for b in op.blocks]) for d, _, op in _nb.kfac_variants(case, opts)]
    out.append(("refprune's factors centred: np.cov of the features and output gradients (divided by m - 1) where "
                "refprune takes uncentred second moments (A = 1/(N T) sum a a^T)", _nb.centred_factor_pairs(case,
                                                                                                            opts)))
    return out


def diagnose_pairs(got, ref, case, tol, options=None):
    """Sentences naming what differs between the factor pairs ``got`` (the other
    result, ``[(S, A)]`` per block) and refprune's ``ref`` computed with the K-FAC
    ``options`` on ``case``: the number of pairs (bias folded or separate), ``(A, S)``
    swapped, a constant on ``S`` or ``A`` alone, the same Kronecker product split
    differently, "reduce" for "expand" (and the reverse), another curvature, centred
    covariances, the scalings ``T``, ``N``, ``C``, 2 and ``R`` twice."""
    opts = _nb._kfac_options(options)
    got = [(real_array(S, "diagnose_pairs: S"), real_array(A, "diagnose_pairs: A")) for S, A in got]
    ref = [(real_array(S, "diagnose_pairs: refprune's S"), real_array(A, "diagnose_pairs: refprune's A"))
           for S, A in ref]
    if len(got) != len(ref):
        return [_count_note(got, ref, case, opts)]
    limit = MATCH * max(tol, 1e-12)
    errs = [(relative_error(S, rS), relative_error(A, rA)) for (S, A), (rS, rA) in zip(got, ref)]
    failing = [i for i, (eS, eA) in enumerate(errs) if eS > tol or eA > tol]
    if not failing:
        return []
    alts = _alternative_pairs(case, opts)
    for desc, pairs in alts:
        if not _pairs_close(ref, pairs, tol) and _pairs_close(got, pairs, limit):
            return [f"matches {desc}"]
    if all(S.shape == rA.shape and A.shape == rS.shape for (S, A), (rS, rA) in zip(got, ref)) and _pairs_close(
            [(A, S) for S, A in got], ref, limit):
        return ["(A, S) swapped in every pair: refprune's pairs are (S, A), the output-gradient factor S (G in the "
                "papers) first, then the input factor A"]
    labels = _pair_labels(case, opts)
    T = _locations(case)
    notes = []
    for i in failing:
        (S, A), (rS, rA), (eS, eA) = got[i], ref[i], errs[i]
        label, lay = labels[i]
        t = T[lay.layer_offset]
        notes.append(f"layer pair {i} ({label}): S error {eS:.2e}, A error {eA:.2e}")
        notes += [f"layer pair {i}: {x}" for x in _pair_notes(S, A, rS, rA, i, case, opts, t, limit, alts)]
    return notes


def _pair_notes(S, A, rS, rA, i, case, opts, t, limit, alts):
    if S.shape == rA.shape and A.shape == rS.shape and relative_error(S, rA) <= limit and \
            relative_error(A, rS) <= limit:
        return ["(A, S) swapped: refprune's pairs are (S, A), the output-gradient factor S (G in the papers) first"]
    if S.shape == rS.shape and A.shape != rA.shape:
        return [f"A has shape {A.shape}, refprune's {rA.shape}: the bias row of A (refprune folds it in) is missing "
                "or extra"]
    if S.shape != rS.shape or A.shape != rA.shape:
        return [f"shapes S {S.shape}, A {A.shape}; refprune's S {rS.shape}, A {rA.shape}"]
    rs, es = _fit(S, rS)
    ra, ea = _fit(A, rA)
    s_ok, a_ok = relative_error(S, rS) <= limit, relative_error(A, rA) <= limit
    out = []
    if es <= limit and ea <= limit and not s_ok and not a_ok and abs(rs * ra - 1) < 1e-6:
        how = ""
        if t > 1 and abs(rs / t - 1) < 1e-6:
            how = f": (A/T, T S) with T = {t}, the convolution factors some libraries store"
        elif t > 1 and abs(ra / t - 1) < 1e-6:
            how = f": (S/T, T A) with T = {t}"
        return [f"S off by {rs:.6g} and A by {ra:.6g}, the same Kronecker product split differently{how} "
                "(refprune.express_kfac converts between libraries)"]
    for name, ok, r, e, expl in (("S", s_ok, rs, es, _s_explanations(case, opts, t)),
                                 ("A", a_ok, ra, ea, _a_explanations(case, t))):
        if ok:
            continue
        if e <= limit:
            words = _name(r, expl)
            alone = " alone" if (a_ok if name == "S" else s_ok) else ""
            out.append(f"{name}{alone} off by a constant factor {r:.6g}" + (f": {words}" if words else ""))
            continue
        k = 0 if name == "S" else 1
        mine = S if name == "S" else A
        for desc, pairs in alts:
            if i < len(pairs) and pairs[i][k].shape == mine.shape and relative_error(mine, pairs[i][k]) <= limit:
                out.append(f"{name} matches the {name} of {desc}")
                break
    return out


def compare_pairs(got, ref, case, tol, options=None):
    """``(largest relative error, sentences)`` for the factor pairs ``got`` against
    refprune's ``ref``: what the harness reports for ``kfac_factors``."""
    if len(got) != len(ref):
        return float("inf"), diagnose_pairs(got, ref, case, tol, options)
    err = max((max(relative_error(S, rS), relative_error(A, rA)) for (S, A), (rS, rA) in zip(got, ref)),
              default=0.0)
    return err, (diagnose_pairs(got, ref, case, tol, options) if err > tol else [])
