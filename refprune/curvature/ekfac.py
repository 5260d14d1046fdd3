"""EKFAC: eigenvalue-corrected K-FAC (George et al. 2018, "Fast approximate natural
gradient descent in a Kronecker-factored eigenbasis", §3, eq. 10).

Keep K-FAC's eigenbasis ``U_SA = U_S kron U_A`` and replace its eigenvalues ``sigma_i alpha_j`` by the
second moments of the per-sample gradients projected onto that basis:

    kappa_ij = R sum_n sum_k [U_S^T G_nk U_A]_ij^2,   G_nk = sum_t g_nkt a_nt^T  (c x p),

with the same output columns ``k`` as the Fisher being approximated
(:mod:`refprune.curvature.output_factors`), so that ``R sum_{n,k} vec(G_nk) vec(G_nk)^T`` is that
Fisher's exact layer block ``F_l``.  Then ``kappa = diag(U_SA^T F_l U_SA)``:
the Frobenius-closest matrix to ``F_l`` among those diagonal in this basis, K-FAC being one
of them, so ``||F_l - EKFAC||_F <= ||F_l - KFAC||_F``.  Damping: ``kappa + lam`` (the only
form; EKFAC has no factors to damp separately).
"""

import sys

import numpy as np

from ..checks import check_number, validate
from ..vocabulary import FISHER_LIKE, renamed_options
from .kronecker import (EigenBlock, KroneckerCurvature, check_factors_fit, check_kfac_options, kfac_blocks,
                        layer_statistics, with_bias_row)
from .output_factors import OutputFactor, check_seed, refuse_monte_carlo_options


class EKFACBlock(EigenBlock):
    """``U_SA diag(kappa) U_SA^T`` with ``U_SA = U_S kron U_A`` from a :class:`KroneckerBlock`."""

    def __init__(self, kron_block, scales):
        self.kron, self.layout = kron_block, kron_block.layout
        _, self.US, _, self.UA = kron_block.eigh()
        self.scales = scales  # (c, p)

    def eigenvalues(self, damping=0.0, form="exact"):
        """Eigenvalues ``(c, p)`` in K-FAC's eigenbasis: the re-estimated ``kappa`` plus
        ``damping`` (only the form ``"exact"`` exists for EKFAC)."""
        if form != "exact":
            raise ValueError(f"EKFAC supports only damping form 'exact' (kappa + lam), got {form!r}")
        return self.scales + check_number(damping, "damping")

    def _apply(self, V, scale):
        M = self.layout.to_matrix(V)
        return self.layout.from_matrix(self.US @ ((self.US.T @ M @ self.UA) * scale) @ self.UA.T)

    def matmat(self, V, damping=0.0, form="exact"):
        """``(U_SA diag(kappa + lam) U_SA^T) V`` for ``V (n_l, k)`` in flat parameter order."""
        return self._apply(V, self.eigenvalues(damping, form))

    def inverse_matmat(self, V, damping=0.0, form="exact"):
        """``(U_SA diag(kappa + lam) U_SA^T)^-1 V``; raises ``LinAlgError`` if an eigenvalue is
        not positive."""
        ev = self.eigenvalues(damping, form)
        if np.min(ev) <= 1e3 * sys.float_info.epsilon * max(1.0, ev.max()):
            raise np.linalg.LinAlgError(
                f"EKFAC block of layer {self.layout.layer!r} is singular with damping {damping}: "
                f"smallest eigenvalue {np.min(ev):.3e}; use a larger damping"
            )
        return self._apply(V, 1.0 / ev)


class EKFAC(KroneckerCurvature):
    """EKFAC over ``theta``: per-layer :class:`EKFACBlock` s (damping form ``"exact"``)."""

    def __init__(self, blocks, n, damping=0.0, form="exact", inverse=False):
        if form != "exact":
            raise ValueError(f"EKFAC supports only damping form 'exact' (kappa + lam), got {form!r}")
        super().__init__(blocks, n, damping, form, inverse)

    @classmethod
    def from_kfac(cls, kfac_op):
        """EKFAC before re-estimation: K-FAC's own eigenvalues ``sigma_i alpha_j``."""
        blocks = [EKFACBlock(b, b.eigenvalues()) for b in kfac_op.blocks]
        return cls(blocks, kfac_op.n)


