"""Neighbouring quantities: the standard alternatives to a quantity that refprune can
compute for a case, so that a failing result can be named by the one it matches.

A wrong curvature matrix is rarely random: it is usually another well-defined matrix,
the GGN where the Hessian was meant, the empirical Fisher where the Fisher was meant,
K-FAC's "reduce" where "expand" was meant, the same matrix with its weights in
column-major order.  :data:`NEIGHBOURS` maps a quantity name of
:data:`refprune.conformance.QUANTITIES` to ``fn(case, options) -> [(description, array)]``
(``options``: the quantity's options, the K-FAC options for the K-FAC quantities, else
``None``); :func:`generic_neighbours` adds the transformations of refprune's own result
that apply to every matrix or vector over the parameters (upper or lower triangle,
diagonal blocks, transposed weight layout).  :func:`refprune.conformance.diagnosis.diagnose`
compares a failing result with all of them, on the failing case only (the smallest), and
names the match.  The catalogue and how each entry is detected: ``docs/conventions.md``
§9a.

Every neighbour is built from refprune's building blocks or from the per-sample Jacobians
``J_n = df_n/dtheta`` of the (small) zoo case, with the curvature written as
``R sum_n J_n^T Phi_n J_n`` (``docs/derivations.md`` §4).
"""

import numpy as np

from .. import derivatives as _d
from ..checks import validate
from ..curvature import diagonal as _diag
from ..curvature import exact as _c
from ..curvature.ekfac import EKFACBlock, ekfac
from ..curvature.kronecker import KFAC_APPROX, kfac, layer_statistics, with_bias_row
from ..curvature.output_factors import OutputFactor
from ..nn import AffineLayer, BCEWithLogitsLoss, CrossEntropyLoss
from ..nn.losses import log_softmax, sigmoid

#: ``quantity name: fn(case, options) -> [(description, array)]``
NEIGHBOURS = {}


def register(name):
    """Decorator: ``fn(case, options)`` gives the neighbours of quantity ``name``.

    >>> @register("my_quantity")                      # doctest: +SKIP
    ... def _(case, options):
    ...     return [("refprune's X without its 1/2 (a missing 1/2)", 2 * x(case))]
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"register: name must be a quantity name (a non-empty str), got {name!r}")

    def add(fn):
        if not callable(fn):
            raise TypeError(f"register({name!r}): expected a callable fn(case, options), got {type(fn).__name__}")
        if name in NEIGHBOURS:
            raise ValueError(f"register: quantity {name!r} has neighbours already ({NEIGHBOURS[name].__name__}); "
                             "extend that function instead of registering a second one")
        NEIGHBOURS[name] = fn
        return fn

    return add


# ---------------------------------------------------------------------------------------
# building blocks: per-sample Jacobians and the matrices written with them


class _Parts:
    """Outputs ``f (N, C)``, Jacobians ``J (N, C, n)``, per-sample gradients
    ``G (N, n)`` (unscaled, ``dl_n/dtheta``) and ``R`` of a case, computed once."""

    def __init__(self, case):
        inp = validate(*case.args())
        model = inp.model
        f, caches = _d.forward(inp)
        n_out = f.shape[1]
        eye = np.broadcast_to(np.eye(n_out), (len(f), n_out, n_out)).copy()
        douts = _d.backward(inp, caches, eye)
        J = np.zeros((len(f), n_out, model.n_params))
        off = model.param_offsets()
        for j, layer in enumerate(model):
            if isinstance(layer, AffineLayer):
                J[:, :, off[j] : off[j + 1]] = layer.per_sample_param_grad(caches[j], douts[j])
        self.inp, self.f, self.J, self.R = inp, f, J, inp.scale
        self.g_out = inp.loss.grad(f, inp.y)  # dl_n/df_n
        self.G = np.einsum("nc,nci->ni", self.g_out, J)

    def curvature(self, lam):
        """``R sum_n J_n^T lam_n J_n`` for output matrices ``lam (N, C, C)``."""
        return self.R * np.einsum("nci,ncd,ndj->ij", self.J, lam, self.J)

    def lambda_diag_p(self):
        """``diag(softmax(f_n))``: the softmax Hessian without its ``- p p^T``."""
        p = np.exp(log_softmax(self.f))
        return p[:, :, None] * np.eye(p.shape[1])[None]

    def lambda_sigmoid_p(self):
        """``diag(sigmoid(f_n))``: the binary cross-entropy's ``p (1 - p)`` without its
        ``(1 - p)`` (docs/derivations.md §3)."""
        p = sigmoid(self.f)
        return p[:, :, None] * np.eye(p.shape[1])[None]

    def lambda_softmax(self):
        """``diag(p) - p p^T`` with ``p = softmax(f_n)``: a softmax over the outputs in
        place of binary cross-entropy's independent sigmoids."""
        P = self.lambda_diag_p()
        p = np.exp(log_softmax(self.f))
        return P - p[:, :, None] * p[:, None, :]

    def lambda_identity(self):
        n, c = self.f.shape
        return np.broadcast_to(np.eye(c), (n, c, c))

    def grad(self):
        return self.R * self.G.sum(axis=0)

    def empirical_fisher(self):
        return self.R * self.G.T @ self.G

    def centred(self, ddof):
        """The per-sample gradients' covariance, ``R N / (N - ddof) sum_n (g_n - gbar)(g_n - gbar)^T``:
        the mean of the outer products replaced by ``np.cov`` (``ddof=1``) or by the
        biased covariance (``ddof=0``), ``R`` kept."""
        n = len(self.G)
        D = self.G - self.G.mean(axis=0)
        return self.R * n / (n - ddof) * D.T @ D


