"""One vocabulary: a curvature name means the same matrix in every function that takes
it, every function takes every name that applies to it, and earlier spellings are
refused with an error naming the current one."""

import numpy as np
import pytest

import refprune as rp
from refprune.curvature.output_factors import draw_targets
from refprune.checks import validate
from refprune.testing import assert_close
from refprune.vocabulary import CURVATURES, FISHER_LIKE, FISHERS, OLD_SPELLINGS

from cases import make

MC = dict(samples=3, seed=11)


def mc_for(curvature):
    """The Monte Carlo options, given only where they apply (the other curvatures refuse them)."""
    return MC if curvature == "mc_fisher" else {}


def dense(args, curvature, **mc):
    """The dense matrix by its own function (independent of the operator classes)."""
    if curvature in ("hessian", "ggn"):
        return getattr(rp, curvature)(*args)
    return rp.fisher(*args, curvature=curvature, **mc)


@pytest.mark.parametrize("lossname", ["ce-mean", "mse-sum"])
@pytest.mark.parametrize("curvature", rp.CURVATURES)
def test_a_name_means_one_matrix_everywhere(curvature, lossname):
    args = make("conv-tanh-avgpool", lossname, n=3)
    M = dense(args, curvature, **mc_for(curvature))
    tol = 1e-11 * max(1.0, np.abs(M).max())
    assert_close(rp.ExactCurvature(*args, curvature=curvature, **mc_for(curvature)).to_dense(), M, 1e-10, tol, "ExactCurvature")
    assert_close(rp.ExactCurvature(*args, curvature=curvature, **mc_for(curvature)).matvec(np.ones(len(M))), M.sum(axis=1), 1e-10,
                 tol, "ExactCurvature.matvec")
    assert_close(rp.curvature_diagonal(*args, curvature=curvature, **mc_for(curvature)), np.diag(M), 1e-10, tol, "diagonal")
    if curvature != "hessian":
        assert_close(rp.fisher_diagonal(*args, curvature=curvature, **mc_for(curvature)) if curvature != "ggn"
                     else rp.ggn_diagonal(*args), np.diag(M), 1e-10, tol, "fisher_diagonal")
    # OBD with the exact diagonal of this matrix: saliency theta^2 d / 2, smallest first
    theta = rp.flatten_params(args[1])
    r = rp.prune(*args, method="obd", curvature=curvature, sparsity=0.3,
                 **(MC if curvature == "mc_fisher" else {}))  # prune refuses Monte Carlo options elsewhere
    sal = theta**2 * np.diag(M) / 2
    weights = np.flatnonzero(rp.prunable_mask(args[0]))
    k = int(np.floor(0.3 * weights.size))
    expect = np.sort(weights[np.argsort(sal[weights], kind="stable")[:k]])
    assert np.array_equal(np.sort(r.steps[0].removed), expect)
    assert_close(r.steps[0].predicted, sal[expect].sum(), 1e-10, 1e-14, "OBD predicted")


def test_kfac_of_every_fisher_like_name_is_exact_for_one_sample():
    """K-FAC is exact with one data point (N = 1, Linear): the name picks the matrix."""
    args = make("mlp-tanh", "ce-mean", n=1)
    off = args[0].param_offsets()
    for curvature in ("ggn", "fisher", "mc_fisher", "empirical_fisher"):
        M = dense(args, curvature, **mc_for(curvature))
        K = rp.kfac(*args, curvature=curvature, **mc_for(curvature))
        for b, j in zip(K.blocks, (0, 2)):
            s = slice(off[j], off[j + 1])
            assert_close(b.dense(), M[s, s], 1e-11, 1e-13, f"K-FAC {curvature}")


@pytest.mark.parametrize("call", [
    lambda a: rp.fisher(*a, kind="true"),
    lambda a: rp.fisher_diagonal(*a, kind="mc"),
    lambda a: rp.kfac(*a, fisher="type-2"),
    lambda a: rp.ekfac(*a, fisher="empirical"),
    lambda a: rp.ExactCurvature(*a, kind="ggn"),
    lambda a: rp.block_diagonal(*a, kind="hessian"),
    lambda a: rp.prune(*a, method="kron_obs", fisher="type-2"),
    lambda a: rp.pruning.unit_saliencies(*a, fisher="type-2"),
])
def test_renamed_options_are_refused_naming_the_new_option(call):
    args = make("mlp-tanh", "ce-mean", n=2)
    with pytest.raises(TypeError, match=r"was renamed curvature=; write curvature='(ggn|fisher|mc_fisher|"
                                        r"empirical_fisher|hessian)'"):
        call(args)


