"""K-FAC (Martens & Grosse 2015) and KFC for convolutions (Grosse & Martens 2016).

Each affine layer's block of a curvature matrix is approximated as ``S kron A`` over the
rows of ``[W | b]`` (``docs/conventions.md`` §4; docs §8): ``A`` from the layer's input features
with the bias folded in as a constant 1, ``S`` ("G" in the papers) from the output
gradients.  For ``Gamma_n[:, k]`` the columns of the output curvature of the Fisher type
(:mod:`refprune.curvature.output_factors`) back-propagated to the layer output, ``g_nkt``:

* expand:  ``A = 1/(N T) sum_{n,t} a_nt a_nt^T``,  ``S = R sum_{n,k,t} g_nkt g_nkt^T``;
* reduce:  ``A = 1/N sum_n abar_n abar_n^T``, ``abar_n = 1/T sum_t a_nt``,
  ``S = R sum_{n,k} (sum_t g_nkt)(sum_t g_nkt)^T``  (Eschenhagen et al. 2023, §3).

For ``T = 1`` (Linear) both are K-FAC; its independence assumption and where it is
exact: ``docs/pruning_explained.md`` §5.  Operations use ``(S kron A) vec(M) = vec(S M A)``
for row-major ``vec`` and the eigendecompositions of the factors.  Damping is named
(``docs/conventions.md`` §5): ``"exact"`` is ``S kron A + lam I``, ``"factored"`` is
``(S + sqrt(lam) I) kron (A + sqrt(lam) I)`` and ``"pi"`` is
``(S + sqrt(lam)/pi I) kron (A + pi sqrt(lam) I)`` with
``pi = sqrt((tr A / dim A) / (tr S / dim S))`` (Martens & Grosse 2015, §6.3).

``bias="separate"`` keeps the bias out of ``A``, as ASDL does: the layer's block becomes
the two blocks ``S kron A_W`` (weights; ``A_W`` is ``A`` without the constant row and
column) and ``S kron [1]`` (bias), with no weight-bias coupling.
"""

import sys

import numpy as np

from .. import derivatives as _d
from ..checks import check_number, validate
from ..memory import CurvatureTooLargeError, check_fits, describe, nbytes
from ..nn import AffineLayer
from ..nn.base import merge_tangent_axis
from ..vocabulary import FISHER_LIKE, check_curvature, renamed_options
from .operators import CurvatureOperator, check_dense_fits
from .output_factors import OutputFactor, check_seed, refuse_monte_carlo_options

KFAC_APPROX = ("expand", "reduce")
DAMPING_FORMS = ("exact", "factored", "pi")
BIAS_TREATMENTS = ("fold", "separate")


def _check_damping(damping, form, where=None):
    prefix = f"{where}: " if where else ""
    if form not in DAMPING_FORMS:
        raise ValueError(f"{prefix}damping form must be one of {DAMPING_FORMS}, got {form!r}")
    return check_number(damping, f"{prefix}damping")


class LayerLayout:
    """Map between a layer's flat parameters ``[W.ravel(), b]`` and the matrix
    ``M = [W_r | b]`` of shape ``(c, p)`` (``p = r + 1`` with a bias, else ``r``).

    ``part="weight"`` or ``"bias"`` lays out only ``W_r`` (``p = r``) or only ``b``
    (``p = 1``), for blocks that keep the bias apart.
    """

    def __init__(self, layer, offset, part="all"):
        self.layer, self.offset, self.part = layer, int(offset), part
        self.layer_offset = int(offset)  # where the layer's parameters start
        self.c = layer.out_units
        self.r = layer.n_weight // self.c
        if part == "all":
            self.bias = layer.bias
            self.p = self.r + (1 if self.bias else 0)
        else:
            self.bias = False
            self.p = self.r if part == "weight" else 1
            self.offset += layer.n_weight if part == "bias" else 0
        self.size = self.c * self.p
        # flat index i -> row-major index in vec(M)
        idx = (np.arange(self.c)[:, None] * self.p + np.arange(self.r if part == "all" else self.p)[None, :]).ravel()
        if self.bias:
            idx = np.concatenate([idx, np.arange(self.c) * self.p + self.r])
        self.perm = idx

    def to_matrix(self, V):
        """``(n_l, k) -> (k, c, p)``."""
        out = np.empty((V.shape[1], self.size))
        out[:, self.perm] = V.T
        return out.reshape(V.shape[1], self.c, self.p)

    def from_matrix(self, M):
        """``(k, c, p) -> (n_l, k)``."""
        return M.reshape(M.shape[0], self.size)[:, self.perm].T

    def to_flat_order(self, K):
        """A ``(c p, c p)`` matrix over ``vec(M)`` re-indexed to flat parameter order."""
        return K[np.ix_(self.perm, self.perm)]

    def from_flat_order(self, B):
        """The inverse of :meth:`to_flat_order`: a block in flat parameter order
        re-indexed to ``vec(M)``."""
        K = np.empty_like(B)
        K[np.ix_(self.perm, self.perm)] = B
        return K