def _parts(case):
    return _Parts(case)


def _hessian(case):
    return _c.hessian(*case.args())


def _ggn(case):
    return _c.ggn(*case.args())


def _ce(case):
    return isinstance(case.loss, CrossEntropyLoss)


def _mc_fisher(case):
    return _c.fisher(*case.args(), curvature="mc_fisher", targets=case.targets)


def _lambda_forms(case, P):
    """The GGN with the output Hessian ``Lambda`` taken wrongly."""
    if _ce(case):
        return [("the GGN with the softmax Lambda taken as diag(p) (the - p p^T of the cross-entropy Hessian "
                 "missing)", P.curvature(P.lambda_diag_p()))]
    if isinstance(case.loss, BCEWithLogitsLoss):
        n, c = P.f.shape
        return [("the GGN with the sigmoid Lambda taken as diag(p) (the (1 - p) of binary cross-entropy's "
                 "p (1 - p) missing)", P.curvature(P.lambda_sigmoid_p())),
                ("the GGN with Lambda = I/4 (the sigmoid's curvature at f = 0 taken for every output)",
                 P.curvature(np.broadcast_to(np.eye(c) / 4, (n, c, c)))),
                ("the GGN with a softmax over the C outputs (diag(p) - p p^T) in place of binary cross-entropy's "
                 "independent sigmoids", P.curvature(P.lambda_softmax()))]
    return [("the GGN with Lambda = I for squared error, where refprune (like PyTorch's MSELoss) has 2 I",
             P.curvature(P.lambda_identity()))]


# ---------------------------------------------------------------------------------------
# generic helpers, also for quantities registered elsewhere


def weight_transpose_permutation(model):
    """``P`` with ``x[P]`` the flat vector ``x`` with every weight stored transposed,
    ``(out, in)`` read as column-major (``(in, out)`` row-major): the layout of a
    library that keeps ``W^T``, or of a Fortran-order ``ravel``."""
    P = np.arange(model.n_params)
    off = model.param_offsets()
    for j, layer in enumerate(model):
        if isinstance(layer, AffineLayer):
            c = layer.out_units
            r = layer.n_weight // c
            P[off[j] : off[j] + layer.n_weight] = off[j] + np.arange(c * r).reshape(c, r).T.ravel()
    return P


