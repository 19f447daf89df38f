"""Early-termination rules on hand-made metric curves."""

import pytest

from autodetect.api.v1alpha1 import EarlyTerminationSpec
from autodetect.tuning.policies import decide_stops, judged_interval


def spec(policy, **kw):
    return EarlyTerminationSpec(policy=policy, **kw)


# --- gating ---------------------------------------------------------------------------

@pytest.mark.parametrize("interval,delay,reported,expected", [
    (1, 0, 0, None), (1, 0, 1, 1), (1, 0, 7, 7),
    (2, 0, 1, None), (2, 0, 3, 2), (2, 0, 4, 4),
    (2, 5, 5, None), (2, 5, 6, 6), (1, 5, 4, None), (1, 5, 5, 5),
    (3, 4, 8, 6), (3, 7, 8, None),
])
def test_judged_interval_is_latest_multiple_not_before_delay(interval, delay, reported, expected):
    policy = spec("median_stopping", evaluationInterval=interval, delayEvaluation=delay)
    assert judged_interval(policy, reported) == expected


def test_no_policy_stops_nothing():
    curves = {"a": [0.9, 0.9], "b": [0.0, 0.0]}
    assert decide_stops(spec("none"), curves, {"a", "b"}, "maximize") == {}


def test_delay_and_interval_gate_every_policy():
    curves = {"good": [0.9, 0.9, 0.9, 0.9], "bad": [0.1, 0.1, 0.1]}
    for policy in (spec("bandit", slackFactor=0.1), spec("median_stopping"),
                   spec("truncation_selection", truncationPercentage=50)):
        delayed = policy.model_copy(update={"delayEvaluation": 4})
        assert decide_stops(delayed, curves, {"bad"}, "maximize") == {}  # bad reported 3 < delay 4
        every2 = policy.model_copy(update={"evaluationInterval": 2})
        assert set(decide_stops(every2, curves, {"bad"}, "maximize")) == {"bad"}  # judged at interval 2
        every4 = policy.model_copy(update={"evaluationInterval": 4})
        assert decide_stops(every4, curves, {"bad"}, "maximize") == {}  # interval 4 not reached yet


# --- bandit ---------------------------------------------------------------------------

def test_bandit_slack_factor_reason_and_threshold():
    curves = {"lead": [0.3, 0.5, 0.45, 0.4], "low": [0.1, 0.2, 0.31, 0.3], "ok": [0.2, 0.42, 0.41, 0.0]}
    stops = decide_stops(spec("bandit", slackFactor=0.2), curves, {"lead", "low", "ok"}, "maximize")
    assert stops == {"low": "bandit: best 0.31 at interval 4 is below 0.4167 = 0.5/(1+0.2)"}


def test_bandit_trial_exactly_at_threshold_is_kept():
    curves = {"lead": [0.5], "edge": [0.4], "under": [0.3999]}
    stops = decide_stops(spec("bandit", slackFactor=0.25), curves, {"edge", "under"}, "maximize")
    assert set(stops) == {"under"}
    stops = decide_stops(spec("bandit", slackAmount=0.1), curves, {"edge", "under"}, "maximize")
    assert set(stops) == {"under"}


def test_bandit_slack_amount_minimize():
    curves = {"lead": [0.9, 0.5], "edge": [0.8, 0.7], "high": [0.8, 0.71]}
    stops = decide_stops(spec("bandit", slackAmount=0.2), curves, {"edge", "high"}, "minimize")
    assert stops == {"high": "bandit: best 0.71 at interval 2 is above 0.7 = 0.5+0.2"}
    stops = decide_stops(spec("bandit", slackFactor=0.4), curves, {"edge", "high"}, "minimize")
    assert set(stops) == {"high"} and "0.5*(1+0.4)" in stops["high"]


def test_bandit_compares_only_up_to_the_judged_interval():
    # the leader's later 0.9 is unknown at interval 2: the young trial is judged against 0.5
    curves = {"old": [0.3, 0.5, 0.9, 0.9], "young": [0.3, 0.45]}
    assert decide_stops(spec("bandit", slackFactor=0.2), curves, {"young"}, "maximize") == {}


def test_bandit_single_trial_and_finished_leader():
    assert decide_stops(spec("bandit", slackFactor=0.01), {"only": [0.1, 0.05]}, {"only"}, "maximize") == {}
    # a finished trial leads the comparison but is never itself stopped
    curves = {"done": [0.9, 0.9], "run": [0.1, 0.1], "done_low": [0.0, 0.0]}
    assert set(decide_stops(spec("bandit", slackFactor=0.1), curves, {"run"}, "maximize")) == {"run"}