@pytest.mark.parametrize("old, new", [("type-2", "ggn"), ("true", "fisher"), ("mc", "mc_fisher"),
                                      ("empirical", "empirical_fisher")])
def test_earlier_spellings_are_refused_naming_the_current_one(old, new):
    args = make("mlp-tanh", "ce-mean", n=2)
    for fn, takes in ((rp.fisher, FISHERS), (rp.fisher_diagonal, FISHERS), (rp.kfac, FISHER_LIKE),
                      (rp.ekfac, FISHER_LIKE), (rp.ExactCurvature, CURVATURES), (rp.block_diagonal, CURVATURES),
                      (rp.curvature_diagonal, CURVATURES)):
        # the current name is suggested only where the function takes it
        words = (f"curvature={old!r} is an earlier spelling; write curvature={new!r}" if new in takes else
                 f"curvature={old!r} is an earlier spelling of {new!r}, which {fn.__name__} does not take; "
                 f"choose one of {takes}")
        with pytest.raises(ValueError) as err:
            fn(*args, curvature=old)
        assert words in str(err.value)
    with pytest.raises(ValueError, match=f"write curvature={new!r}"):
        rp.prune(*args, method="obs", curvature=old)


def test_prune_refuses_curvature_names_in_diagonal_and_inapplicable_curvatures():
    args = make("mlp-tanh", "ce-mean", n=4)
    with pytest.raises(ValueError, match="diagonal='fisher' is an earlier spelling; write curvature='mc_fisher', "
                                         "diagonal='exact'"):
        rp.prune(*args, method="obd", diagonal="fisher")
    with pytest.raises(ValueError, match="diagonal must be one of"):
        rp.prune(*args, method="obd", diagonal="kfac")
    with pytest.raises(ValueError, match="uses no curvature matrix"):
        rp.prune(*args, method="magnitude", curvature="ggn")
    with pytest.raises(ValueError, match="curvature must be one of \\('empirical_fisher',\\)"):
        rp.prune(*args, method="woodfisher", curvature="ggn", damping=1e-3)
    with pytest.raises(ValueError, match="curvature must be one of \\('hessian',\\)"):
        rp.prune(*args, method="obd", diagonal="obd", curvature="ggn")
    with pytest.raises(ValueError, match="has no Kronecker factorisation|must be one of"):
        rp.prune(*args, method="kron_obs", curvature="hessian")
    with pytest.raises(ValueError, match="targets= is for curvature='mc_fisher'"):
        rp.prune(*args, method="obs", curvature="ggn", targets=np.zeros((1, 4), dtype=int))


@pytest.mark.parametrize("lossname", ["ce-mean", "mse-mean"])
def test_supplied_targets_replay_the_same_monte_carlo_fisher_everywhere(lossname):
    """Targets passed in give exactly what the same targets drawn inside give, for the
    matrix, its diagonal, its blocks, the operator, K-FAC, EKFAC and OBS."""
    args = make("conv-tanh-avgpool", lossname, n=3)
    inp = validate(*args)
    f = inp.model.forward_with_caches(inp.grouped, inp.X)[0]
    T = draw_targets(inp, f, 4, 21)
    drawn, given = dict(curvature="mc_fisher", samples=4, seed=21), dict(curvature="mc_fisher", targets=T)
    for fn in (rp.fisher, rp.fisher_diagonal, rp.curvature_diagonal):
        assert np.array_equal(fn(*args, **drawn), fn(*args, **given))
    assert np.array_equal(rp.block_diagonal(*args, **drawn).to_dense(), rp.block_diagonal(*args, **given).to_dense())
    assert np.array_equal(rp.ExactCurvature(*args, **drawn).matvec(np.ones(args[0].n_params)),
                          rp.ExactCurvature(*args, **given).matvec(np.ones(args[0].n_params)))
    for fn in (rp.kfac, rp.ekfac):
        assert np.array_equal(fn(*args, **drawn).to_dense(), fn(*args, **given).to_dense())
    a = rp.prune(*args, method="obs", sparsity=0.3, damping=1e-3, **drawn)
    b = rp.prune(*args, method="obs", sparsity=0.3, damping=1e-3, **given)
    assert np.array_equal(rp.flatten_params(a.params), rp.flatten_params(b.params))