class EigenBlock:
    """What a layer's block derives from its ``eigenvalues(damping, form)`` and
    ``matmat(V, damping, form)``: the dense matrix, the trace and the log-determinant
    (shared by K-FAC's and EKFAC's blocks)."""

    #: appended to the log-determinant's refusal
    logdet_hint = ""

    def dense(self, damping=0.0, form="exact"):
        """The (damped) block in flat parameter order, ``(n_l, n_l)``."""
        size = self.layout.size
        check_fits(2 * nbytes((size, size)), f"{type(self).__name__}.dense",
                   f"the {size} x {size} float64 block (and the identity it is applied to)",
                   error=CurvatureTooLargeError)
        return self.matmat(np.eye(self.layout.size), damping, form)

    def trace(self, damping=0.0, form="exact"):
        """Trace of the damped block: the sum of its eigenvalues."""
        return float(np.sum(self.eigenvalues(damping, form)))

    def logdet(self, damping=0.0, form="exact"):
        """Log-determinant of the damped block: the sum of the logarithms of its
        eigenvalues; raises if one is not positive."""
        ev = self.eigenvalues(damping, form)
        if np.min(ev) <= 0:
            raise np.linalg.LinAlgError(
                f"log-determinant of a block with eigenvalue {np.min(ev):.3e} <= 0{self.logdet_hint}")
        return float(np.sum(np.log(ev)))


class KroneckerBlock(EigenBlock):
    """``S kron A`` for one layer, with its damped forms, inverse, trace and logdet."""

    logdet_hint = "; use damping > 0"

    def __init__(self, S, A, layout):
        self.S, self.A, self.layout = S, A, layout
        self._eig = None

    def eigh(self):
        """``(s, U_S, a, U_A)`` with ``S = U_S diag(s) U_S^T`` and likewise ``A``."""
        if self._eig is None:
            s, US = np.linalg.eigh(self.S)
            a, UA = np.linalg.eigh(self.A)
            self._eig = (s, US, a, UA)
        return self._eig

    def pi(self):
        """Martens & Grosse (2015, §6.3)'s ``pi = sqrt((tr A / dim A) / (tr S / dim S))``,
        which balances the damping between the factors by their average eigenvalues."""
        ta, ts = np.trace(self.A) / len(self.A), np.trace(self.S) / len(self.S)
        if not (ta > 0 and ts > 0):
            raise np.linalg.LinAlgError(
                f"pi-damping of layer {self.layout.layer!r} needs positive factor traces, got "
                f"tr(S)/dim = {ts:.3e}, tr(A)/dim = {ta:.3e}; use damping form 'factored' or 'exact'"
            )
        return float(np.sqrt(ta / ts))

    def factor_shifts(self, damping, form):
        """``(shift of S, shift of A)`` of a factored damping form."""
        r = np.sqrt(damping)
        if form == "pi" and r:
            pi = self.pi()
            return r / pi, r * pi
        return r, r

    def damped_factors(self, damping=0.0, form="factored"):
        """``(S + d_S I, A + d_A I)`` for the factored forms ``"factored"`` and ``"pi"``."""
        lam = _check_damping(damping, form)
        if form == "exact":
            raise ValueError("damped_factors: damping form 'exact' (S kron A + lam I) is not a Kronecker product; "
                             "use 'factored' or 'pi'")
        dS, dA = self.factor_shifts(lam, form)
        return self.S + dS * np.eye(len(self.S)), self.A + dA * np.eye(len(self.A))

    def eigenvalues(self, damping=0.0, form="exact"):
        """Eigenvalues ``(c, p)`` of the (damped) block: ``sigma_i alpha_j + lam``
        (``"exact"``) or ``(sigma_i + d_S)(alpha_j + d_A)`` (factored forms)."""
        lam = _check_damping(damping, form)
        s, _, a, _ = self.eigh()
        if form == "exact":
            return np.outer(s, a) + lam
        dS, dA = self.factor_shifts(lam, form)
        return np.outer(s + dS, a + dA)

    def _apply_in_eigenbasis(self, M, scale):
        _, US, _, UA = self.eigh()
        return US @ ((US.T @ M @ UA) * scale) @ UA.T

    def matmat(self, V, damping=0.0, form="exact"):
        """``(S kron A) V`` (damped as ``form`` says) for ``V (n_l, k)`` in flat
        parameter order, through ``(S kron A) vec(M) = vec(S M A)``."""
        lam = _check_damping(damping, form)
        M = self.layout.to_matrix(V)
        if form != "exact" and lam:
            S, A = self.damped_factors(lam, form)
            return self.layout.from_matrix(S @ M @ A)
        out = self.S @ M @ self.A
        if lam:
            out = out + lam * M
        return self.layout.from_matrix(out)

    def inverse_matmat(self, V, damping=0.0, form="exact"):
        """The inverse of the damped block applied to ``V``, in the factors'
        eigenbases; raises ``LinAlgError`` if the block is singular or indefinite."""
        ev = self.eigenvalues(damping, form)
        tiny = 1e3 * sys.float_info.epsilon * max(1.0, np.abs(ev).max())
        if np.min(ev) <= tiny:
            raise np.linalg.LinAlgError(
                f"K-FAC block of layer {self.layout.layer!r} is singular or indefinite with damping "
                f"{damping} ({form}): smallest eigenvalue {np.min(ev):.3e}; use a larger damping"
            )
        return self.layout.from_matrix(self._apply_in_eigenbasis(self.layout.to_matrix(V), 1.0 / ev))


