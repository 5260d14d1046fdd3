"""The harness's references for the pruning criteria built on K-FAC, EKFAC and the
layer-wise Hessian: structured unit saliencies and updates, EigenDamage's direction
importances, EKFAC's eigenvalues ``kappa``, and layer-wise OBS (OBC).

Every entry of :data:`PRUNING_QUANTITIES` is ``name: (reference(case, options),
conventions, defaults)``, the form of :data:`refprune.conformance.QUANTITIES`; the
conventions are those of ``docs/conventions.md`` §7 and §9 ("Quantities").  A reference
raises :class:`NotCompared` on a case where the quantity is not defined or not unique
(the harness skips that case and says why).
"""

import numpy as np

from ..curvature import exact as _c
from ..curvature.diagonal import curvature_diagonal
from ..curvature.ekfac import ekfac
from ..curvature.kronecker import kfac
from ..nn import AffineLayer
from ..pruning.layerwise import layer_hessian, obc_rows
from ..pruning.obs import inverse_spd
from ..pruning.surgery import structurally_prunable


class NotCompared(Exception):
    """A quantity that is not defined, or not unique, on a case; the message says why."""


def monte_carlo(case, options):
    """The Monte Carlo keyword of refprune's functions: ``case.targets`` for
    ``curvature="mc_fisher"`` (the adapter replays them), nothing otherwise."""
    return {"targets": case.targets} if options.get("curvature") == "mc_fisher" else {}


def kfac_of(case, options):
    """refprune's K-FAC of ``case`` with the K-FAC keys of ``options``."""
    kw = {k: options[k] for k in ("curvature", "approx", "bias") if k in options}
    return kfac(*case.args(), **kw, **monte_carlo(case, options))


def ekfac_of(case, options):
    """refprune's EKFAC of ``case`` with the K-FAC keys of ``options``."""
    kw = {k: options[k] for k in ("curvature", "approx", "bias") if k in options}
    return ekfac(*case.args(), **kw, **monte_carlo(case, options))


def exact_curvature(case, options):
    """The exact matrix a K-FAC or EKFAC with ``options["curvature"]`` approximates."""
    curv = options["curvature"]
    if curv == "ggn":
        return _c.ggn(*case.args())
    return _c.fisher(*case.args(), curvature=curv, **monte_carlo(case, options))


def clusters(w, tol):
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
        for cs in clusters(s, gap * max(float(np.abs(s).max()), 1e-300)):
            for ca in clusters(a, gap * max(float(np.abs(a).max()), 1e-300)):
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


def checked_ekfac(case, options):
    """refprune's EKFAC, or :class:`NotCompared` where it is not unique."""
    op = ekfac_of(case, options)
    if not ekfac_is_well_defined(op, exact_curvature(case, options)):
        raise NotCompared(EKFAC_NOT_UNIQUE)
    return op


# ---------------------------------------------------------------- EKFAC's kappa

def ekfac_scales(case, options):
    """``[kappa (c, p)]`` per block (George et al. 2018, eq. 10; docs/conventions.md §5)."""
    return [b.scales for b in checked_ekfac(case, options).blocks]


# ---------------------------------------------------------------- structured units

def _unit_blocks(case, options):
    """``[(layout, S_d, A_d, M)]`` for every structurally prunable layer (every affine
    layer but the last): factored damping ``S + sqrt(lam) I``, ``A + sqrt(lam) I`` of the
    folded K-FAC block and the rows ``M = [W | b]`` (docs/conventions.md §7)."""
    layers = structurally_prunable(case.model)
    if not layers:
        raise NotCompared("no unit can be removed: the network has one Linear/Conv2d layer (the last one keeps its "
                          "outputs)")
    op = kfac_of(case, dict(curvature=options["curvature"]))
    offsets = case.model.param_offsets()
    blocks = {b.layout.layer_offset: b for b in op.blocks}
    r = np.sqrt(options.get("damping", 0.0))
    theta = case.theta
    out = []
    for j in layers:
        b = blocks[int(offsets[j])]
        lay = b.layout
        M = lay.to_matrix(theta[lay.offset : lay.offset + lay.size][:, None])[0]
        out.append((lay, b.S + r * np.eye(lay.c), b.A + r * np.eye(lay.p), M))
    return out


