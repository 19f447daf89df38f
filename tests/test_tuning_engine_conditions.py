"""Katib-style conditions: no-op when unchanged, lastTransitionTime moves only with the status."""

from datetime import datetime, timedelta, timezone

from autodetect.tuning import conditions as cond

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
T1 = T0 + timedelta(minutes=5)


def test_setting_an_unchanged_condition_is_a_no_op():
    first = cond.mark_running([], "Experiment is running", T0)
    assert cond.mark_running(first, "Experiment is running", T1) == first


def test_same_status_new_message_keeps_transition_time():
    first = cond.mark_running([], "one", T0)
    second = cond.mark_running(first, "two", T1)
    assert second[0].message == "two" and second[0].lastTransitionTime == T0


def test_status_change_moves_transition_time_and_keeps_order():
    conditions = cond.mark_running(cond.mark_created([], T0), "running", T0)
    done = cond.mark_succeeded(conditions, cond.MAX_TRIALS_REACHED, "done", T1)
    assert [c.type for c in done] == [cond.CREATED, cond.RUNNING, cond.SUCCEEDED]
    running = cond.get_condition(done, cond.RUNNING)
    assert running.status == "False" and running.lastTransitionTime == T1
    assert cond.get_condition(done, cond.CREATED).lastTransitionTime == T0
    assert cond.is_succeeded(done) and cond.is_completed(done) and not cond.is_running(done)
    assert not cond.is_failed(done)


def test_failed_and_generation():
    failed = cond.mark_failed(cond.mark_running([], "r", T0), cond.MAX_FAILED_TRIALS_REACHED, "boom", T1,
                              generation=2)
    assert cond.is_failed(failed) and cond.get_condition(failed, cond.FAILED).observedGeneration == 2
    # a new generation alone is recorded, without a transition
    bumped = cond.set_condition(failed, cond.FAILED, "True", cond.MAX_FAILED_TRIALS_REACHED, "boom", T1 + (T1 - T0), 3)
    assert cond.get_condition(bumped, cond.FAILED).observedGeneration == 3
    assert cond.get_condition(bumped, cond.FAILED).lastTransitionTime == T1
    assert cond.get_condition([], cond.FAILED) is None and not cond.is_true([], cond.FAILED)