class KroneckerCurvature(CurvatureOperator):
    """Block-diagonal curvature of per-layer blocks (K-FAC or EKFAC) over ``theta``.

    ``damped(lam, form)`` and ``inverse(lam, form)`` return operators of the same kind;
    ``trace`` and ``logdet`` are sums over blocks.
    """

    def __init__(self, blocks, n, damping=0.0, form="exact", inverse=False):
        self.blocks, self.n = list(blocks), int(n)
        self.damping, self.form, self.inverted = damping, form, inverse

    def _matmat(self, V):
        out = np.zeros_like(V)
        for b in self.blocks:
            o, e = b.layout.offset, b.layout.offset + b.layout.size
            fn = b.inverse_matmat if self.inverted else b.matmat
            out[o:e] = fn(V[o:e], self.damping, self.form)
        return out

    def damped(self, damping, form="exact"):
        """The operator ``S kron A + lam I`` (``"exact"``),
        ``(S + sqrt(lam) I) kron (A + sqrt(lam) I)`` (``"factored"``) or
        ``(S + sqrt(lam)/pi I) kron (A + pi sqrt(lam) I)`` (``"pi"``), per block."""
        _check_damping(damping, form, f"{type(self).__name__}.damped")
        return type(self)(self.blocks, self.n, damping, form)

    def inverse(self, damping=0.0, form="exact"):
        """The inverse of the damped operator, applied through the factors'
        eigendecompositions (raises ``LinAlgError`` if a block is singular)."""
        _check_damping(damping, form, f"{type(self).__name__}.inverse")
        return type(self)(self.blocks, self.n, damping, form, inverse=True)

    def trace(self):
        """Trace: the sum over blocks (of the inverse's eigenvalues for an inverse)."""
        return float(np.sum(self.eigenvalues()))

    def logdet(self):
        """Log-determinant: the sum over blocks (negated for an inverse)."""
        ld = sum(b.logdet(self.damping, self.form) for b in self.blocks)
        return -ld if self.inverted else ld

    def eigenvalues(self):
        """All eigenvalues, block by block (each block's ``(c, p)`` grid raveled)."""
        ev = [b.eigenvalues(self.damping, self.form).ravel() for b in self.blocks]
        return 1.0 / np.concatenate(ev) if self.inverted else np.concatenate(ev)

    def to_dense(self):
        # besides the result: one block's identity and its product at a time
        check_dense_fits(self, 2 * max((nbytes((b.layout.size,) * 2) for b in self.blocks), default=0))
        out = np.zeros((self.n, self.n))
        for b in self.blocks:
            o, e = b.layout.offset, b.layout.offset + b.layout.size
            fn = b.inverse_matmat if self.inverted else b.matmat
            out[o:e, o:e] = fn(np.eye(e - o), self.damping, self.form)
        return out