def _row_quadratic(M, A, shortcut):
    # the published EigenDamage code's row sums sum_k W_ik^2 (A 1)_k in place of w_i^T A w_i
    return (M**2) @ A.sum(axis=1) if shortcut else np.einsum("ip,pq,iq->i", M, A, M)


def kron_obd_saliencies(case, options):
    """Kron-OBD ``S_ii w_i^T A w_i / 2`` per unit (Wang et al. 2019, §3.2)."""
    return np.concatenate([np.diag(S) * _row_quadratic(M, A, options["shortcut"]) / 2
                           for _, S, A, M in _unit_blocks(case, options)])


def kron_obs_saliencies(case, options):
    """Kron-OBS ``w_i^T A w_i / (2 [S^-1]_ii)`` per unit (Wang et al. 2019, eqs. 7-8)."""
    return np.concatenate([_row_quadratic(M, A, options["shortcut"]) / (2 * np.diag(np.linalg.inv(S)))
                           for _, S, A, M in _unit_blocks(case, options)])


def c_obs_saliencies(case, options):
    """C-OBS ``sum_j w_ij^2 / (2 [S^-1]_ii [A^-1]_jj)`` per unit."""
    return np.concatenate([np.sum(M**2 / (2 * np.outer(np.diag(np.linalg.inv(S)), np.diag(np.linalg.inv(A)))),
                                  axis=1) for _, S, A, M in _unit_blocks(case, options)])


def c_obd_saliencies(case, options):
    """C-OBD ``sum_j w_ij^2 F_(ij),(ij) / 2`` per unit, the exact diagonal of the Fisher."""
    d = curvature_diagonal(*case.args(), curvature=options["curvature"], **monte_carlo(case, options))
    return np.concatenate([np.sum(M**2 * lay.to_matrix(d[lay.offset : lay.offset + lay.size][:, None])[0], axis=1)
                           / 2 for lay, _, _, M in _unit_blocks(case, dict(options, damping=0.0))])


def unit_updates(case, options):
    """``(U, n)``: row ``u`` is the change of ``theta`` when unit ``u`` alone is removed.

    Exact group OBS under ``S kron A`` (Kron-OBS and refprune's C-OBS):
    ``dM = -S^-1 e_i w_i^T / [S^-1]_ii``.  ``shortcut``: the published C-OBS code's sum of
    the single-weight OBS updates of the row, ``-(S^-1 e_i / [S^-1]_ii)(A^-1 D^-1 w_i)^T``,
    ``D = diag(A^-1)`` (docs/conventions.md §8)."""
    rows = []
    for lay, S, A, M in _unit_blocks(case, options):
        Sinv, Ainv = np.linalg.inv(S), np.linalg.inv(A)
        V = (M / np.diag(Ainv)) @ Ainv if options["shortcut"] else M  # Ainv symmetric: rows A^-1 D^-1 w_i
        # unit i: the (c, p) matrix -(Sinv[:, i] / Sinv[i, i]) V[i]^T, for every i at once
        dM = -np.einsum("ci,ip->icp", Sinv / np.diag(Sinv), V)
        out = np.zeros((lay.c, case.n_params))
        out[:, lay.offset : lay.offset + lay.size] = lay.from_matrix(dM).T
        rows.append(out)
    return np.concatenate(rows)


# ---------------------------------------------------------------- EigenDamage

def _importances(blocks, scales, theta):
    out = []
    for b, kappa in zip(blocks, scales):
        _, US, _, UA = b.eigh()
        lay = b.layout
        M = lay.to_matrix(theta[lay.offset : lay.offset + lay.size][:, None])[0]
        imp = (US.T @ M @ UA) ** 2 * kappa / 2  # Wang et al. 2019, eq. 9
        out += [imp.sum(axis=1), imp.sum(axis=0)]
    return np.concatenate(out)