def block_mask(model, per="layer"):
    """``(n, n)`` boolean mask of the diagonal blocks, one per affine layer
    (``per="layer"``) or one per parameter array (``per="array"``: weight and bias apart)."""
    if per not in ("layer", "array"):
        raise ValueError(f"block_mask: per must be 'layer' or 'array', got {per!r}")
    n = model.n_params
    labels = np.full(n, -1)
    off = model.param_offsets()
    k = 0
    for j, layer in enumerate(model):
        if isinstance(layer, AffineLayer):
            labels[off[j] : off[j + 1]] = k
            if per == "array" and layer.bias:
                labels[off[j] + layer.n_weight : off[j + 1]] = k + 1
            k += 2
    return labels[:, None] == labels[None, :]


def quadratic_forms(W, A):
    """``w_i^T A w_i`` for every row ``w_i`` of ``W (c, p)``: the unit criteria's
    ``(c,)`` quadratic forms (Kron-OBD, C-OBD)."""
    W = np.asarray(W, dtype=float)
    return np.einsum("ip,pq,iq->i", W, np.asarray(A, dtype=float), W)


def row_sum_shortcut(W, A):
    """``sum_q (w_i**2 @ A)_q`` for every row: the shortcut ``sum(w**2 @ A)`` that some
    implementations write in place of :func:`quadratic_forms`; it equals them only for a
    diagonal ``A`` whose rows sum to its diagonal (it weights ``w_ip^2`` by the row sums
    of ``A`` and drops the cross terms ``w_ip w_iq``)."""
    W = np.asarray(W, dtype=float)
    return (W**2 @ np.asarray(A, dtype=float)).sum(axis=1)


def moving_average(values, decay, start="zero"):
    """The moving averages ``m_k = decay m_{k-1} + (1 - decay) x_k`` of a sequence of
    arrays, started at zero (``start="zero"``) or at the identity (``"identity"``,
    square matrices only; as several K-FAC codes start their factors), or at a given
    array.  Returns the list ``[m_1, ..., m_k]``: the neighbour of an optimizer state
    started the other way."""
    values = [np.asarray(v, dtype=float) for v in values]
    if not values:
        raise ValueError("moving_average: values must hold at least one array")
    if isinstance(start, str):
        if start == "zero":
            m = np.zeros_like(values[0])
        elif start == "identity":
            if values[0].ndim != 2 or values[0].shape[0] != values[0].shape[1]:
                raise ValueError(f"moving_average: start='identity' needs square matrices, got shape "
                                 f"{values[0].shape}")
            m = np.eye(len(values[0]))
        else:
            raise ValueError(f"moving_average: start must be 'zero', 'identity' or an array, got {start!r}")
    else:
        m = np.asarray(start, dtype=float)
    out = []
    for v in values:
        m = decay * m + (1 - decay) * v
        out.append(m)
    return out


def _is_param_matrix(ref, n):
    return ref.shape == (n, n)


def generic_neighbours(case, ref):
    """Transformations of refprune's own result ``ref`` that every matrix or vector over
    the parameters can suffer: ``[(description, array)]``.

    * any array whose last axis runs over the parameters: every weight in column-major
      order (rows and columns of a matrix permuted alike);
    * an ``(n, n)`` matrix: only its upper or lower triangle (the other half zero), the
      upper triangle mirrored with the diagonal counted twice, only the diagonal blocks of
      each layer or of each parameter array.

    (A float32 computation and a constant factor are detected without a neighbour, by
    :func:`refprune.conformance.diagnosis.diagnose`.)"""
    ref = np.asarray(ref, dtype=float)
    model, n = case.model, case.n_params
    out = []
    if ref.ndim >= 1 and ref.shape[-1] == n:
        P = weight_transpose_permutation(model)
        if np.any(P != np.arange(n)):
            t = ref[..., P]
            if _is_param_matrix(ref, n):
                t = t[P, :]
            out.append(("refprune's result with every weight in column-major order (W^T stored, or a Fortran-order "
                        "ravel; refprune and PyTorch store weight as (out, in) row-major)", t))
    if _is_param_matrix(ref, n):
        out += [("only the upper triangle of refprune's matrix (the lower half zero: one half of a symmetric matrix "
                 "filled)", np.triu(ref)),
                ("only the lower triangle of refprune's matrix (the upper half zero: one half of a symmetric matrix "
                 "filled)", np.tril(ref)),
                ("the upper triangle of refprune's matrix mirrored with its diagonal counted twice (U + U^T)",
                 np.triu(ref) + np.triu(ref).T),
                ("only the diagonal blocks of each layer of refprune's matrix (the blocks between layers dropped)",
                 np.where(block_mask(model, "layer"), ref, 0.0)),
                ("only the diagonal blocks of each parameter array of refprune's matrix (weight and bias apart, "
                 "their coupling dropped)", np.where(block_mask(model, "array"), ref, 0.0))]
    return out