class KFAC(KroneckerCurvature):
    """K-FAC / KFC: per-layer :class:`KroneckerBlock` s; ``factors()`` gives ``[(S, A)]``
    per block (two per layer with a bias when ``bias="separate"``: weights, then bias)."""

    def factors(self):
        """``[(S, A)]`` per block, output factor first (docs/conventions.md §4)."""
        return [(b.S, b.A) for b in self.blocks]


def layer_statistics(inp, factor, visit, gradient=False):
    """Back-propagate the output factor's columns chunk by chunk; call
    ``visit(j, layer, U, g)`` for every affine layer with its features ``U (n, r, T)``
    and output-gradient columns ``g (n, K, c, T)``.

    ``gradient=True`` back-propagates the loss gradient as one more column in the same
    passes and returns the batch gradient ``(n,)`` (what an optimizer step needs besides
    the statistics, without a second forward and backward pass)."""
    model = inp.model
    nc = _d.chunk_length(factor.per_sample + (1 if gradient else 0), _d.work_width(inp))
    offsets = model.param_offsets()
    grad = np.zeros(model.n_params) if gradient else None
    for s0 in range(0, inp.n_samples, nc):
        s1 = min(inp.n_samples, s0 + nc)
        f, caches = _d.forward(inp, inp.X[s0:s1])
        columns = factor.columns(f, slice(s0, s1))
        if gradient:
            columns = np.concatenate([columns, inp.loss.grad(f, inp.y[s0:s1])[:, None]], axis=1)
        stacks = _d.backward(inp, caches, columns)
        for j, layer in enumerate(model):
            if isinstance(layer, AffineLayer):
                stack = stacks[j]
                if gradient:
                    grad[offsets[j] : offsets[j + 1]] += layer.param_grad(caches[j], stack[:, -1:])[0]
                    stack = stack[:, :-1]
                U = caches[j][0]
                n, k = stack.shape[:2]
                g = layer.from_output(merge_tangent_axis(stack)).reshape(n, k, layer.out_units, U.shape[2])
                visit(j, layer, U, g)
    return None if grad is None else inp.scale * grad


def with_bias_row(layer, U):
    """Features with the constant 1 for the bias: ``(n, r, T) -> (n, p, T)``."""
    if not layer.bias:
        return U
    return np.concatenate([U, np.ones((U.shape[0], 1, U.shape[2]))], axis=1)


@renamed_options(FISHER_LIKE, fisher="curvature")
def kfac(model, params, X, y, loss, curvature="ggn", approx="expand", samples=1, seed=0, targets=None,
         bias="fold"):
    """K-FAC (Linear) and KFC (Conv2d) factors of every affine layer.

    Parameters
    ----------
    curvature : {"ggn", "fisher", "mc_fisher", "empirical_fisher"}
        The matrix approximated, i.e. which output-gradient columns build ``S``: a
        square root of the loss Hessian (``"ggn"``; ``"fisher"`` is the same matrix,
        "type-2" in curvlinops), ``samples`` sampled targets drawn with ``seed`` or the
        caller's ``targets`` (``"mc_fisher"``), or the observed targets
        (``"empirical_fisher"``).
    approx : {"expand", "reduce"}
        The convolution variant (Eschenhagen et al. 2023); the same for Linear.
    seed : int >= 0 or list of them
        The draws' ``numpy.random.default_rng(seed)`` (``None`` and a ``Generator`` are
        refused: the same seed must give the same draws in every function).
    targets : array (n_mc, N) or (n_mc, N, C), optional
        Monte Carlo targets to use instead of drawing them (``"mc_fisher"`` only).
    bias : {"fold", "separate"}
        Fold the bias into ``A`` as a constant input 1 (one block per layer) or keep
        it apart (a weight block and a bias block ``S kron [1]``, as ASDL does).

    Returns
    -------
    KFAC
        A :class:`~refprune.curvature.operators.CurvatureOperator`; ``.factors()`` lists
        ``(S, A)`` per block (output factor first), ``.blocks`` the
        :class:`KroneckerBlock` s with their damped/inverse/trace/logdet operations.
    """
    check_kfac_options(curvature, approx, bias, "kfac")
    check_seed(seed, "kfac")
    refuse_monte_carlo_options(curvature, samples, seed, targets, "kfac")
    inp = validate(model, params, X, y, loss)
    check_factors_fit(model, "kfac")
    factor = OutputFactor(inp, curvature, samples, seed, targets, where="kfac")
    return KFAC(kfac_blocks(inp, factor, approx, bias), model.n_params)


