"""The harness's pruning quantities and layout helpers, each against an independent
computation: the layout helpers against np.kron with explicit permutation matrices; the
unit criteria, their updates, EigenDamage's importances and EKFAC's kappa against the
dense matrices (group OBS with the dense K-FAC block, diag(U^T F_l U)); the layer
Hessian against a polarisation of the layer's own forward pass and layer-wise OBS
against a per-row greedy loop that re-inverts at every step.  Then the self-check:
refprune's own functions pass the harness for every quantity and every option
combination, on a subset of the zoo (SUBSET below: both MLP activations with a kink and
without, a network without biases, and two convolutional networks, with all four
losses)."""

import itertools
import re
from pathlib import Path

import numpy as np
import pytest

import refprune as rp
from refprune import conformance as cf
from refprune.conformance import pruning_quantities as pq
from refprune.nn import AffineLayer
from refprune.pruning import structured
from refprune.pruning.layerwise import layer_hessian, obc_rows
from refprune.pruning.surgery import structurally_prunable

SUBSET = [cf.make_case(a, lo) for a, lo in (("mlp-tanh", "ce-mean"), ("mlp-relu", "mse-sum"),
                                              ("mlp-sigmoid-softplus-nobias", "ce-sum"),
                                              ("conv-tanh-avgpool", "mse-mean"),
                                              ("conv-conv-softplus-sigmoid", "ce-mean"),
                                              ("conv-stride2-relu-maxpool", "mse-mean"))]
CURVATURES = ("ggn", "fisher", "mc_fisher", "empirical_fisher")


# -- brute force: the flat positions of a layer's [W | b], written out -------------------------

def flat_positions(layer, offset):
    """``pos[i, k]``: the flat index of entry ``(i, k)`` of ``[W_r | b]`` (weights row-major,
    then every bias after all the weights: PyTorch's weight.ravel() then bias)."""
    c = layer.out_units
    r = layer.n_weight // c
    pos = offset + np.arange(c)[:, None] * r + np.arange(r)[None, :]
    if layer.bias:
        pos = np.concatenate([pos, offset + c * r + np.arange(c)[:, None]], axis=1)
    return pos


def permutation(layer, offset, n):
    """``P (n, c p)``: column ``i p + k`` is the unit vector of flat index ``pos[i, k]``."""
    pos = flat_positions(layer, offset)
    P = np.zeros((n, pos.size))
    P[pos.ravel(), np.arange(pos.size)] = 1.0
    return P


def dense_kron(case, pairs):
    """``sum_l P_l (S_l kron A_l) P_l^T`` over the affine layers (bias folded)."""
    n = case.n_params
    out = np.zeros((n, n))
    offs = case.model.param_offsets()
    layers = [(j, layer) for j, layer in enumerate(case.model) if isinstance(layer, AffineLayer)]
    for (j, layer), (S, A) in zip(layers, pairs):
        P = permutation(layer, offs[j], n)
        out += P @ np.kron(S, A) @ P.T
    return out


def rows_of(case, layer, j):
    return case.theta[flat_positions(layer, case.model.param_offsets()[j])]


# -- layout helpers ---------------------------------------------------------------------------

def _random_pairs(model, rng, bias="fold"):
    out = []
    for lay in rp.block_layouts(model, bias):
        S, A = rng.standard_normal((lay.c, lay.c)), rng.standard_normal((lay.p, lay.p))
        out.append((S, A))
    return out


@pytest.mark.parametrize("case", SUBSET[:5], ids=lambda c: c.name)
def test_blocks_to_flat_and_back_against_explicit_permutations(case):
    rng = np.random.default_rng(1)
    pairs = _random_pairs(case.model, rng)
    K = rp.blocks_to_flat(case.model, pairs)
    assert np.array_equal(K, dense_kron(case, pairs))
    back = rp.flat_to_blocks(case.model, K)
    assert all(np.array_equal(B, np.kron(S, A)) for B, (S, A) in zip(back, pairs))
    # matrices in vec([W | b]) order are accepted as well as pairs
    assert np.array_equal(rp.blocks_to_flat(case.model, back), K)
    # refprune's own K-FAC: the helper and KFAC.to_dense agree
    op = rp.kfac(*case.args())
    assert np.allclose(rp.blocks_to_flat(case.model, op.factors()), op.to_dense(), rtol=0, atol=1e-14)