@renamed_options(FISHER_LIKE, fisher="curvature")
def ekfac(model, params, X, y, loss, curvature="ggn", approx="expand", samples=1, seed=0, targets=None, bias="fold"):
    """EKFAC of every affine layer: K-FAC's eigenbasis (``curvature``, ``approx``,
    ``targets`` and ``bias`` as in :func:`refprune.kfac`), eigenvalues re-estimated from
    per-sample gradients of the same curvature (the same Monte Carlo targets)."""
    check_kfac_options(curvature, approx, bias, "ekfac")
    check_seed(seed, "ekfac")
    refuse_monte_carlo_options(curvature, samples, seed, targets, "ekfac")
    inp = validate(model, params, X, y, loss)
    check_factors_fit(model, "ekfac", copies=2)
    factor = OutputFactor(inp, curvature, samples, seed, targets, where="ekfac")
    kron_blocks = kfac_blocks(inp, factor, approx, bias)
    moments = EigenbasisMoments(kron_blocks, model)
    layer_statistics(inp, factor, moments.visit)
    return EKFAC(moments.blocks(inp), model.n_params)


class EigenbasisMoments:
    """The sums ``sum_{n,k} [U_S^T G_nk U_A]^2`` of every block in the eigenbasis of
    the given :class:`KroneckerBlock` s, accumulated as a :func:`layer_statistics`
    visitor (eq. 10 of George et al. 2018 before the factor ``R``)."""

    def __init__(self, kron_blocks, model):
        self.kron_blocks = list(kron_blocks)
        self.offsets = model.param_offsets()
        self.by_offset = {}
        for b in self.kron_blocks:
            self.by_offset.setdefault(b.layout.layer_offset, []).append(b)
        self.sums = {id(b): np.zeros((b.layout.c, b.layout.p)) for b in self.kron_blocks}

    def visit(self, j, layer, U, g):
        """Add one chunk's per-sample gradients, projected onto each block's basis."""
        for b in self.by_offset[int(self.offsets[j])]:  # every affine layer has its blocks
            _, US, _, UA = b.eigh()
            part = b.layout.part
            if part == "all":
                a = with_bias_row(layer, U)  # (n, p, T)
            elif part == "weight":
                a = U
            else:
                a = np.ones((U.shape[0], 1, U.shape[2]))
            self.sums[id(b)] += _projected_second_moments(g, a, US, UA)

    def scales(self, inp):
        """The re-estimated eigenvalues ``kappa = R sums`` of every block, in block order."""
        return [inp.scale * self.sums[id(b)] for b in self.kron_blocks]

    def blocks(self, inp):
        """:class:`EKFACBlock` s with the re-estimated eigenvalues."""
        return [EKFACBlock(b, s) for b, s in zip(self.kron_blocks, self.scales(inp))]


def _projected_second_moments(g, a, US, UA):
    """``sum_{n,k} [U_S^T G_nk U_A]^2`` for per-sample gradients ``G_nk = sum_t g_nkt a_nt^T``."""
    n, k, c, t = g.shape
    if t == 1:
        # rank-one per-sample gradients g a^T project to (US^T g)(UA^T a)^T
        gs = (g[..., 0] @ US) ** 2  # (n, K, c)
        aa = (a[..., 0] @ UA) ** 2  # (n, p)
        return gs.sum(axis=1).T @ aa
    p = a.shape[1]
    G = np.matmul(g, a.transpose(0, 2, 1)[:, None])  # (n, K, c, p): per-sample gradients
    P = (G.reshape(n * k * c, p) @ UA).reshape(n * k, c, p)  # right factor, one product
    P = np.tensordot(US, P, axes=(0, 1))  # (c, n K, p): left factor
    return np.einsum("inj,inj->ij", P, P)  # squares summed without a temporary
