"""Weighting rules as registered objects: registry, activity, weights, epoch updates."""

import warnings

import numpy as np
import pytest
import torch

from skrobust import compute_weights
from skrobust.memory import RowMemory
from skrobust.row_state import RowState
from skrobust.rules import (
    RULES,
    AdaptiveRule,
    NoWeighting,
    SmallLossRule,
    WeightingRule,
    make_rule,
    register_rule,
)


class _Params:
    """Stands in for an estimator: the attributes make_rule reads."""

    def __init__(self, **params):
        defaults = dict(weighting="truncate", warmup_epochs=2, stats="mean_std",
                        alpha=1.0, beta=float("inf"), forget_rate="auto")
        vars(self).update({**defaults, **params})


def _state(flags, seen=True):
    n = len(flags)
    norm_memory, proba_memory = RowMemory(n), RowMemory(n, width=2)
    if seen:
        norm_memory.update(torch.arange(n), torch.zeros(n))
    flags = torch.as_tensor(flags)
    return RowState(torch.zeros(n, dtype=torch.long), norm_memory, proba_memory,
                    to_memory=lambda out: out, flag_rows=lambda state: flags)


def test_registry_holds_the_documented_rules_in_order():
    assert list(RULES)[:5] == ["adaptive", "truncate", "soft", "small_loss", "none"]
    assert all(RULES[name].name == name for name in RULES)


@pytest.mark.parametrize("name, uses", [
    ("truncate", ("stats", "alpha", "beta")), ("soft", ("stats",)),
    ("small_loss", ("forget_rate",)), ("adaptive", ("alpha",)), ("none", ()),
])
def test_make_rule_passes_exactly_the_parameters_a_rule_uses(name, uses):
    rule = make_rule(_Params(weighting=name, alpha=0.3, stats="median_iqr"))
    assert type(rule) is RULES[name] and rule.uses == uses
    assert rule.warmup_epochs == 2
    for param in uses:
        assert getattr(rule, param) == getattr(_Params(alpha=0.3, stats="median_iqr"), param)


@pytest.mark.parametrize("bad", ["hard", None, 3])
def test_make_rule_names_the_registered_rules(bad):
    with pytest.raises(ValueError, match="weighting must be one of .'adaptive', 'truncate'"):
        make_rule(_Params(weighting=bad))


def test_a_rule_refuses_parameters_it_does_not_use():
    with pytest.raises(TypeError, match="does not use"):
        RULES["soft"](warmup_epochs=1, alpha=2.0)


def test_register_rule_refuses_other_classes():
    with pytest.raises(TypeError, match="WeightingRule subclass"):
        register_rule("bad")(object)
    assert "bad" not in RULES


@pytest.mark.parametrize("warmup", [0, 1, 3])
def test_warmup_decides_activity(warmup):
    rule = make_rule(_Params(weighting="truncate", warmup_epochs=warmup))
    assert [rule.is_active(e) for e in range(1, 6)] == [e > warmup for e in range(1, 6)]
    assert not NoWeighting(warmup_epochs=0).is_active(10)
    assert SmallLossRule(warmup_epochs=warmup).is_active(1)


@pytest.mark.parametrize("name, params", [
    ("truncate", dict(stats="mean_std", alpha=0.5, beta=1.0)),
    ("truncate", dict(stats="median_iqr", alpha=1.0, beta=float("inf"))),
    ("soft", dict(stats="mean_std")),
])
def test_batch_rules_are_compute_weights(name, params):
    norms = torch.tensor([0.1, 0.5, 0.4, 3.0, 0.45, 0.2, 1.2, 0.3])
    rule = make_rule(_Params(weighting=name, **params))
    got = rule.batch_weights(norms, norms, None, 5, None)
    kwargs = {k: v for k, v in params.items() if k in rule.uses}
    torch.testing.assert_close(got, compute_weights(norms, weighting=name, **kwargs))


def test_small_loss_ramps_over_the_warmup_and_drops_the_largest_losses():
    rule = SmallLossRule(warmup_epochs=4, forget_rate=0.5)
    losses = torch.arange(8, dtype=torch.float32)
    assert rule.batch_weights(losses, losses, None, 2, None).tolist() == [1] * 6 + [0] * 2
    assert rule.batch_weights(losses, losses, None, 4, None).tolist() == [1] * 4 + [0] * 4


def test_small_loss_auto_rate_is_the_flagged_share():
    rule = SmallLossRule(warmup_epochs=0, forget_rate="auto")
    state = _state([True, False, False, False])
    losses = torch.arange(8, dtype=torch.float32)
    # Read from the memories when first needed: a quarter of the rows are flagged.
    assert rule.batch_weights(losses, losses, None, 1, state).sum() == 6
    rule.end_epoch(1, _state([True, True, False, False]))
    assert rule.batch_weights(losses, losses, None, 2, state).sum() == 4


def test_adaptive_leaves_out_the_flagged_rows_after_the_warmup():
    flags = [False, True, False, True, False, False]
    rule = AdaptiveRule(warmup_epochs=2)
    state = _state(flags)
    rule.end_epoch(1, state)  # still warming up: no selection yet, but memories exist
    rows = torch.tensor([3, 0, 1])
    norms = torch.ones(3)
    assert rule.batch_weights(norms, norms, rows, 3, state).tolist() == [0.0, 1.0, 0.0]
    rule = AdaptiveRule(warmup_epochs=0)
    assert rule.batch_weights(norms, norms, rows, 1, _state(flags, seen=False)).tolist() == [
        1.0, 1.0, 1.0]


def test_a_registered_rule_trains_the_estimator(small_data, make_net):
    calls = []

    @register_rule("first_half")
    class FirstHalf(WeightingRule):
        def batch_weights(self, norms, losses, rows, epoch, state):
            calls.append(epoch)
            w = torch.zeros_like(norms)
            w[: len(w) // 2] = 1
            return w

    try:
        X, y = small_data
        net = make_net(weighting="first_half", warmup_epochs=1, max_epochs=3).fit(X, y)
    finally:
        del RULES["first_half"]
    assert set(calls) == {2, 3}
    np.testing.assert_allclose(net.history[:, "weight_mean"][1:], 0.5, atol=0.02)


@pytest.mark.parametrize("weighting, params, warned", [
    ("adaptive", dict(beta=1.0), "beta=1.0 has no effect with weighting='adaptive'"),
    ("soft", dict(beta=1.0), "beta=1.0 has no effect with weighting='soft'"),
    ("truncate", dict(forget_rate=0.2), "forget_rate=0.2 has no effect"),
    ("adaptive", dict(warmup_epochs=5, max_epochs=3), "never acts in this fit"),
])
def test_a_setting_the_rule_ignores_warns_once(small_data, make_net, weighting, params, warned):
    X, y = small_data
    with pytest.warns(UserWarning, match=warned) as record:
        make_net(weighting=weighting, **{"max_epochs": 2, **params}).fit(X, y)
    assert sum(warned.split(" ")[0] in str(w.message) for w in record) == 1


@pytest.mark.parametrize("weighting, params", [
    ("truncate", dict(alpha=2.0, beta=1.0, stats="median_iqr")),
    ("small_loss", dict(forget_rate=0.2)),
    ("adaptive", dict(alpha=2.0)),
    ("none", dict(warmup_epochs=10)),
])
def test_settings_the_rule_reads_do_not_warn(small_data, make_net, weighting, params):
    X, y = small_data
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        make_net(weighting=weighting, max_epochs=2, **params).fit(X, y)