def test_blocks_to_flat_with_the_bias_apart():
    case = SUBSET[0]
    rng = np.random.default_rng(2)
    pairs = _random_pairs(case.model, rng, "separate")
    K = rp.blocks_to_flat(case.model, pairs, bias="separate")
    n = case.n_params
    want = np.zeros((n, n))
    offs = case.model.param_offsets()
    it = iter(pairs)
    for j, layer in enumerate(case.model):
        if not isinstance(layer, AffineLayer):
            continue
        (S, AW), (Sb, one) = next(it), next(it)
        pos = flat_positions(layer, offs[j])
        w, b = pos[:, :-1].ravel(), pos[:, -1]
        want[np.ix_(w, w)] = np.kron(S, AW)
        want[np.ix_(b, b)] = np.kron(Sb, one)
    assert np.array_equal(K, want)
    back = rp.flat_to_blocks(case.model, K, bias="separate")
    assert all(np.array_equal(B, np.kron(S, A)) for B, (S, A) in zip(back, pairs))
    op = rp.kfac(*case.args(), bias="separate")
    assert np.allclose(rp.blocks_to_flat(case.model, op.factors(), bias="separate"), op.to_dense(), atol=1e-14)


def test_flat_to_blocks_never_modifies_its_input():
    case = SUBSET[0]
    K = rp.ggn(*case.args())
    before = K.copy()
    rp.flat_to_blocks(case.model, K)
    assert np.array_equal(K, before)


# -- the unit criteria against group OBS on the dense K-FAC -----------------------------------

def _dense_units(case, curvature, damping):
    """Per prunable layer: (Q index lists per unit, dense damped K-FAC over theta)."""
    kw = {"targets": case.targets} if curvature == "mc_fisher" else {}
    op = rp.kfac(*case.args(), curvature=curvature, **kw)
    r = np.sqrt(damping)
    K = dense_kron(case, [(S + r * np.eye(len(S)), A + r * np.eye(len(A))) for S, A in op.factors()])
    offs = case.model.param_offsets()
    units = []
    for j in structurally_prunable(case.model):
        units += list(flat_positions(case.model[j], offs[j]))
    return units, K


@pytest.mark.parametrize("curvature", CURVATURES)
def test_unit_saliencies_and_updates_against_the_dense_matrices(curvature):
    for case in SUBSET[:5]:
        o = dict(curvature=curvature, damping=0.01, shortcut=False)
        units, K = _dense_units(case, curvature, 0.01)
        Kinv = np.linalg.inv(K)
        th = case.theta
        kw = {"targets": case.targets} if curvature == "mc_fisher" else {}
        F = rp.ggn(*case.args()) if curvature == "ggn" else rp.fisher(*case.args(), curvature=curvature, **kw)
        want = {k: [] for k in ("kron_obd", "kron_obs", "c_obs", "c_obd", "kron_obd_sc", "kron_obs_sc")}
        upd, upd_sc = [], []
        for Q in units:
            w, KQ, IQ = th[Q], K[np.ix_(Q, Q)], Kinv[np.ix_(Q, Q)]
            want["kron_obd"].append(w @ KQ @ w / 2)
            want["kron_obs"].append(w @ np.linalg.solve(IQ, w) / 2)  # group OBS, docs/conventions.md §7
            want["c_obs"].append(np.sum(w**2 / (2 * np.diag(IQ))))
            want["c_obd"].append(np.sum(w**2 * np.diag(F)[Q]) / 2)
            rowsum = w**2 @ KQ.sum(axis=1)  # S_ii (A 1)_k
            want["kron_obd_sc"].append(rowsum / 2)
            want["kron_obs_sc"].append(rowsum / (2 * np.mean(np.diag(IQ @ KQ))))  # S_ii [S^-1]_ii
            upd.append(-Kinv[:, Q] @ np.linalg.solve(IQ, w))
            upd_sc.append(-(Kinv[:, Q] * (w / np.diag(IQ))).sum(axis=1))
        got = lambda name, **kw: pq.PRUNING_QUANTITIES[name][0](case, dict(o, **kw))  # noqa: E731
        for name, key in (("kron_obd_saliencies", "kron_obd"), ("kron_obs_saliencies", "kron_obs"),
                          ("c_obs_saliencies", "c_obs")):
            assert cf.relative_error(got(name), np.array(want[key])) < 1e-9, (case.name, name)
        assert cf.relative_error(pq.c_obd_saliencies(case, dict(curvature=curvature)), np.array(want["c_obd"])) < 1e-12
        assert cf.relative_error(got("kron_obd_saliencies", shortcut=True), np.array(want["kron_obd_sc"])) < 1e-9
        assert cf.relative_error(got("kron_obs_saliencies", shortcut=True), np.array(want["kron_obs_sc"])) < 1e-9
        assert cf.relative_error(got("unit_updates"), np.array(upd)) < 1e-9
        assert cf.relative_error(got("unit_updates", shortcut=True), np.array(upd_sc)) < 1e-9
        # the exact update zeroes its unit's row; the shortcut does not where A^-1 is not diagonal
        U = got("unit_updates")
        assert max(np.abs(th[Q] + U[u, Q]).max() for u, Q in enumerate(units)) < 1e-10


