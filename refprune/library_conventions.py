"""refprune's K-FAC factors expressed in another library's scaling and layout.

K-FAC approximates a layer block by a Kronecker product, and a Kronecker product is
unchanged when one factor is multiplied by ``t`` and the other divided by ``t``; libraries
also differ in the loss scaling ``R``, in the output curvature for squared error and in
where the bias goes.  :func:`express_kfac` computes refprune's factors and converts them,
so a factor of the other library can be compared entry by entry.  The relations
(``docs/conventions.md`` §8, measured against each library in
``tests/test_library_conventions.py``), with ``T`` the output locations of a
convolution (1 for Linear), ``N`` the data points, ``C`` the outputs and refprune's
``S``, ``A`` in the variant named:

==============  ==========================================================================
library         factors
==============  ==========================================================================
curvlinops      ``KFACLinearOperator``: identical (``kfac_approx`` expand/reduce;
                ``separate_weight_and_bias=True`` is ``bias="separate"``)
BackPACK        ``KFLR`` (and ``KFAC``'s layout): ``weight.kflr = [S_reduce, T A_expand]``
                (weights only), ``bias.kflr = [S_reduce]``
nngeometry      ``FIM(..., representation=PMatKFAC)``: ``(A, G)`` with the bias folded,
                ``A = T sqrt(K) A_expand``, ``G = c S_expand / (T sqrt(K))``,
                ``K = C - 1`` (cross-entropy, its Cholesky factor of the categorical
                covariance) or ``C`` (``variant="regression"``, and
                ``"classif_binary_logits"`` for binary cross-entropy)
ASDL            ``fisher.kron``: ``A = A_expand`` (weights only), ``B = c S_expand``;
                the bias block is ``B``
KFAC-Pytorch    ``ComputeCovA``/``ComputeCovG`` after one batch (EigenDamage-Pytorch
                shares the code: ``"eigendamage-pytorch"``): ``A = A_expand / T``
                (bias folded), ``G = N R T S_expand``
ACKTR           ``compute_cov_a``/``compute_cov_g`` after one batch, the bias apart (its
                ``AddBias`` module): weight ``A = A_expand / T`` (weights only),
                ``G = N R T S_expand``; bias ``A = [1]``, ``G = N R S_reduce``; with
                ``approx="reduce"`` (its ``fast_cnn=True``) ``A = A_reduce``,
                ``G = N R S_reduce``
==============  ==========================================================================

KFAC-Pytorch, EigenDamage-Pytorch and ACKTR multiply the back-propagated gradients by
``N`` because they assume a mean loss (``R = 1/N``, so ``N R = 1`` there); on any other loss the factor ``N R``
remains.  The conv factors are stored as ``(A/T, T S)``: the same Kronecker product as
refprune's expand variant.

``c`` converts the loss scaling: nngeometry and ASDL average over the ``N`` data points
whatever the loss reduction (``R' = 1/N``) and, for squared error, use a unit-variance
Gaussian (``Lambda' = I``, refprune ``2 I``) except for ASDL's empirical Fisher, whose
gradients are PyTorch's ``2 (f - y)``: ``c = (R'/R) * (1/2 if that halving applies)``.

Binary cross-entropy on logits (``BCEWithLogitsLoss``): curvlinops has it (same
factors, its "mean" over ``N C`` elements included); BackPACK only for one output
(``C = 1``); nngeometry as ``variant="classif_binary_logits"`` (``K = C``, ``c = (1/N)/R``,
no halving: ``Lambda = diag(p (1 - p))`` in both); ASDL's ``fisher_exact`` and
``fisher_mc`` know only cross-entropy and squared error, so only its ``fisher_emp``
compares (``c = (1/N)/R``).  What a library does not support is refused by name.
"""

import numpy as np

from .checks import validate
from .curvature.kronecker import kfac
from .nn import AffineLayer, BCEWithLogitsLoss, CrossEntropyLoss, MSELoss

LIBRARIES = ("curvlinops", "backpack", "nngeometry", "asdl", "kfac-pytorch", "eigendamage-pytorch", "acktr")
#: libraries whose K-FAC multiplies the back-propagated gradients by N (a mean loss assumed);
#: KFAC-Pytorch and EigenDamage-Pytorch share one ``utils/kfac_utils.py``
_BATCH_AVERAGED = ("kfac-pytorch", "eigendamage-pytorch", "acktr")