# ---------------------------------------------------------------------------------------
# the quantities of refprune.conformance.QUANTITIES


@register("hessian")
def _hessian_neighbours(case, options):
    P = _parts(case)
    G, Rs = _ggn(case), _c.residual(*case.args())
    lam = _lambda_forms(case, P)[0]
    return [("refprune's GGN (the Hessian without its residual: the network's second derivatives are missing)", G),
            ("refprune's residual H - GGN alone (the Hessian without its Gauss-Newton part)", Rs),
            ("the Hessian with the residual's sign flipped (GGN - residual)", G - Rs),
            ("the Hessian whose Gauss-Newton part has " + lam[0][len("the GGN with "):], lam[1] + Rs),
            ("the empirical Fisher plus the residual (the GGN part taken from gradients at the observed targets)",
             P.empirical_fisher() + Rs)]


def _fisher_type(case, P, which):
    """Neighbours of the GGN / Fisher / MC Fisher / empirical Fisher: the other members of
    the family, the Lambda forms, the Hessian."""
    named = {"ggn": ("refprune's GGN (= the true Fisher)", lambda: _ggn(case)),
             "empirical_fisher": ("refprune's empirical Fisher (gradients at the observed targets, not an "
                                  "expectation over the model's distribution)", P.empirical_fisher),
             "mc_fisher": ("refprune's MC Fisher over case.targets (sampled targets, not the exact expectation)",
                           lambda: _mc_fisher(case))}
    out = [(d, fn()) for k, (d, fn) in named.items() if k != which]
    if which != "empirical_fisher":
        out += _lambda_forms(case, P)
    out.append(("refprune's Hessian (the residual included where only the Gauss-Newton part belongs)",
                _hessian(case)))
    if which == "empirical_fisher":
        g = P.grad()
        out += [("the squared mini-batch gradient grad grad^T (the outer product of the averaged gradient, not the "
                 "average of the per-sample outer products)", np.outer(g, g)),
                ("the squared mini-batch gradient divided by R, grad grad^T / R (the outer product of the summed "
                 "gradient scaled once by R)", np.outer(g, g) / P.R),
                ("the centred covariance of the per-sample gradients divided by N - 1 (np.cov), where refprune "
                 "takes the uncentred mean of the outer products", P.centred(1)),
                ("the centred covariance of the per-sample gradients divided by N (np.cov(bias=True)), where "
                 "refprune takes the uncentred mean of the outer products", P.centred(0))]
    return out


register("ggn")(lambda case, options: _fisher_type(case, _parts(case), "ggn"))
register("fisher")(lambda case, options: _fisher_type(case, _parts(case), "ggn"))
register("mc_fisher")(lambda case, options: _fisher_type(case, _parts(case), "mc_fisher"))
register("empirical_fisher")(lambda case, options: _fisher_type(case, _parts(case), "empirical_fisher"))


@register("residual")
def _residual_neighbours(case, options):
    return [("refprune's Hessian (the residual with the GGN not subtracted)", _hessian(case)),
            ("refprune's GGN (the Gauss-Newton part where the residual H - GGN belongs)", _ggn(case))]