def test_the_unit_criteria_are_not_defined_on_a_single_layer():
    lin = cf.make_case("linear", "ce-mean")
    with pytest.raises(cf.NotCompared, match="one Linear/Conv2d layer"):
        pq.kron_obs_saliencies(lin, dict(curvature="ggn", damping=0.0, shortcut=False))
    report = cf.check(cf.Adapter(kron_obs_saliencies=lambda c: 0), [lin])
    assert not report.ok and "compared on no case" in str(report)


# -- EigenDamage and EKFAC's kappa against the dense matrices ---------------------------------

def _eig_vectors(layer, offset, n, US, UA):
    """``E (n, c p)``: column ``i p + j`` is u_S,i kron u_A,j placed at the layer's flat positions."""
    return permutation(layer, offset, n) @ np.kron(US, UA)


@pytest.mark.parametrize("eigenvalues", ["kfac", "ekfac"])
def test_eigendamage_importances_against_closed_forms(eigenvalues):
    compared = 0
    for case in SUBSET:
        o = dict(curvature="ggn", eigenvalues=eigenvalues)
        try:
            got = pq.eigendamage_importances(case, o)
        except cf.NotCompared:
            continue
        compared += 1
        F = rp.ggn(*case.args())
        n, offs, want = case.n_params, case.model.param_offsets(), []
        layers = [(j, la) for j, la in enumerate(case.model) if isinstance(la, AffineLayer)]
        for (j, layer), (S, A) in zip(layers, rp.kfac(*case.args()).factors()):
            s, US = np.linalg.eigh(S)
            a, UA = np.linalg.eigh(A)
            M = rows_of(case, layer, j)
            if eigenvalues == "kfac":  # sum_j W*_ij^2 s_i a_j / 2 = s_i u_i^T M A M^T u_i / 2, and likewise
                want += [s * np.einsum("ci,cd,di->i", US, M @ A @ M.T, US) / 2,
                         a * np.einsum("pj,pq,qj->j", UA, M.T @ S @ M, UA) / 2]
            else:
                E = _eig_vectors(layer, offs[j], n, US, UA)
                kappa = np.einsum("ak,ab,bk->k", E, F, E)  # diag(U^T F_l U), George et al. 2018
                imp = ((E.T @ case.theta) ** 2 * kappa / 2).reshape(len(s), len(a))
                want += [imp.sum(axis=1), imp.sum(axis=0)]
        want = np.concatenate(want)
        if isinstance(got, pq.Grouped):  # a repeated eigenvalue: only sums over its directions are unique
            assert any(len(g) > 1 for g in got.groups)
            got, want = got.project(got.values), got.project(want)
        assert cf.relative_error(got, want) < 1e-9, case.name
    assert compared == len(SUBSET)