def _locations(model, X):
    """``T`` (output locations) of every affine layer, by layer index."""
    out, s = {}, X.shape[1:]
    for j, layer in enumerate(model):
        nxt = layer.output_shape(s)
        if isinstance(layer, AffineLayer):
            out[j] = int(np.prod(nxt)) // layer.out_units
        s = nxt
    return out


def loss_rescaling(library, loss, n, c, curvature):
    """``c``: the factor by which ``library`` scales a curvature matrix relative to
    refprune's for the same loss (docs/conventions.md §8)."""
    if library in ("curvlinops", "backpack"):
        return 1.0
    ratio = (1.0 / n) / loss.scale(n, c)
    # only squared error has a Lambda (2 I) that nngeometry's and ASDL's unit-variance Gaussian halves
    halved = isinstance(loss, MSELoss) and not (library == "asdl" and curvature == "empirical_fisher")
    return ratio * (0.5 if halved else 1.0)


def _check_binary_support(library, curvature, c):
    """Refuse, by name, a binary cross-entropy comparison that ``library`` cannot make
    (the sources of BackPACK 1.7 and ASDL, see the module's docstring)."""
    if library == "backpack" and c != 1:
        raise ValueError(f"express_kfac: BackPACK supports BCEWithLogitsLoss for one output only (C = 1), the "
                         f"model has C = {c}")
    if library == "asdl" and curvature != "empirical_fisher":
        raise ValueError(f"express_kfac: ASDL's fisher_exact and fisher_mc support loss_type 'cross_entropy' and "
                         f"'mse' only, not BCEWithLogitsLoss; curvature must be 'empirical_fisher' (fisher_emp), "
                         f"got {curvature!r}")


