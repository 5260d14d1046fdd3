"""The last two catalogue entries (docs/conventions.md §9a), planted and named through
``refprune.conformance.check`` itself: the row-sum shortcut of the unit criteria and a
moving average started at the identity.  The planted values are refprune's own
variants (each checked against an independent computation in
tests/test_conformance_quantities.py and tests/test_optimizer_quantities.py); what is
tested here is that the harness names them."""

import refprune.conformance as cf
from refprune.conformance import optimizer_quantities as oq

CASES = [cf.make_case("mlp-tanh", "ce-mean"), cf.make_case("mlp-relu", "mse-sum")]


def _smallest_failure(name, fn, options):
    report = cf.check(cf.Adapter(**{name: fn}, options={name: options}), CASES)
    assert not report.ok
    return report[name].smallest_failure.explain()


def test_the_row_sum_shortcut_is_named():
    ref = cf.QUANTITIES["kron_obs_saliencies"][0]
    text = _smallest_failure("kron_obs_saliencies", lambda c: ref(c, dict(curvature="ggn", damping=1e-3,
                                                                          shortcut=True)),
                             dict(shortcut=False))
    assert "with shortcut=True: the published EigenDamage code's shortcut (row sums" in text


def test_a_moving_average_started_at_the_identity_is_named():
    opts = dict(damping=0.1, k=3)
    text = _smallest_failure("kfac_steps", lambda c: oq.run(c, "kfac_steps", dict(opts, ema_start="identity")), opts)
    assert "matches moving average started as ema_start='identity' instead of 'first' (x_0 = I)" in text