def test_eigendamage_directions_of_a_repeated_eigenvalue_are_compared_by_their_sum():
    """With squared error the last layer's S is 2 R N I: every direction of its S side is
    an eigenvector.  An implementation that picks other eigenvectors there passes; one
    that moves importance between two directions of different eigenvalues fails."""
    mse = [c for c in cf.zoo(["mlp-tanh", "conv-tanh-avgpool"]) if c.name.endswith("mse-mean")]
    rng = np.random.default_rng(3)
    for eigenvalues in ("kfac", "ekfac"):
        o = dict(curvature="ggn", eigenvalues=eigenvalues)

        def rotated(case, o=o):
            blocks = pq._rotated(rp.kfac(*case.args()).blocks, rng)
            if o["eigenvalues"] == "kfac":
                scales = [np.outer(b.eigh()[0], b.eigh()[2]) for b in blocks]
            else:
                F = rp.ggn(*case.args())
                scales = []
                for b in blocks:
                    _, US, _, UA = b.eigh()
                    E = _eig_vectors(b.layout.layer, b.layout.layer_offset, case.n_params, US, UA)
                    scales.append(np.einsum("ak,ab,bk->k", E, F, E).reshape(len(US), len(UA)))
            return pq._importances(blocks, scales, case.theta)

        report = cf.check(cf.Adapter(eigendamage_importances=rotated, options={"eigendamage_importances": o}), mse)
        assert report.ok and report["eigendamage_importances"].cases == len(mse), report
        assert not report["eigendamage_importances"].skipped
        ref = pq.eigendamage_importances(mse[0], o)
        assert isinstance(ref, pq.Grouped) and cf.relative_error(rotated(mse[0]), ref.values) > 0.1  # per direction

        def moved(case, o=o):
            v = pq.eigendamage_importances(case, o)
            v = np.array(v.values if isinstance(v, pq.Grouped) else v)
            v[0], v[-1] = v[0] + 1.0, v[-1] - 1.0  # across layers: never within one group
            return v

        f = cf.check(cf.Adapter(eigendamage_importances=moved, options={"eigendamage_importances": o}),
                     mse)["eigendamage_importances"].smallest_failure
        assert f is not None and any("compared as sums over each repeated eigenvalue" in d for d in f.diagnosis)


@pytest.mark.parametrize("opts", [dict(curvature="ggn", approx="expand", bias="fold"),
                                  dict(curvature="mc_fisher", approx="reduce", bias="fold"),
                                  dict(curvature="empirical_fisher", approx="expand", bias="separate")],
                         ids=lambda o: "-".join(o.values()))
def test_ekfac_scales_are_the_diagonal_of_the_exact_block_in_the_kfac_eigenbasis(opts):
    for case in SUBSET:
        try:
            got = pq.ekfac_scales(case, opts)
        except cf.NotCompared:
            continue
        F = pq.exact_curvature(case, opts)
        kw = {"targets": case.targets} if opts["curvature"] == "mc_fisher" else {}
        op = rp.kfac(*case.args(), **opts, **kw)
        for kappa, blk in zip(got, op.blocks):
            lay = blk.layout
            _, US = np.linalg.eigh(blk.S)
            _, UA = np.linalg.eigh(blk.A)
            pos = flat_positions(lay.layer, lay.layer_offset)
            pos = {"all": pos, "weight": pos[:, : lay.p], "bias": pos[:, -1:]}[lay.part]
            E = np.zeros((case.n_params, lay.size))
            E[pos.ravel()] = np.kron(US, UA)
            want = np.einsum("ak,ab,bk->k", E, F, E).reshape(lay.c, lay.p)
            assert cf.relative_error(kappa, want) < 1e-9, case.name


# -- layer-wise OBS against the layer's forward pass and a re-inverting loop --------------------

def test_layer_hessians_by_polarisation_of_the_layer_output():
    for case in SUBSET:
        got = pq.layer_hessians(case, {})
        x, grouped, k = case.X, case.model.group_params(case.params), 0
        for layer, p in zip(case.model, grouped):
            if isinstance(layer, AffineLayer):
                r = layer.n_weight // layer.out_units

                def f(d, layer=layer, p=p, x=x):
                    W = p[0].copy().reshape(layer.out_units, r)
                    W[0] += d  # row 0 only: every row has the same Hessian
                    z0 = layer.forward(p, x)[0][:, 0]
                    z = layer.forward([W.reshape(p[0].shape)] + list(p[1:]), x)[0][:, 0]
                    return np.sum((z - z0) ** 2) / len(case.X)

                I = np.eye(r)
                H = np.array([[f(I[a] + I[b]) - f(I[a]) - f(I[b]) for b in range(r)] for a in range(r)])
                assert cf.relative_error(got[k], H) < 1e-9, (case.name, k)
                k += 1
            x, _ = layer.forward(p, x)
        assert k == len(got)


