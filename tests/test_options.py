"""The options table (``refprune.options``): it lists exactly the keyword options of
every entry point with their defaults, each option is accepted by the methods it applies
to and refused by name by the others (against a hand-written list read from the code),
numbers given as text are type errors, and a precomputed curvature must be symmetric
to the stated tolerance."""

import inspect

import numpy as np
import pytest

import refprune as rp
from refprune import options

from cases import small_mlp

ENTRY_POINTS = {
    "prune": rp.prune, "obs_trace": rp.obs_trace, "saliencies": rp.saliencies, "minimize": rp.minimize,
    "train": rp.train, "unit_saliencies": rp.pruning.unit_saliencies, "SGD": rp.optim.SGD, "KFAC": rp.optim.KFAC,
    "EKFAC": rp.optim.EKFAC, "NaturalGradient": rp.optim.NaturalGradient,
}
POSITIONAL = {"model", "params", "X", "y", "loss"}


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_the_table_lists_every_keyword_option_with_its_default(name):
    sig = inspect.signature(ENTRY_POINTS[name])
    keywords = {k: p.default for k, p in sig.parameters.items() if k not in POSITIONAL and k != "self"}
    rows = {o.name: o.default for o in options.TABLE[name]}
    if name == "unit_saliencies":  # its method and curvature keep their own checks and messages
        keywords.pop("method"), keywords.pop("curvature")
        rows.pop("method"), rows.pop("curvature")
    assert rows == keywords


# ------------------------------------------------------------------ prune: which option applies where

UNSTRUCTURED_RANKED = {"magnitude", "obd", "obs", "woodfisher"}
#: read from the code: the methods whose code path uses each option
APPLIES = {
    "scope": UNSTRUCTURED_RANKED,  # _targets; layer_obs is always per layer, units and directions global
    "diagonal": {"obd"},
    "damping": {"obs", "woodfisher", "layer_obs", "c_obs", "kron_obd", "kron_obs"},
    "group_size": {"obs", "woodfisher"},
    "mask": set(rp.pruning.METHODS) - {"eigendamage"},
    "include_bias": UNSTRUCTURED_RANKED,  # layer_obs prunes weights; structured methods remove units
    "max_layer_fraction": {"eigendamage"},
    "eigenvalues": {"eigendamage"},
    "protected": UNSTRUCTURED_RANKED,
    "skip_emptied": UNSTRUCTURED_RANKED,
    "taylor": {"obs"},
    "weight_decay": UNSTRUCTURED_RANKED,
    "indefinite": {"obs"},
    "selection": {"layer_obs"},
}
#: a valid value other than the default
OTHER = dict(scope="layer", diagonal="obd_lm", damping=0.5, group_size=2, mask=np.ones(31, bool), include_bias=True,
             max_layer_fraction=0.5, eigenvalues="kfac", protected=np.zeros(31, bool), skip_emptied=True,
             taylor="full", weight_decay=0.01, indefinite="damp", selection="greedy")


@pytest.mark.parametrize("option", sorted(APPLIES))
def test_prune_accepts_an_option_where_it_applies_and_refuses_it_by_name_elsewhere(option):
    args = small_mlp()
    for method in rp.pruning.METHODS:
        kw = {option: OTHER[option]}
        if option != "damping" and method in APPLIES["damping"]:
            kw["damping"] = 0.1  # keeps the curvature invertible
        if method in APPLIES[option]:
            r = rp.prune(*args, method=method, sparsity=0.3, **kw)
            assert r.steps, (option, method)
        else:
            with pytest.raises(ValueError) as err:
                rp.prune(*args, method=method, sparsity=0.3, **kw)
            msg = str(err.value)
            assert msg.startswith(f"prune: {option}=") and f"does not apply to method {method!r}; {option}= applies " \
                f"to " in msg, msg
            for m in APPLIES[option]:
                assert m in msg.split("applies to ")[1], (m, msg)
    assert set(options.applicable("prune", "obs")) >= {"taylor", "indefinite", "group_size", "damping"}


def test_the_monte_carlo_options_need_mc_fisher():
    args = small_mlp()
    y = args[3]
    for kw in (dict(samples=2), dict(seed=3), dict(targets=np.stack([y, y]))):
        for curvature in ("ggn", "fisher", "hessian", "empirical_fisher"):
            with pytest.raises(ValueError, match=rf"^prune: {next(iter(kw))}= is for curvature='mc_fisher'"
                                                 rf"(?: \(or with retrain=\))?, got curvature='{curvature}'"):
                rp.prune(*args, method="obd", curvature=curvature, sparsity=0.2, **kw)
        r = rp.prune(*args, method="obd", curvature="mc_fisher", sparsity=0.2, **kw)
        assert r.steps
    # the seed also seeds retraining's batch order, so it applies with retrain=
    rp.prune(*args, method="magnitude", sparsity=0.2, seed=3, retrain=dict(epochs=1, batch_size=4))
    # a sequence seed for the Monte Carlo draws, as numpy.random.default_rng takes
    a = rp.saliencies(*args, method="obd", curvature="mc_fisher", seed=[1, 2])
    theta, w = rp.flatten_params(args[1]), rp.prunable_mask(args[0])
    d = rp.curvature_diagonal(*args, curvature="mc_fisher", seed=[1, 2])
    assert np.allclose(a[w], theta[w] ** 2 * d[w] / 2, rtol=1e-12, atol=0) and np.isinf(a[~w]).all()
    with pytest.raises(ValueError, match=r"^saliencies: seed must be a non-negative int or a sequence of "
                                         r"non-negative ints, got -1$"):
        rp.saliencies(*args, method="obd", curvature="mc_fisher", seed=-1)