def test_intervals_without_a_report_are_skipped():
    curves = {"lead": [None, 0.5, None], "gap": [None, None, 0.1], "empty": [None, None, None]}
    stops = decide_stops(spec("bandit", slackFactor=0.1), curves, {"gap", "empty"}, "maximize")
    assert stops == {"gap": "bandit: best 0.1 at interval 3 is below 0.4545 = 0.5/(1+0.1)"}
    # a trial with no metric yet, and one that has reported nothing at all, are never judged
    curves = {"lead": [0.9, 0.9], "none_yet": [None, None], "new": []}
    assert decide_stops(spec("median_stopping"), curves, {"none_yet", "new"}, "maximize") == {}


# --- median stopping ------------------------------------------------------------------

def test_median_stopping_uses_running_averages():
    # running averages at 3: a=0.5, b=0.4, c=0.2 -> median 0.4; bests: a=.6 b=.5 c=.3
    curves = {"a": [0.4, 0.5, 0.6], "b": [0.3, 0.4, 0.5], "c": [0.1, 0.2, 0.3]}
    stops = decide_stops(spec("median_stopping"), curves, {"a", "b", "c"}, "maximize")
    assert stops == {"c": "median stopping: best 0.3 at interval 3 is below 0.4, "
                          "the median of 3 trials' running averages"}


def test_median_stopping_tie_kept_and_minimize():
    # running averages .4 .4 .3 -> median .4; c's best is exactly .4: kept
    curves = {"a": [0.4, 0.4], "b": [0.4, 0.4], "c": [0.2, 0.4]}
    assert decide_stops(spec("median_stopping"), curves, {"a", "b", "c"}, "maximize") == {}
    # loss: averages a=1.0 b=0.8 c=0.55 -> median 0.8; bests a=0.9 b=0.7 c=0.5
    curves = {"a": [1.1, 0.9], "b": [0.9, 0.7], "c": [0.6, 0.5]}
    assert set(decide_stops(spec("median_stopping"), curves, {"a", "b", "c"}, "minimize")) == {"a"}


def test_median_stopping_ignores_trials_that_have_not_reached_the_interval():
    # "short" stopped at interval 1 with a bad value; at interval 3 only a and b compare
    curves = {"a": [0.4, 0.5, 0.6], "b": [0.1, 0.2, 0.3], "short": [0.0]}
    stops = decide_stops(spec("median_stopping"), curves, {"a", "b"}, "maximize")
    assert set(stops) == {"b"} and "median of 2 trials" in stops["b"]
    assert decide_stops(spec("median_stopping"), {"only": [0.2, 0.1]}, {"only"}, "maximize") == {}


# --- truncation selection -------------------------------------------------------------

def test_truncation_stops_lowest_percentage():
    curves = {f"t{i}": [i / 10, i / 10] for i in range(8)}  # bests 0.0 .. 0.7
    stops = decide_stops(spec("truncation_selection", truncationPercentage=25), curves, set(curves), "maximize")
    assert set(stops) == {"t0", "t1"}
    assert stops["t0"] == "truncation selection: best 0 at interval 2 is in the lowest 25% of 8 trials (below 0.2)"
    stops = decide_stops(spec("truncation_selection", truncationPercentage=50), curves, set(curves), "minimize")
    assert set(stops) == {"t4", "t5", "t6", "t7"}


def test_truncation_too_few_trials_and_ties():
    curves = {"a": [0.1], "b": [0.9], "c": [0.5]}
    # floor(3 * 25%) = 0: nothing to truncate
    assert decide_stops(spec("truncation_selection", truncationPercentage=25), curves, set(curves), "maximize") == {}
    # floor(4 * 50%) = 2, but the second lowest ties with the worst survivor: only one is stopped
    curves = {"a": [0.1], "b": [0.5], "c": [0.5], "d": [0.9]}
    stops = decide_stops(spec("truncation_selection", truncationPercentage=50), curves, set(curves), "maximize")
    assert set(stops) == {"a"}


def test_truncation_finished_trials_counted_unless_excluded():
    curves = {"done1": [0.9, 0.9], "done2": [0.8, 0.8], "run1": [0.3, 0.4], "run2": [0.5, 0.6]}
    policy = spec("truncation_selection", truncationPercentage=50)
    # with finished trials: the two running trials are the lowest half
    assert set(decide_stops(policy, curves, {"run1", "run2"}, "maximize")) == {"run1", "run2"}
    # excluding them: only run1 vs run2, and only run1 goes
    excluded = policy.model_copy(update={"excludeFinishedJobs": True})
    stops = decide_stops(excluded, curves, {"run1", "run2"}, "maximize")
    assert set(stops) == {"run1"} and "of 2 trials" in stops["run1"]
    # a finished trial is never stopped itself
    assert set(decide_stops(policy, {"done": [0.0], "run": [1.0]}, {"run"}, "maximize")) == set()


def test_policy_spec_validation_requires_its_settings():
    with pytest.raises(ValueError):
        EarlyTerminationSpec(policy="bandit")
    with pytest.raises(ValueError):
        EarlyTerminationSpec(policy="bandit", slackFactor=0.1, slackAmount=0.1)
    with pytest.raises(ValueError):
        EarlyTerminationSpec(policy="truncation_selection")