@pytest.mark.parametrize("damping", [1e-3, 0.5])
def test_layer_obs_traces_against_a_loop_that_reinverts(damping):
    for case in SUBSET[:4]:
        losses = pq.layer_obs_losses(case, dict(damping=damping))
        weights = pq.layer_obs_weights(case, dict(damping=damping))
        hs = pq.layer_hessians(case, {})
        layers = [(j, la) for j, la in enumerate(case.model) if isinstance(la, AffineLayer)]
        for (j, layer), H, inc, traj in zip(layers, hs, losses, weights):
            c = layer.out_units
            r = layer.n_weight // c
            W = case.theta[case.model.param_offsets()[j]:][: layer.n_weight].reshape(c, r)
            Hd = H + damping * np.eye(r)
            for i in range(c):
                w, free = W[i].copy(), list(range(r))
                assert np.allclose(traj[i, 0], w, rtol=0, atol=0)
                for t in range(r):
                    Hi = np.linalg.inv(Hd[np.ix_(free, free)])
                    s = w[free] ** 2 / (2 * np.diag(Hi))
                    q = int(np.argmin(s))
                    assert abs(inc[i, t] - s[q]) <= 1e-9 * max(abs(s[q]), 1e-300) + 1e-15, (case.name, i, t)
                    w[free] -= Hi[:, q] * w[free][q] / Hi[q, q]
                    w[free[q]] = 0.0
                    free.pop(q)
                    assert cf.relative_error(traj[i, t + 1], w) < 1e-9, (case.name, i, t)


# -- the self-check: refprune's own functions, every quantity, every option -------------------

def _mc(case, o):
    return {"targets": case.targets} if o.get("curvature") == "mc_fisher" else {}


def _kfac_kw(case, o):
    return dict(curvature=o["curvature"], approx=o["approx"], bias=o["bias"], **_mc(case, o))


def _units(method):
    def fn(case, o):
        kw = {k: o[k] for k in ("damping", "shortcut") if k in o}
        sal = rp.pruning.unit_saliencies(*case.args(), method=method, curvature=o["curvature"], **kw, **_mc(case, o))
        return np.concatenate([sal[j] for j in sorted(sal)])
    return fn


def _own_unit_updates(case, o):
    op = rp.kfac(*case.args(), curvature=o["curvature"], **_mc(case, o))
    by_offset = {b.layout.layer_offset: b for b in op.blocks}
    r, rows = np.sqrt(o["damping"]), []
    for j in structurally_prunable(case.model):
        b = by_offset[case.model.param_offsets()[j]]
        lay = b.layout
        M = lay.to_matrix(case.theta[lay.offset : lay.offset + lay.size][:, None])[0]
        for i in range(lay.c):
            d = structured.unit_update(b.S + r * np.eye(lay.c), b.A + r * np.eye(lay.p), M, i, o["shortcut"])
            row = np.zeros(case.n_params)
            row[lay.offset : lay.offset + lay.size] = lay.from_matrix(d[None])[:, 0]
            rows.append(row)
    return np.array(rows)


def _own_importances(case, o):
    op = rp.kfac(*case.args(), curvature=o["curvature"], **_mc(case, o))
    E = rp.ekfac(*case.args(), curvature=o["curvature"], **_mc(case, o)) if o["eigenvalues"] == "ekfac" else None
    out = []
    for k, b in enumerate(op.blocks):
        s, US, a, UA = b.eigh()
        M = b.layout.to_matrix(case.theta[b.layout.offset : b.layout.offset + b.layout.size][:, None])[0]
        kappa = E.blocks[k].scales if E is not None else np.outer(s, a)
        imp = (US.T @ M @ UA) ** 2 * kappa / 2
        out += [imp.sum(axis=1), imp.sum(axis=0)]
    return np.concatenate(out)