def test_supplied_targets_define_the_fisher_by_their_outer_products():
    """Independent of the drawing code: with chosen labels, the MC Fisher is the mean over
    those labels of R sum_n g_n g_n^T, g_n from per-sample gradients at that label."""
    model, params, X, y, loss = make("mlp-tanh", "ce-sum", n=3)
    T = np.array([[0, 2, 1], [1, 1, 0]])
    F = rp.fisher(model, params, X, y, loss, curvature="mc_fisher", targets=T)
    ref = sum(G.T @ G for G in (rp.per_sample_grads(model, params, X, t, loss) for t in T)) / len(T)
    assert_close(F, ref, 1e-12, 1e-14, "MC Fisher from given targets")
    one = rp.fisher(model, params, X, y, loss, curvature="mc_fisher", targets=T[0])  # one draw may omit S
    G0 = rp.per_sample_grads(model, params, X, T[0], loss)
    assert_close(one, G0.T @ G0, 1e-12, 1e-14, "one draw")


def test_bad_targets_are_refused():
    args = make("mlp-tanh", "ce-mean", n=3)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        rp.fisher(*args, curvature="mc_fisher", targets=np.array([[0, 1, 3]]))
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\)"):
        rp.kfac(*args, curvature="mc_fisher", targets=np.zeros((2, 4), dtype=int))
    with pytest.raises(ValueError, match="targets= is for curvature='mc_fisher'"):
        rp.kfac(*args, curvature="ggn", targets=np.zeros((2, 3), dtype=int))
    mse = make("mlp-tanh", "mse-mean", n=3)
    with pytest.raises(ValueError, match="targets contain NaN"):
        rp.fisher(*mse, curvature="mc_fisher", targets=np.full((1, 3, 3), np.nan))


CURVATURE_FUNCTIONS = {  # function -> the keyword its earlier releases used for curvature=
    "fisher": "kind", "fisher_diagonal": "kind", "curvature_diagonal": "kind", "kfac": "fisher",
    "ekfac": "fisher", "ExactCurvature": "kind", "block_diagonal": "kind", "exact_matrix": None,
}


def _curvature_refused(fn, args, **kw):
    """The message of ``fn``'s refusal of a curvature name, or ``None`` if it takes it."""
    try:
        fn(*args, **kw)
    except (ValueError, TypeError) as err:
        if "curvature" in str(err):
            return str(err)
        raise
    return None


@pytest.mark.parametrize("name", sorted(CURVATURE_FUNCTIONS))
def test_every_suggested_curvature_is_one_the_function_takes(name):
    """A refusal that says ``write curvature='x'`` must name a curvature the same function
    takes, and one that says ``call refprune.f()`` a function that exists and takes it
    (``fisher_diagonal(kind="type-2")`` once suggested ``curvature='ggn'``, then refused it)."""
    import re

    args = make("mlp-tanh", "mse-mean", n=2)
    fn = getattr(rp, name) if hasattr(rp, name) else getattr(rp.curvature.exact, name)
    old_kw = CURVATURE_FUNCTIONS[name]
    values = list(CURVATURES) + list(OLD_SPELLINGS) + ["hessian_diagonal", 3]
    calls = [{"curvature": v} for v in values] + ([{old_kw: v} for v in values] if old_kw else [])
    suggestions = 0
    for kw in calls:
        msg = _curvature_refused(fn, args, **kw)
        if msg is None:
            continue
        for good in re.findall(r"write curvature='(\w+)'", msg):
            suggestions += 1
            assert _curvature_refused(fn, args, curvature=good) is None, (kw, msg)
        for other in re.findall(r"call refprune\.(\w+)\(\)", msg):
            suggestions += 1
            bad = kw.get("curvature", kw.get(old_kw))
            want = OLD_SPELLINGS.get(bad, bad)
            target = getattr(rp, other)
            assert _curvature_refused(target, args) is None or want in target.__name__, (kw, msg)
        assert "write curvature=" in msg or "call refprune." in msg or "one of" in msg, msg
    assert suggestions > 0