def _rotated(blocks, rng, gap=1e-6):
    """Copies of K-FAC's blocks whose eigenvectors are rotated within every repeated
    eigenvalue (an equally valid ``eigh``)."""
    from ..curvature.kronecker import KroneckerBlock

    out = []
    for b in blocks:
        s, US, a, UA = b.eigh()
        Us = []
        for w, U in ((s, US.copy()), (a, UA.copy())):
            for cl in clusters(w, gap * max(float(np.abs(w).max()), 1e-300)):
                if len(cl) > 1:
                    U[:, cl] = U[:, cl] @ np.linalg.qr(rng.standard_normal((len(cl), len(cl))))[0]
            Us.append(U)
        nb = KroneckerBlock(b.S, b.A, b.layout)
        nb._eig = (s, Us[0], a, Us[1])
        out.append(nb)
    return out


EIGENDAMAGE_NOT_UNIQUE = ("not uniquely defined: a K-FAC factor has a repeated eigenvalue, and the importances of "
                          "the directions in that eigenspace depend on the eigenvectors chosen")


def eigendamage_importances(case, options):
    """EigenDamage's importance of every eigen-direction: per affine layer, the S side
    (rows of ``W* = U_S^T [W | b] U_A``, ``c``) then the A side (columns, ``p``), each
    in ascending order of the factor's eigenvalue, largest included (Wang et al. 2019,
    eq. 9: ``W*_ij^2 kappa_ij / 2`` summed over the other side)."""
    op = kfac_of(case, dict(curvature=options["curvature"]))
    theta = case.theta
    if options["eigenvalues"] == "ekfac":
        # EKFAC's eigenvalues in eigh's basis; where that basis is not unique the comparison
        # with another valid basis below refuses the case
        E = ekfac_of(case, dict(curvature=options["curvature"], approx="expand", bias="fold"))
        scales = [b.scales for b in E.blocks]
    else:
        scales = [np.outer(b.eigh()[0], b.eigh()[2]) for b in op.blocks]
    imp = _importances(op.blocks, scales, theta)
    # a repeated eigenvalue leaves the directions free within its eigenspace: compare with
    # another valid choice, whose EKFAC eigenvalues are re-estimated in that basis
    alt_blocks = _rotated(op.blocks, np.random.default_rng(0))
    if options["eigenvalues"] == "ekfac":
        F = exact_curvature(case, options)
        alt_scales = []
        for b in alt_blocks:
            _, US, _, UA = b.eigh()
            lay = b.layout
            B = lay.from_matrix(np.einsum("ci,pj->ijcp", US, UA).reshape(-1, lay.c, lay.p))
            Fl = F[lay.offset : lay.offset + lay.size, lay.offset : lay.offset + lay.size]
            alt_scales.append(np.einsum("ak,ab,bk->k", B, Fl, B).reshape(lay.c, lay.p))
    else:
        alt_scales = scales
    alt = _importances(alt_blocks, alt_scales, theta)
    tol = 1e-9 * max(float(np.abs(imp).max()), 1e-300)
    if np.abs(alt - imp).max() <= tol:
        return imp
    # the split within a repeated eigenvalue is free, but its sum may not be: compare sums
    grouped = Grouped(imp, _direction_groups(op.blocks))
    if np.abs(grouped.project(alt) - grouped.project(imp)).max() > tol:
        raise NotCompared(EIGENDAMAGE_NOT_UNIQUE)
    return grouped


def _direction_groups(blocks, gap=1e-6):
    """Index groups of :func:`eigendamage_importances`' entries: the directions of one
    repeated eigenvalue of a factor together, every other direction alone."""
    groups, start = [], 0
    for b in blocks:
        s, _, a, _ = b.eigh()
        for w in (s, a):
            groups += [start + np.array(cl) for cl in clusters(w, gap * max(float(np.abs(w).max()), 1e-300))]
            start += len(w)
    return groups