def _own_traces(case, o, which):
    out, x = [], case.X
    for j, (layer, p) in enumerate(zip(case.model, case.model.group_params(case.params))):
        if isinstance(layer, AffineLayer):
            H = layer_hessian(layer.features(x), len(case.X))
            c, r = layer.out_units, layer.n_weight // layer.out_units
            if which == "hessian":
                out.append(H)
            else:
                Hinv = np.linalg.inv(H + o["damping"] * np.eye(r))
                res = obc_rows(p[0].reshape(c, r), Hinv, np.ones((c, r), bool), r)
                out.append(res[1] if which == "losses" else res[2])
        x, _ = layer.forward(p, x)
    return out


def _obs_inverse(case):
    G = rp.ggn(*case.args())
    return np.linalg.inv(G + case.obs_damping * np.eye(len(G)))


def _own_obs_update(case):
    obs = rp.OBS(_obs_inverse(case), case.theta)
    obs.remove([case.obs_index])
    return obs.w - case.theta


#: refprune's own functions, ``name: fn(case, options)``
OWN = {
    "loss": lambda c, o: rp.loss(*c.args()),
    "grad": lambda c, o: rp.grad(*c.args()),
    "per_sample_grads": lambda c, o: rp.per_sample_grads(*c.args()),
    "hvp": lambda c, o: rp.hvp(*c.args(), c.v),
    "hessian": lambda c, o: rp.hessian(*c.args()),
    "ggn": lambda c, o: rp.ggn(*c.args()),
    "residual": lambda c, o: rp.residual(*c.args()),
    "fisher": lambda c, o: rp.fisher(*c.args(), curvature="fisher"),
    "mc_fisher": lambda c, o: rp.fisher(*c.args(), curvature="mc_fisher", targets=c.targets),
    "empirical_fisher": lambda c, o: rp.fisher(*c.args(), curvature="empirical_fisher"),
    "hessian_diagonal": lambda c, o: rp.hessian_diagonal(*c.args()),
    "ggn_diagonal": lambda c, o: rp.ggn_diagonal(*c.args()),
    "empirical_fisher_diagonal": lambda c, o: rp.fisher_diagonal(*c.args(), curvature="empirical_fisher"),
    "mc_fisher_diagonal": lambda c, o: rp.fisher_diagonal(*c.args(), curvature="mc_fisher", targets=c.targets),
    "kfac": lambda c, o: rp.kfac(*c.args(), **_kfac_kw(c, o)).to_dense(),
    "kfac_factors": lambda c, o: rp.kfac(*c.args(), **_kfac_kw(c, o)).factors(),
    "ekfac": lambda c, o: rp.ekfac(*c.args(), **_kfac_kw(c, o)).to_dense(),
    "ekfac_scales": lambda c, o: [b.scales for b in rp.ekfac(*c.args(), **_kfac_kw(c, o)).blocks],
    "obd_saliencies": lambda c, o: rp.saliencies(*c.args(), method="obd", include_bias=True),
    "obs_saliencies": lambda c, o: rp.OBS(_obs_inverse(c), c.theta).saliencies(),
    "obs_update": lambda c, o: _own_obs_update(c),
    "c_obd_saliencies": _units("c_obd"),
    "c_obs_saliencies": _units("c_obs"),
    "kron_obd_saliencies": _units("kron_obd"),
    "kron_obs_saliencies": _units("kron_obs"),
    "unit_updates": _own_unit_updates,
    "eigendamage_importances": _own_importances,
    "layer_hessians": lambda c, o: _own_traces(c, o, "hessian"),
    "layer_obs_losses": lambda c, o: _own_traces(c, o, "losses"),
    "layer_obs_weights": lambda c, o: _own_traces(c, o, "weights"),
}
#: every value of every option, per option name (the combinations are their product); a
#: number takes one value other than its default (the default is compared elsewhere)
VALUES = dict(curvature=CURVATURES, approx=("expand", "reduce"), bias=("fold", "separate"), damping=(0.5,),
              shortcut=(False, True), eigenvalues=("kfac", "ekfac"))


def _combinations(name):
    keys = sorted(cf.QUANTITIES[name][2])
    return [dict(zip(keys, vals)) for vals in itertools.product(*(VALUES[k] for k in keys))]