@register("hvp")
def _hvp_neighbours(case, options):
    P = _parts(case)
    v = case.v
    G, Rs = _ggn(case), _c.residual(*case.args())
    lam = _lambda_forms(case, P)[0]
    return [("refprune's GGN-vector product G v (the Hessian without its residual)", G @ v),
            ("refprune's residual-vector product (H - GGN) v alone", Rs @ v),
            ("H v with " + lam[0][len("the GGN with "):], (lam[1] + Rs) @ v)]


def _diagonal_family(case, P, which):
    d = {"hessian": ("refprune's Hessian diagonal (the residual included)", lambda: _diag.hessian_diagonal(
             *case.args())),
         "ggn": ("refprune's GGN diagonal (the Hessian diagonal without its residual)",
                 lambda: _diag.ggn_diagonal(*case.args())),
         "empirical_fisher": ("refprune's empirical Fisher diagonal (squared gradients at the observed targets)",
                              lambda: np.einsum("ni,ni->i", P.G, P.G) * P.R),
         "mc_fisher": ("refprune's MC Fisher diagonal over case.targets",
                       lambda: _diag.fisher_diagonal(*case.args(), curvature="mc_fisher", targets=case.targets))}
    out = [(desc, fn()) for k, (desc, fn) in d.items() if k != which]
    if which in ("hessian", "ggn"):
        desc, M = _lambda_forms(case, P)[0]
        out.append((desc.replace("the GGN", "the GGN diagonal", 1), np.diag(M)))
    if which == "empirical_fisher":
        g = P.grad()
        n = len(P.G)
        out += [("the squared mini-batch gradient grad**2 (the square of the averaged gradient, not the average "
                 "of the per-sample squares)", g**2),
                ("the squared mini-batch gradient divided by R, grad**2 / R", g**2 / P.R),
                ("the per-sample gradients' variance divided by N - 1 (np.var(ddof=1): centred), where refprune "
                 "takes the uncentred mean of the squares", P.R * n / (n - 1) * ((P.G - P.G.mean(0)) ** 2).sum(0))]
    return out


register("hessian_diagonal")(lambda case, options: _diagonal_family(case, _parts(case), "hessian"))
register("ggn_diagonal")(lambda case, options: _diagonal_family(case, _parts(case), "ggn"))
register("empirical_fisher_diagonal")(lambda case, options: _diagonal_family(case, _parts(case),
                                                                              "empirical_fisher"))
register("mc_fisher_diagonal")(lambda case, options: _diagonal_family(case, _parts(case), "mc_fisher"))


@register("per_sample_grads")
def _per_sample_neighbours(case, options):
    P = _parts(case)
    return [("the unscaled per-sample gradients dl_n/dtheta (refprune's rows are R dl_n/dtheta, so that they sum "
             "to grad)", P.G)]


@register("obd_saliencies")
def _obd_neighbours(case, options):
    P = _parts(case)
    th2 = case.theta**2
    h = _diag.hessian_diagonal(*case.args())
    return [("theta^2 H_qq without the 1/2 (OBD's saliency is theta_q^2 H_qq / 2; a missing 1/2)", th2 * h),
            ("theta^2 GGN_qq / 2 (the GGN diagonal where OBD's exact Hessian diagonal belongs)",
             th2 * _diag.ggn_diagonal(*case.args()) / 2),
            ("theta^2 F_qq / 2 with the empirical Fisher's diagonal where the Hessian's belongs",
             th2 * P.R * np.einsum("ni,ni->i", P.G, P.G) / 2)]


@register("obs_saliencies")
def _obs_neighbours(case, options):
    G = _ggn(case)
    n = len(G)
    H = G + case.obs_damping * np.eye(n)
    d = np.diag(np.linalg.inv(H))
    th2 = case.theta**2
    return [("theta^2 / [H^-1]_qq without the 1/2 (OBS's saliency is theta_q^2 / (2 [H^-1]_qq); a missing 1/2)",
             th2 / d),
            ("theta^2 H_qq / 2 (the diagonal of H where OBS takes the inverse of the diagonal of H^-1: OBD's "
             "saliency)", th2 * np.diag(H) / 2)]