class Grouped:
    """A reference compared as sums over groups of its entries (``values``, ``groups``
    index arrays covering every entry once): within a group the split depends on a
    choice (the eigenvectors of a repeated eigenvalue), the sum does not."""

    def __init__(self, values, groups):
        self.values, self.groups = values, groups

    def __array__(self, dtype=None, copy=None):
        # read as an array, it is its values (an adapter may return refprune's reference)
        return np.array(self.values, dtype=dtype, copy=True)

    def project(self, x):
        """The sums of ``x`` over the groups, in group order."""
        return np.array([x[g].sum() for g in self.groups])

    def describe(self):
        """What was compared, in words."""
        merged = sum(len(g) for g in self.groups if len(g) > 1)
        return (f"compared as sums over each repeated eigenvalue's directions ({merged} of {len(self.values)} "
                "entries merged): their split depends on the eigenvectors chosen")


# ---------------------------------------------------------------- layer-wise OBS (OBC)

def _layer_inputs(case):
    """``[(j, layer, features U (N, r, T))]`` of every affine layer at the case's parameters."""
    model, params, X = case.model, case.params, case.X
    grouped = model.group_params(params)
    out, x = [], X
    for j, (layer, p) in enumerate(zip(model, grouped)):
        if isinstance(layer, AffineLayer):
            out.append((j, layer, layer.features(x)))
        x, _ = layer.forward(p, x)
    return out


def layer_hessians(case, options):
    """``[2 X X^T / N (r, r)]`` per affine layer: the Hessian of the layer-wise objective
    ``||(W - W') X||^2 / N`` in each row of ``W`` (OBC, Frantar & Alistarh 2022, eqs. 1-2)."""
    return [layer_hessian(U, len(case.X)) for _, _, U in _layer_inputs(case)]


def _traces(case, options):
    theta = case.theta
    offsets = case.model.param_offsets()
    out = []
    for j, layer, U in _layer_inputs(case):
        c = layer.out_units
        r = layer.n_weight // c
        Hinv = inverse_spd(layer_hessian(U, len(case.X)), options["damping"], what=f"layer Hessian of layer {j}")
        W = theta[offsets[j] : offsets[j] + layer.n_weight].reshape(c, r)
        _, inc, traj = obc_rows(W, Hinv, np.ones((c, r), dtype=bool), r)
        out.append((inc, traj))
    return out


def layer_obs_losses(case, options):
    """``[(c, r)]`` per affine layer: row ``i``'s greedy OBS step increases
    ``w_q^2 / (2 [H_t^-1]_qq)`` of the layer objective, ``H = 2 X X^T / N + damping I``."""
    return [inc for inc, _ in _traces(case, options)]


def layer_obs_weights(case, options):
    """``[(c, r + 1, r)]`` per affine layer: every row of ``W`` before and after each
    of its greedy OBS steps (the removed weight exactly 0)."""
    return [traj for _, traj in _traces(case, options)]


_UNITS = ("(U,) one saliency per output unit of every layer but the last (unit i = row i of [W | b] and its bias), "
          "layer by layer; K-FAC block S kron A (bias folded, expand) with factored damping S + sqrt(lam) I, "
          "A + sqrt(lam) I")
_SHORTCUT = ("; shortcut=True: the published EigenDamage code's sum_k W_ik^2 (A 1)_k in place of w_i^T A w_i "
             "(docs/conventions.md §8)")
_KFAC_CURV = dict(curvature="ggn")

def _with_defaults(fn, defaults):
    """``fn(case, options)`` with every option at its default unless given (``options``
    may be left out)."""
    return lambda case, options=None: fn(case, dict(defaults, **(options or {})))