#: the optimizer quantities are self-checked through the harness in tests/test_optimizer_quantities.py
NOT_OPTIMIZER = sorted(set(cf.QUANTITIES) - set(cf.OPTIMIZER_QUANTITIES))


def test_own_covers_every_quantity():
    assert set(OWN) == set(NOT_OPTIMIZER)


@pytest.mark.parametrize("name", NOT_OPTIMIZER)
def test_refprune_passes_its_own_harness_for_every_option(name):
    combos = _combinations(name)
    assert combos
    for o in combos:
        fn = OWN[name]
        adapter = cf.Adapter(**{name: (lambda f, o: (lambda c: f(c, o)))(fn, o)}, options={name: o} if o else None)
        report = cf.check(adapter, SUBSET)
        assert report.ok, (o, report)
        assert report[name].cases >= 2, (o, report)


def test_the_self_check_uses_every_quantity_option_from_the_table():
    table = {o.name for o in rp.options.TABLE["Adapter options"]}
    used = set().union(*(cf.QUANTITIES[name][2] for name in NOT_OPTIMIZER))
    assert used == table == set(VALUES)
    for row in rp.options.TABLE["Adapter options"]:
        if row.kind == "choice":
            assert set(VALUES[row.name]) == set(row.choices)


# -- Monte Carlo: the reference replays case.targets ------------------------------------------

def test_monte_carlo_quantities_replay_the_case_targets():
    """An adapter that replays case.targets passes; one that draws its own targets fails."""
    opts = {"curvature": "mc_fisher"}
    for name, fn in (("kfac", lambda c: rp.kfac(*c.args(), curvature="mc_fisher", targets=c.targets).to_dense()),
                     ("ekfac", lambda c: rp.ekfac(*c.args(), curvature="mc_fisher", targets=c.targets).to_dense())):
        assert cf.check(cf.Adapter(**{name: fn}, kfac_options=opts), SUBSET).ok
        assert cf.check(cf.Adapter(**{name: fn}, options={name: opts}), SUBSET).ok
    diag = cf.Adapter(mc_fisher_diagonal=lambda c: rp.fisher_diagonal(*c.args(), curvature="mc_fisher",
                                                                       targets=c.targets))
    assert cf.check(diag, SUBSET).ok
    own_draws = cf.Adapter(ekfac=lambda c: rp.ekfac(*c.args(), curvature="mc_fisher", samples=2, seed=7).to_dense(),
                           kfac_options=opts)
    assert not cf.check(own_draws, SUBSET[:2]).ok


# -- the options and their text ---------------------------------------------------------------

def test_quantities_state_their_conventions_without_placeholders():
    for name, (ref, conventions, defaults) in cf.QUANTITIES.items():
        assert callable(ref) and isinstance(defaults, dict)
        assert not re.search(r"\{[a-z_]+\}", conventions) and len(conventions) > 5, name
    fail = cf.check(cf.Adapter(kfac_factors=lambda c: [], kfac_options={"bias": "separate"}), SUBSET[:1])
    f = fail["kfac_factors"].smallest_failure
    assert "'bias': 'separate'" in f.conventions and "bias='separate': per layer with a bias two" in f.conventions
    assert "bias='separate'" in f.diagnosis[0] and "two, weights then bias, per layer with one" in f.diagnosis[0]


def test_per_quantity_options_are_checked_against_the_quantity_and_the_table():
    with pytest.raises(ValueError, match=r"options\['c_obd_saliencies'\] has unknown keys \['shortcut'\]; its "
                                         r"options: \['curvature'\]"):
        cf.Adapter(c_obd_saliencies=len, options={"c_obd_saliencies": {"shortcut": True}})
    with pytest.raises(ValueError, match=r"options\['grad'\] has unknown keys \['damping'\]; it takes no options"):
        cf.Adapter(grad=len, options={"grad": {"damping": 1.0}})
    with pytest.raises(TypeError, match=r"Adapter: options\['kron_obs_saliencies'\]: shortcut must be True or False"):
        cf.Adapter(kron_obs_saliencies=len, options={"kron_obs_saliencies": {"shortcut": "yes"}})
    with pytest.raises(ValueError, match=r"damping must be a finite number >= 0, got -1"):
        cf.Adapter(unit_updates=len, options={"unit_updates": {"damping": -1}})
    a = cf.Adapter(kron_obs_saliencies=len, options={"kron_obs_saliencies": {"damping": 1}})
    assert a.options["kron_obs_saliencies"] == dict(curvature="ggn", damping=1.0, shortcut=False)
    assert a.kfac_options == dict(curvature="ggn", approx="expand", bias="fold")  # kept for the K-FAC quantities