@register("obs_update")
def _obs_update_neighbours(case, options):
    G = _ggn(case)
    n, q = len(G), case.obs_index
    out = []
    Hinv = np.linalg.inv(G + case.obs_damping * np.eye(n))
    out.append(("-theta_q H^-1 e_q without the division by [H^-1]_qq", -case.theta[q] * Hinv[:, q]))
    return out


# ---------------------------------------------------------------------------------------
# K-FAC, its factors and EKFAC


def _kfac_options(options):
    opts = dict(curvature="ggn", approx="expand", bias="fold")
    opts.update(options or {})
    return opts


def _kfac_kw(case, opts):
    kw = {k: opts[k] for k in ("curvature", "approx", "bias")}
    if kw["curvature"] == "mc_fisher":
        kw["targets"] = case.targets
    return kw


def _has_conv(case):
    """Whether "expand" and "reduce" can differ: only a convolution has locations T > 1."""
    return any(type(layer).__name__ == "Conv2d" for layer in case.model)


def kfac_variants(case, options):
    """``[(description, changed options, kfac operator)]``: K-FAC with one option changed
    (the other approx, the other bias treatment, the other curvatures)."""
    opts = _kfac_options(options)
    out = []
    for approx in KFAC_APPROX:
        if approx != opts["approx"] and _has_conv(case):
            o = dict(opts, approx=approx)
            out.append((f"refprune's K-FAC with approx={approx!r} where {opts['approx']!r} was asked for "
                        f"(KFC '{approx}': " + ("features averaged and gradients summed over the T locations)"
                                                if approx == "reduce" else "every location a sample of its own)"),
                        o, kfac(*case.args(), **_kfac_kw(case, o))))
    other_bias = "separate" if opts["bias"] == "fold" else "fold"
    if any(isinstance(layer, AffineLayer) and layer.bias for layer in case.model):
        o = dict(opts, bias=other_bias)
        why = ("the bias kept apart from the weights: a bias block S kron [1], no weight-bias coupling"
               if other_bias == "separate" else "the bias folded into A as a constant input 1")
        out.append((f"refprune's K-FAC with bias={other_bias!r} where {opts['bias']!r} was asked for ({why})", o,
                    kfac(*case.args(), **_kfac_kw(case, o))))
    names = {"ggn": "the GGN (= the Fisher)", "empirical_fisher": "the empirical Fisher",
             "mc_fisher": "the MC Fisher over case.targets"}
    cur = "ggn" if opts["curvature"] == "fisher" else opts["curvature"]
    for c, words in names.items():
        if c != cur:
            o = dict(opts, curvature=c)
            out.append((f"refprune's K-FAC of {words} (curvature={c!r}) where curvature={opts['curvature']!r} was "
                        "asked for", o, kfac(*case.args(), **_kfac_kw(case, o))))
    return out


def _assemble(blocks, n, block_fn):
    out = np.zeros((n, n))
    for b in blocks:
        lay = b.layout
        idx = lay.offset + np.arange(lay.size)
        out[np.ix_(idx, idx)] = block_fn(b)
    return out


@register("kfac")
def _kfac_neighbours(case, options):
    opts = _kfac_options(options)
    op = kfac(*case.args(), **_kfac_kw(case, opts))
    n = case.n_params
    out = [(d, k.to_dense()) for d, _, k in kfac_variants(case, opts)]
    out.append(("S and A swapped: A kron S per layer in place of S kron A (refprune's blocks are S kron A over the "
                "rows of [W | b], the output factor first)",
                _assemble(op.blocks, n, lambda b: b.layout.to_flat_order(np.kron(b.A, b.S)))))
    out.append(("each layer's S kron A left in the row-major order of [W | b] (every output unit's bias right after "
                "its weights), not re-indexed to the flat order of theta (all of a layer's weights, then its biases; "
                "docs/conventions.md §1 and §4): np.kron(S, A) written into the block as it is",
                _assemble(op.blocks, n, lambda b: np.kron(b.S, b.A))))
    out.append(("the exact curvature's diagonal blocks per layer (no Kronecker factorisation)",
                np.where(block_mask(case.model, "array" if opts["bias"] == "separate" else "layer"),
                         _exact_of(case, opts), 0.0)))
    return [(d, M) for d, M in out if np.all(np.isfinite(M))]