def factor_shapes(layer):
    """``(c, p)``: the sizes of a layer's factors ``S (c, c)`` and ``A (p, p)`` (bias folded in)."""
    c = layer.out_units
    return c, layer.n_weight // c + (1 if layer.bias else 0)


def check_factors_fit(model, where, copies=1, layers=None):
    """Refuse the factors ``S (c, c)`` and ``A (p, p)`` of every affine layer (or of
    ``layers``), ``copies`` times (EKFAC also keeps their eigenvectors), if they would
    not fit in memory: a layer of huge width has factors far larger than its weights."""
    layers = [layer for layer in model if isinstance(layer, AffineLayer)] if layers is None else layers
    if not layers:
        return
    sizes = [(layer, factor_shapes(layer)) for layer in layers]
    need = copies * sum(nbytes((c, c)) + nbytes((p, p)) for _, (c, p) in sizes)
    layer, (c, p) = max(sizes, key=lambda item: max(item[1]))
    check_fits(need, where, lambda: f"the Kronecker factors S and A of every layer (the largest, of {layer!r}: "
               f"S {describe((c, c))}, A {describe((p, p))} float64{', with eigenvectors' if copies > 1 else ''})",
               error=CurvatureTooLargeError)


def check_kfac_options(curvature, approx, bias, where):
    """Refuse a curvature, variant or bias treatment K-FAC does not have, naming
    the valid ones."""
    if curvature == "hessian":
        raise ValueError(f"{where}: curvature='hessian' has no Kronecker factorisation here (its residual term "
                         f"is not a sum of outer products); choose one of {FISHER_LIKE}")
    check_curvature(curvature, FISHER_LIKE, where)
    if approx not in KFAC_APPROX:
        raise ValueError(f"{where}: approx must be one of {KFAC_APPROX}, got {approx!r}")
    if bias not in BIAS_TREATMENTS:
        raise ValueError(f"{where}: bias must be one of {BIAS_TREATMENTS}, got {bias!r}")


def kfac_blocks(inp, factor, approx, bias):
    """The :class:`KroneckerBlock` of every affine layer (two per layer with a bias
    when ``bias="separate"``) from the output factor's columns (docs §8)."""
    stats = FactorStatistics(approx)
    layer_statistics(inp, factor, stats.visit)
    return stats.blocks(inp, bias)


class FactorStatistics:
    """The sums behind ``A`` and ``S`` of every affine layer, accumulated chunk by
    chunk as a :func:`layer_statistics` visitor; ``blocks`` normalises them (docs §8)."""

    def __init__(self, approx):
        self.approx, self.sums = approx, {}

    def visit(self, j, layer, U, g):
        """Add one chunk's features ``U (n, r, T)`` and output gradients ``g (n, K, c, T)``."""
        if j not in self.sums:  # the first chunk of this layer: its factors must fit
            check_factors_fit(None, "K-FAC statistics", layers=[layer])
        a = with_bias_row(layer, U)
        (n, p, T), (K, c) = a.shape, g.shape[1:3]
        if self.approx == "expand":  # every location a sample of its own
            am = a.transpose(0, 2, 1).reshape(n * T, p)
            gm = g.transpose(0, 1, 3, 2).reshape(n * K * T, c)
        else:  # features averaged and gradients summed over locations
            am = a.mean(axis=2)
            gm = g.sum(axis=3).reshape(n * K, c)
        # written as M^T M, which NumPy computes as a symmetric rank-k update (half the work)
        A, S = am.T @ am, gm.T @ gm
        if j in self.sums:
            self.sums[j][0] += S
            self.sums[j][1] += A
        else:
            self.sums[j] = [S, A, U.shape[2]]

    def blocks(self, inp, bias):
        """The normalised factors as :class:`KroneckerBlock` s, in layer order."""
        model = inp.model
        offsets = model.param_offsets()
        blocks = []
        for j in sorted(self.sums):
            S, A, T = self.sums[j]
            A = A / (inp.n_samples * (T if self.approx == "expand" else 1))
            S = S * inp.scale
            layer = model[j]
            if bias == "separate" and layer.bias:
                # A's constant corner is exactly 1 in both variants (mean of ones)
                r = len(A) - 1
                blocks.append(KroneckerBlock(S, A[:r, :r].copy(), LayerLayout(layer, offsets[j], "weight")))
                blocks.append(KroneckerBlock(S.copy(), np.ones((1, 1)), LayerLayout(layer, offsets[j], "bias")))
            else:
                blocks.append(KroneckerBlock(S, A, LayerLayout(layer, offsets[j])))
        return blocks