_TABLE = {
    "c_obd_saliencies": (c_obd_saliencies, f"C-OBD: sum_j w_ij^2 F_(ij),(ij) / 2, F the exact diagonal of the "
                         "curvature; (U,) per unit of every layer but the last, layer by layer "
                         "(docs/conventions.md §7)", dict(_KFAC_CURV)),
    "c_obs_saliencies": (c_obs_saliencies, f"C-OBS: sum_j w_ij^2 / (2 [S^-1]_ii [A^-1]_jj); {_UNITS} "
                         "(docs/conventions.md §7)", dict(_KFAC_CURV, damping=1e-3)),
    "kron_obd_saliencies": (kron_obd_saliencies, f"Kron-OBD: S_ii w_i^T A w_i / 2; {_UNITS}{_SHORTCUT}",
                            dict(_KFAC_CURV, damping=1e-3, shortcut=False)),
    "kron_obs_saliencies": (kron_obs_saliencies, f"Kron-OBS: w_i^T A w_i / (2 [S^-1]_ii); {_UNITS}{_SHORTCUT}",
                            dict(_KFAC_CURV, damping=1e-3, shortcut=False)),
    "unit_updates": (unit_updates, "(U, n): row u the change of theta when unit u alone is removed, group OBS "
                     "-S^-1 e_i w_i^T / [S^-1]_ii in [W | b] (Kron-OBS, C-OBS), units and damping as for the "
                     "saliencies; shortcut=True: the published C-OBS code's sum of single-weight OBS updates "
                     "-(S^-1 e_i / [S^-1]_ii)(A^-1 D^-1 w_i)^T, D = diag(A^-1) (docs/conventions.md §7, §8)",
                     dict(_KFAC_CURV, damping=1e-3, shortcut=False)),
    "eigendamage_importances": (eigendamage_importances, "EigenDamage: W* = U_S^T [W | b] U_A, importance W*_ij^2 "
                                "kappa_ij / 2 summed per direction; per affine layer the c S-side directions then "
                                "the p A-side ones, each in ascending order of the factor's eigenvalue (eigh's "
                                "order), largest included; kappa = sigma_i alpha_j (eigenvalues='kfac') or EKFAC's "
                                "(eigenvalues='ekfac'); K-FAC bias folded, expand; the directions of a repeated "
                                "eigenvalue compared by their sum (docs/conventions.md §7, §9)",
                                dict(_KFAC_CURV, eigenvalues="ekfac")),
    "ekfac_scales": (ekfac_scales, "[kappa (c, p)] per K-FAC block: kappa_ij = R sum_{n,k} [U_S^T G_nk U_A]_ij^2 = "
                     "diag(U_SA^T F_l U_SA), indices in ascending order of S's and A's eigenvalues "
                     "(docs/conventions.md §5)", dict(curvature="ggn", approx="expand", bias="fold")),
    "layer_hessians": (layer_hessians, "[2 X X^T / N (r, r)] per Linear/Conv2d, X (r, N T) the layer's input "
                       "features (im2col patches for Conv2d, no bias row) at the case's parameters: the Hessian "
                       "of ||(W - W') X||^2 / N in each row of W (OBC; docs/conventions.md §7)", {}),
    "layer_obs_losses": (layer_obs_losses, "[(c, r)] per Linear/Conv2d: row i's predicted increase w_q^2 / "
                         "(2 [H_t^-1]_qq) of ||(W - W') X||^2 / N at each of its r greedy OBS steps, "
                         "H = 2 X X^T / N + damping I, the removed weight's inverse eliminated after each step "
                         "(OBC Algorithm 1; docs/conventions.md §7)", dict(damping=1e-3)),
    "layer_obs_weights": (layer_obs_weights, "[(c, r + 1, r)] per Linear/Conv2d: the rows of W before and after "
                          "each greedy OBS step of layer_obs_losses, w -= (w_q / [H_t^-1]_qq) H_t^-1 e_q, the "
                          "removed weight exactly 0 (docs/conventions.md §7)", dict(damping=1e-3)),
}
#: ``name: (reference(case, options), conventions, defaults)``
PRUNING_QUANTITIES = {name: (_with_defaults(fn, defaults), conventions, defaults)
                      for name, (fn, conventions, defaults) in _TABLE.items()}