def test_a_quantity_added_in_one_line_with_its_own_options(monkeypatch):
    """A module of further quantities (an optimizer step, say) adds its table with one
    ``update``; an option without a row in the options table must keep its default's kind."""
    extra = {"scaled_grad": (lambda c, o: o["lr"] * rp.grad(*c.args()), "lr times dL/dtheta", {"lr": 0.1})}
    monkeypatch.setattr(cf.harness, "QUANTITIES", dict(cf.QUANTITIES, **extra))
    good = cf.Adapter(scaled_grad=lambda c: 0.5 * rp.grad(*c.args()), options={"scaled_grad": {"lr": 0.5}})
    assert cf.check(good, SUBSET[:2]).ok
    assert not cf.check(cf.Adapter(scaled_grad=lambda c: rp.grad(*c.args())), SUBSET[:1]).ok
    with pytest.raises(TypeError, match=r"options\['scaled_grad'\]: lr must be a finite number like its default 0.1"):
        cf.Adapter(scaled_grad=len, options={"scaled_grad": {"lr": "0.5"}})


def test_the_adapter_and_check_keywords_are_the_option_table_rows():
    import inspect

    for fn, key in ((cf.Adapter.__init__, "Adapter"), (cf.check, "check")):
        sig = inspect.signature(fn)
        kws = {k: p.default for k, p in sig.parameters.items()
               if p.kind is p.POSITIONAL_OR_KEYWORD and k not in ("self", "adapter")}
        assert kws == {o.name: o.default for o in rp.options.TABLE[key]}
    text = rp.options.describe("Adapter options")
    assert "shortcut = False" in text and "eigenvalues = 'ekfac'" in text


# -- the README example -----------------------------------------------------------------------

def test_the_readme_example_checks_kfac_pairs_in_at_most_ten_lines():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    m = re.search(r"<!-- kfac-pairs-example -->\n```python\n(.*?)```", readme, re.S)
    assert m, "README: the K-FAC pairs example is missing"
    code = m.group(1)
    lines = [ln for ln in code.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert len(lines) <= 10, lines
    exec(compile(code, "README.md", "exec"), {})
    # and the same check catches a wrong pair: the example is not vacuous
    wrong = code.replace("return pairs", "return [(2 * G, A) for G, A in pairs]")
    assert wrong != code
    with pytest.raises(AssertionError, match="conformance with refprune failed"):
        exec(compile(wrong, "README.md", "exec"), {})


def test_the_layout_docstring_example_runs():
    import doctest

    from refprune.curvature import layout

    result = doctest.testmod(layout)
    assert result.attempted >= 4 and result.failed == 0


@pytest.mark.parametrize("name, option, planted", [
    ("kron_obs_saliencies", "shortcut", True), ("kron_obd_saliencies", "shortcut", True),
    ("unit_updates", "shortcut", True), ("eigendamage_importances", "eigenvalues", "kfac"),
    ("ekfac_scales", "curvature", "empirical_fisher"), ("kfac", "approx", "reduce"),
    ("c_obs_saliencies", "curvature", "empirical_fisher")])
def test_a_variant_other_than_the_one_compared_is_named(name, option, planted):
    """An implementation of another variant (the published row-sum shortcut, K-FAC's
    eigenvalues for EKFAC's, ...) fails, and the failure names the variant it matches."""
    ref, _, defaults = cf.QUANTITIES[name]
    variant = dict(defaults, **{option: planted})
    report = cf.check(cf.Adapter(**{name: lambda c: ref(c, variant)}), SUBSET)
    f = report[name].smallest_failure
    assert f is not None, report
    assert any(d.startswith(f"matches refprune's {name} with {option}={planted!r}") for d in f.diagnosis), f.diagnosis
    if option == "shortcut":
        assert any("row sums sum_k W_ik^2 (A 1)_k" in d for d in f.diagnosis)