# ------------------------------------------------------------------ types

def test_numbers_given_as_text_or_none_are_type_errors_naming_everything():
    args = small_mlp()
    calls = [
        (lambda: rp.minimize(*args, weight_decay="0.1"), "minimize", "weight_decay", "'0.1'", "text"),
        (lambda: rp.obs_trace(*args, damping=None), "obs_trace", "damping", "None", "None"),
        (lambda: rp.prune(*args, damping=True), "prune", "damping", "True", "a bool"),
        (lambda: rp.optim.KFAC(ema_decay="0.9"), "KFAC", "ema_decay", "'0.9'", "text"),
        (lambda: rp.train(*args, lr=[0.1]), "train", "lr", "[0.1]", "a list"),
    ]
    for call, where, name, shown, what in calls:
        with pytest.raises(TypeError) as err:
            call()
        assert isinstance(err.value, options.OptionTypeError) and isinstance(err.value, ValueError)
        msg = str(err.value)
        assert msg.startswith(f"{where}: {name} must be a finite number") and f"got {shown} ({name} must be a " \
            f"number, not {what})" in msg, msg


@pytest.mark.parametrize("name", ["include_bias", "skip_emptied", "evaluate_loss", "progress"])
def test_flags_must_be_booleans(name):
    with pytest.raises(TypeError, match=rf"^obs_trace: {name} must be True or False, got 'no'$"):
        rp.obs_trace(*small_mlp(), damping=0.1, **{name: "no"})
    rp.obs_trace(*small_mlp(), damping=0.1, count=1, **{name: np.bool_(False)})  # NumPy's bool is a bool


def test_describe_and_applicable_read_the_table():
    text = options.describe("prune", method="obs")
    assert text.splitlines()[0] == "prune (method='obs'): options"
    assert "  taylor = 'second_order': OBS's quadratic model; accepts one of ('second_order', 'full')" in text
    assert "selection" not in text and "max_layer_fraction" not in text
    full = options.describe("prune")
    assert "selection = 'exact'" in full and "applies to methods layer_obs" in full
    assert "seed = 0" in full and "curvature mc_fisher (or with retrain=)" in full
    assert options.applicable("saliencies", "kron_obs") == ("method", "curvature", "damping", "samples", "seed",
                                                            "targets")
    with pytest.raises(ValueError, match=r"^describe: function must be one of \('prune', "):
        options.describe("prnue")
    assert rp.options is options and "options" in rp.__all__


# ------------------------------------------------------------------ symmetric curvature

SYMMETRY_MESSAGE = (r": the precomputed curvature is not symmetric: \|\|C - C\^T\|\| = \S+ exceeds 1e-10 \|\|C\|\| = \S+; "
                    r"largest asymmetry \|C\[3, 7\] - C\[7, 3\]\| = ")


def test_a_precomputed_curvature_must_be_symmetric_to_1e_10_relative():
    args = small_mlp()
    n = args[0].n_params
    G = rp.ggn(*args) + 0.1 * np.eye(n)
    norm = np.linalg.norm(G)
    for ratio, refused in ((0.5e-10, False), (2e-10, True)):
        C = G.copy()
        delta = ratio * norm / np.sqrt(2)  # ||C - C^T||_F = sqrt(2) |delta| (to first order in delta)
        C[3, 7] += delta
        for call in (lambda: rp.saliencies(*args, curvature=C), lambda: rp.prune(*args, curvature=C, count=1),
                     lambda: rp.obs_trace(*args, curvature=C, count=1),
                     lambda: rp.saliencies(*args, method="obd", curvature=C)):
            if refused:
                with pytest.raises(ValueError, match=SYMMETRY_MESSAGE):
                    call()
            else:
                call()
    # an operator's dense matrix is checked as well (rp.Dense refuses such a matrix itself,
    # so the operator here is one a user wrote, with only a product)
    C = G.copy()
    C[0, 1] += 1.0

    class Product(rp.CurvatureOperator):
        n = C.shape[0]

        def _matmat(self, V):
            return C @ V

    with pytest.raises(ValueError, match=r"^prune: the precomputed curvature is not symmetric"):
        rp.prune(*args, curvature=Product(), count=1)


def test_progress_reports_for_every_method(capsys):
    """progress=True applies to every method, EigenDamage included: each prints a line."""
    args = small_mlp()
    for method in rp.pruning.METHODS:
        kw = dict(damping=0.1) if method in APPLIES["damping"] else {}
        rp.prune(*args, method=method, sparsity=0.3, progress=True, **kw)
        err = capsys.readouterr().err
        assert err.startswith(f"prune ({method}): "), (method, err)