def express_kfac(model, params, X, y, loss, library, curvature="ggn", approx="expand", samples=1, seed=0,
                 targets=None, bias=None):
    """refprune's K-FAC factors in ``library``'s scaling and layout, one entry per affine
    layer (see the module docstring for the relations).

    Parameters
    ----------
    library : {"curvlinops", "backpack", "nngeometry", "asdl", "kfac-pytorch", "eigendamage-pytorch", "acktr"}
    curvature, samples, seed, targets :
        As for :func:`refprune.kfac`.  nngeometry's ``FIM`` is the true Fisher only.
        KFAC-Pytorch, EigenDamage-Pytorch and ACKTR back-propagate a loss on targets
        drawn from the model (``"mc_fisher"`` with one sample; pass their draws as
        ``targets=``) or on the data's (EigenDamage's ``fisher_type`` other than
        ``"true"``: ``"empirical_fisher"``).
    approx : {"expand", "reduce"}
        curvlinops, and acktr (``"reduce"`` is its ``fast_cnn=True``); the others have
        one convention each, given above.
    bias : {"fold", "separate"}, optional
        curvlinops only (``separate_weight_and_bias``); default ``"separate"``, its own.

    Returns
    -------
    list of dict
        curvlinops: ``{"input_covariance": A, "gradient_covariance": S}`` (with
        ``bias="separate"``, ``A`` covers the weights and the same ``S`` the bias);
        backpack: ``{"weight": [S, A], "bias": [S] or None}``;
        nngeometry: ``{"A": A, "G": G}``; asdl: ``{"A": A, "B": B}``;
        kfac-pytorch, eigendamage-pytorch: ``{"A": A, "G": G}`` (its ``m_aa``, ``m_gg``
        after one batch); acktr: ``{"weight": {"A": A, "G": G}, "bias": {"A": [[1]],
        "G": G_b} or None}`` (the ``m_aa``, ``m_gg`` of the layer and of its
        ``AddBias``).
    """
    if library not in LIBRARIES:
        raise ValueError(f"express_kfac: library must be one of {LIBRARIES}, got {library!r}")
    if library not in ("curvlinops", "acktr") and (approx != "expand" or bias is not None):
        raise ValueError(f"express_kfac: {library} has one convention; approx= applies to curvlinops and acktr, "
                         "bias= to curvlinops only")
    if library == "acktr" and bias is not None:
        raise ValueError("express_kfac: acktr keeps the bias apart (its AddBias module); bias= applies to curvlinops "
                         "only")
    if library == "nngeometry" and curvature not in ("ggn", "fisher"):
        raise ValueError(f"express_kfac: nngeometry's FIM is the true Fisher; curvature must be 'ggn' or 'fisher', "
                         f"got {curvature!r}")
    inp = validate(model, params, X, y, loss)
    if isinstance(loss, BCEWithLogitsLoss):
        _check_binary_support(library, curvature, inp.n_outputs)
    mc = dict(samples=samples, seed=seed, targets=targets)
    layers = [j for j, layer in enumerate(model) if isinstance(layer, AffineLayer)]
    T = _locations(model, inp.X)
    c = loss_rescaling(library, loss, inp.n_samples, inp.n_outputs, curvature)
    if library == "curvlinops":
        K = kfac(model, params, X, y, loss, curvature=curvature, approx=approx, bias=bias or "separate", **mc)
        by_layer = {}
        for b in K.blocks:
            by_layer.setdefault(b.layout.layer_offset, []).append(b)
        offsets = model.param_offsets()
        # the first block of a layer is the folded one or its weights' (every layer has weights)
        return [{"input_covariance": by_layer[offsets[j]][0].A, "gradient_covariance": by_layer[offsets[j]][0].S}
                for j in layers]
    if library in _BATCH_AVERAGED:
        return _batch_averaged(model, params, X, y, loss, library, curvature, approx, mc, layers, T,
                               inp.n_samples * inp.scale)
    folded = kfac(model, params, X, y, loss, curvature=curvature, approx="expand", **mc).blocks
    out = []
    if library == "backpack":
        reduced = kfac(model, params, X, y, loss, curvature=curvature, approx="reduce", **mc).blocks
        for j, e, r in zip(layers, folded, reduced):
            w = e.A[: e.layout.r, : e.layout.r] * T[j]
            out.append({"weight": [r.S, w], "bias": [r.S] if model[j].bias else None})
        return out
    for j, e in zip(layers, folded):
        if library == "nngeometry":
            k = inp.n_outputs - 1 if isinstance(loss, CrossEntropyLoss) else inp.n_outputs
            t = T[j] * np.sqrt(k)
            out.append({"A": t * e.A, "G": c * e.S / t})
        else:
            out.append({"A": e.A[: e.layout.r, : e.layout.r].copy(), "B": c * e.S})
    return out


def _batch_averaged(model, params, X, y, loss, library, curvature, approx, mc, layers, T, nr):
    """The factors of KFAC-Pytorch, EigenDamage-Pytorch and ACKTR (``docs/conventions.md``
    §8 cites the lines).  Their input factor averages the patches divided by ``T``,
    ``(1/N) sum_n (sum_t a_nt/T)...``: ``A_expand / T``; their output factor multiplies the
    back-propagated ``R g`` by ``N`` (and by ``T`` for a convolution) and divides by the
    ``N T`` rows, ``G = (1/(N T)) sum (N T R g)(N T R g)^T = N R T S_expand``.  ACKTR's
    ``AddBias`` sums the bias gradients over the locations, the reduce variant's ``S``."""
    if library != "acktr":
        blocks = kfac(model, params, X, y, loss, curvature=curvature, approx="expand", **mc).blocks
        return [{"A": b.A / T[j], "G": nr * T[j] * b.S} for j, b in zip(layers, blocks)]
    reduced = kfac(model, params, X, y, loss, curvature=curvature, approx="reduce", **mc).blocks
    weights = reduced if approx == "reduce" else kfac(model, params, X, y, loss, curvature=curvature,
                                                      approx="expand", **mc).blocks
    out = []
    for j, w, r in zip(layers, weights, reduced):
        k = w.layout.r
        t = 1 if approx == "reduce" else T[j]
        out.append({"weight": {"A": w.A[:k, :k] / t, "G": nr * t * w.S},
                    "bias": {"A": np.ones((1, 1)), "G": nr * r.S} if model[j].bias else None})
    return out