def _exact_of(case, opts):
    cur = opts["curvature"]
    if cur in ("ggn", "fisher"):
        return _ggn(case)
    if cur == "mc_fisher":
        return _mc_fisher(case)
    return _parts(case).empirical_fisher()


@register("ekfac")
def _ekfac_neighbours(case, options):
    opts = _kfac_options(options)
    op = ekfac(*case.args(), **_kfac_kw(case, opts))
    n = case.n_params
    kop = kfac(*case.args(), **_kfac_kw(case, opts))
    out = [("refprune's K-FAC with the same options (the eigenvalues never re-estimated)", kop.to_dense())]
    out += [(d.replace("K-FAC", "EKFAC", 1), ekfac(*case.args(), **_kfac_kw(case, o)).to_dense())
            for d, o, _ in kfac_variants(case, opts)]
    P = _parts(case)
    g = P.grad()
    for words, scale in (("the squared mini-batch gradient projected onto the eigenbasis, (U^T grad)^2,", 1.0),
                         ("the squared mini-batch gradient projected onto the eigenbasis, divided by R,", 1 / P.R)):
        def block(b, scale=scale):
            lay = b.layout
            Gm = lay.to_matrix(g[lay.offset : lay.offset + lay.size, None])[0]
            kappa = scale * (b.US.T @ Gm @ b.UA) ** 2
            return EKFACBlock(b.kron, kappa).dense()

        out.append((f"EKFAC with scales from {words} where refprune takes the mean of the squared per-sample "
                    "projections (George et al. 2018, eq. 10)", _assemble(op.blocks, n, block)))
    return out


def factor_statistics(case, options):
    """``([(layer, features a (N, p, T), output columns g (N, K, c, T))], inp)`` per
    affine layer, the bias row folded into ``a``, for the curvature of ``options``: the
    raw material of K-FAC's factors (docs §8)."""
    opts = _kfac_options(options)
    inp = validate(*case.args())
    kw = {"targets": case.targets} if opts["curvature"] == "mc_fisher" else {}
    factor = OutputFactor(inp, opts["curvature"], **kw, where="neighbours")
    found = {}

    def visit(j, layer, U, g):
        a = with_bias_row(layer, U)
        prev = found.get(j)
        found[j] = (layer, a, g) if prev is None else (layer, np.concatenate([prev[1], a]),
                                                       np.concatenate([prev[2], g]))

    layer_statistics(inp, factor, visit)
    return [found[j] for j in sorted(found)], inp


def centred_factor_pairs(case, options):
    """K-FAC's ``[(S, A)]`` per block with both factors replaced by the centred
    covariance of their samples divided by ``m - 1`` (``np.cov``; ``m`` the number of
    samples of the factor: ``N T`` locations for "expand", ``N`` for "reduce") in place
    of refprune's uncentred second moments; ``S`` keeps refprune's normalisation
    ``R m`` (docs §8).  Each factor is compared on its own."""
    opts = _kfac_options(options)
    stats, inp = factor_statistics(case, opts)
    out = []
    for layer, a, g in stats:
        n, p, T = a.shape
        k, c = g.shape[1:3]
        if opts["approx"] == "expand":
            am = a.transpose(0, 2, 1).reshape(n * T, p)
            gm = g.transpose(0, 1, 3, 2).reshape(n * k * T, c)
        else:
            am = a.mean(axis=2)
            gm = g.sum(axis=3).reshape(n * k, c)
        A = np.atleast_2d(np.cov(am, rowvar=False)) if len(am) > 1 else np.zeros((p, p))
        S = inp.scale * len(gm) * np.atleast_2d(np.cov(gm, rowvar=False)) if len(gm) > 1 else np.zeros((c, c))
        if opts["bias"] == "separate" and layer.bias:
            out += [(S, A[:-1, :-1]), (S, A[-1:, -1:])]
        else:
            out.append((S, A))
    return out
