"""The one rule for each trial (tuning.trials) and what the engine makes of trials' ends: the resource of a
start, a retry's reset, a stop, settling a trial whose run is gone or cannot start, the registered model,
failures the input caused, the Events of a decision, and spec changes while an experiment runs."""

from datetime import datetime, timedelta, timezone

import pytest

from autodetect.api.v1alpha1 import DetectionExperiment, DetectionTrial, EpochMetrics, TrialModel
from autodetect.errors import SpecError
from autodetect.tuning import conditions as cond
from autodetect.tuning import events as ev
from autodetect.tuning.engine import Fail, RetryTrial, StartTrial, StopTrial, reconcile, spec_changes
from autodetect.tuning.trials import (
    MISSING, Kill, Launch, Run, Settle, new_trial, rebuilt, registered_model, retried, step, stopped,
)
from autodetect.vocabulary import EXPERIMENT_LABEL, INTERRUPTED, INVALID_INPUT, TRIAL_LABEL

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
DATASET = {"training": {"uri": "pvc://data/train.jsonl"}}


def experiment(**spec) -> DetectionExperiment:
    return DetectionExperiment.model_validate({
        "metadata": {"name": "exp", "namespace": "team"},
        "spec": {"dataset": DATASET, "searchSpace": [{"model_name": "yolov8", "learning_rate": "uniform(0.001, 0.01)"}],
                 "sampling": {"seed": 1}, "artifacts": {"uri": "pvc://artifacts/"}, **spec}})


def trial(phase="Running", **status) -> DetectionTrial:
    made = new_trial(experiment(), "exp-000", {"model_name": "yolov8", "learning_rate": 0.005})
    return made.model_copy(update={"status": made.status.model_copy(update={"phase": phase, **status})})


def later(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# --- the trial resource, a retry, a stop ---------------------------------------------------------------

def test_a_start_makes_a_pending_trial_that_carries_what_its_trainer_needs():
    made = new_trial(experiment(), "exp-004", {"learning_rate": 0.005})
    assert made.metadata.name == "exp-004" and made.metadata.namespace == "team"
    assert made.metadata.labels == {EXPERIMENT_LABEL: "exp"}
    assert made.status.phase == "Pending" and made.spec.attempt == 0 and not made.spec.stop
    assert made.spec.dataset.training.uri == "pvc://data/train.jsonl" and made.spec.artifacts.uri == "pvc://artifacts/"


def test_a_retry_is_the_next_attempt_from_the_checkpoint():
    failed = cond.mark_trial(trial(epochs=[EpochMetrics(epoch=1, metrics={"mean_average_precision": 0.2})],
                                   startTime=T0, finalMetric=0.2).status, "Failed", later(60),
                             reason="OOMKilled", message="the trainer exited with code 137 (OOMKilled)\nmore")
    again = retried(trial().model_copy(update={"status": failed}), 1, later(90))
    assert again.spec.attempt == 1 and again.status.phase == "Pending"
    assert again.status.message == "attempt 1; attempt 0 failed: the trainer exited with code 137 (OOMKilled)"
    assert [e.epoch for e in again.status.epochs] == [1]  # the evaluations so far are kept
    assert again.status.startTime is None and again.status.completionTime is None and again.status.finalMetric is None
    assert not cond.is_true(again.status.conditions, cond.FAILED)


def test_a_stop_is_asked_once():
    asked = stopped(trial(), "bandit: too slow", T0)
    assert (asked.spec.stop, asked.spec.stopReason, asked.spec.stopTime) == (True, "bandit: too slow", T0)
    assert stopped(asked, "another reason", later(5)) is asked


# --- step: one trial given its run ---------------------------------------------------------------------

def test_an_active_trial_with_no_run_is_launched_and_a_running_one_waits():
    assert step(trial("Pending"), MISSING, T0) == Launch()
    assert step(trial("Running"), MISSING, T0) == Launch()  # its process is gone (a restart): run it again
    assert step(trial("Running"), Run("running"), T0) is None


def test_a_run_that_exits_without_the_trials_end_fails_it_with_the_log_last_line_first():
    outcome = step(trial(), Run("exited", T0, exit_code=1, message="Traceback\n  line\nValueError: boom"), T0)
    assert isinstance(outcome, Settle) and outcome.status.phase == "Failed" and outcome.status.reason == "Error"
    assert outcome.status.message.splitlines()[0] == "the trainer exited with code 1: ValueError: boom"
    oom = step(trial(), Run("exited", T0, exit_code=137, reason="OOMKilled"), T0)
    assert (oom.status.phase, oom.status.reason) == ("Failed", "OOMKilled")
    assert cond.get_condition(oom.status.conditions, cond.FAILED).reason == "OOMKilled"
    assert step(trial(), Run("exited", T0, exit_code=2, message="train.jsonl:3: bad box"), T0).status.reason == INVALID_INPUT


def test_a_deadline_ends_the_trial_pruned_keeping_its_metrics():
    outcome = step(trial(epochs=[EpochMetrics(epoch=1, metrics={"m": 1})]),
                   Run("exited", T0, exit_code=137, reason="DeadlineExceeded", message="active too long"), T0)
    assert outcome.status.phase == "Pruned" and "trial timeout" in outcome.status.message
    assert len(outcome.status.epochs) == 1


def test_a_stopped_trial_ends_pruned_once_its_run_is_gone_and_is_killed_when_overdue():
    asked = stopped(trial(), "bandit: best 0", T0)
    assert step(asked, Run("running"), later(30)) is None
    kill = step(asked, Run("running"), later(61))
    assert isinstance(kill, Kill) and kill.event.reason == ev.TRIAL_KILLED
    gone = step(asked, Run("exited", later(62), exit_code=-9), later(62))
    assert gone.status.phase == "Pruned" and gone.status.message.startswith("bandit: best 0 (killed")
    assert step(asked, MISSING, T0).status.message == "bandit: best 0"  # nothing ran it: it stops here


def test_a_pruned_trial_gets_its_stop_reason_and_an_ended_trial_is_left_alone():
    pruned = stopped(trial("Pruned", message="stopped on request after epoch 2", completionTime=T0), "bandit: x", T0)
    assert step(pruned, MISSING, T0).status.message == "bandit: x; stopped on request after epoch 2"
    done = pruned.model_copy(update={"status": pruned.status.model_copy(update={"message": "bandit: x; ..."})})
    assert step(done, MISSING, later(5)) is None
    assert isinstance(step(done, Run("running"), later(120)), Kill)  # ended long ago, yet still running


def test_an_interrupted_run_goes_back_to_pending_not_failed():
    for phase in ("Running", "Failed"):
        outcome = step(trial(phase, epochs=[EpochMetrics(epoch=3, metrics={})]),
                       Run("exited", T0, exit_code=1, reason=INTERRUPTED), T0)
        assert outcome.status.phase == "Pending" and "interrupted after epoch 3" in outcome.status.message
    assert step(trial("Succeeded"), Run("exited", T0, exit_code=0, reason=INTERRUPTED), T0) is None


def test_a_pod_that_cannot_start_is_shown_then_fails_the_trial_after_the_grace_period():
    waiting = Run("waiting", T0, reason="ImagePullBackOff", message="Back-off pulling image \"nope:1\"")
    shown = step(trial("Pending"), waiting, later(60))
    assert shown.status.phase == "Pending" and shown.event.reason == ev.TRIAL_CANNOT_START and shown.event.warning
    started = cond.get_condition(shown.status.conditions, cond.STARTED)
    assert (started.status, started.reason) == ("False", "ImagePullBackOff")
    assert step(trial("Pending").model_copy(update={"status": shown.status}), waiting, later(120)) is None  # no change
    failed = step(trial("Pending"), waiting, later(601))
    assert failed.status.phase == "Failed" and failed.status.reason == "ImagePullBackOff"
    assert "more than 10 min" in failed.status.message
    assert step(trial("Pending"), Run("waiting", T0, reason="ContainerCreating"), later(9999)) is None


# --- the registered model ------------------------------------------------------------------------------

def test_the_best_trial_registers_as_a_model_that_outlives_the_experiment():
    best = trial("Succeeded", artifactUri="pvc://artifacts/exp-000/", model=TrialModel(
        format="ultralytics", classes=["can"], inputSize={"image_size": 640}, epoch=3,
        metrics={"mean_average_precision": 0.8}))
    model = registered_model(experiment(), best)
    assert model.metadata.name == "exp-best" and model.metadata.namespace == "team"
    assert model.metadata.labels == {EXPERIMENT_LABEL: "exp", TRIAL_LABEL: "exp-000"}
    assert not getattr(model.metadata, "ownerReferences", None)
    assert (model.spec.artifactUri, model.spec.format, model.spec.classes) == ("pvc://artifacts/exp-000/", "ultralytics", ["can"])
    assert model.spec.lineage.hyperparameters == best.spec.hyperparameters and model.spec.metrics["mean_average_precision"] == 0.8
    assert registered_model(experiment(), best, artifact_uri="file:///m/").spec.artifactUri == "file:///m/"
    with pytest.raises(SpecError, match="no artifact"):
        registered_model(experiment(), trial("Succeeded"))


# --- the engine and trials' ends -----------------------------------------------------------------------

def failed_trial(reason: str, message: str) -> DetectionTrial:
    return trial().model_copy(update={"status": cond.mark_trial(trial().status, "Failed", T0, reason=reason,
                                                                message=message)})


@pytest.mark.parametrize("reason", [INVALID_INPUT, "ImagePullBackOff"])
def test_a_failure_the_input_caused_fails_the_experiment_at_once_with_the_trials_message(reason):
    exp = experiment(limits={"maxTrials": 5, "maxConcurrentTrials": 2, "maxFailedTrials": 3})
    decision = reconcile(exp, [failed_trial(reason, "/mnt/pvc/data/train.jsonl: no such file")], T0)
    assert decision.status.phase == "Failed" and not any(isinstance(a, (RetryTrial, StartTrial)) for a in decision.actions)
    assert "train.jsonl: no such file" in decision.status.message
    assert cond.get_condition(decision.status.conditions, cond.FAILED).reason == cond.TRIAL_INPUT_INVALID
    assert isinstance(decision.actions[-1], Fail)


def test_any_other_failure_is_retried():
    exp = experiment(limits={"maxTrials": 5, "maxConcurrentTrials": 2, "maxFailedTrials": 3})
    decision = reconcile(exp, [failed_trial("OOMKilled", "the trainer exited with code 137 (OOMKilled)")], T0)
    assert RetryTrial("exp-000", 1) in decision.actions and decision.status.phase == "Running"
    [retry] = [e for e in decision.events if e.reason == ev.TRIAL_RETRIED]
    assert retry.message == "exp-000 retried (attempt 1) after: the trainer exited with code 137 (OOMKilled)"


def test_events_say_each_decision_once():
    exp = experiment(limits={"maxTrials": 2, "maxConcurrentTrials": 2},
                     earlyTermination={"policy": "bandit", "slackFactor": 0.1, "evaluationInterval": 1})
    first = reconcile(exp, [], T0)
    assert [e.reason for e in first.events] == [ev.TRIAL_STARTED, ev.TRIAL_STARTED]
    assert first.events[0].message.startswith("exp-000 started: yolov8 learning_rate=")
    trials = [new_trial(exp, a.name, a.parameters) for a in first.actions]
    exp = exp.model_copy(update={"status": first.status})
    curves = {"exp-000": 0.9, "exp-001": 0.1}
    trials = [t.model_copy(update={"status": t.status.model_copy(update={
        "phase": "Running", "startTime": T0,
        "epochs": [EpochMetrics(epoch=1, metrics={"mean_average_precision": curves[t.metadata.name]})]})}) for t in trials]
    second = reconcile(exp, trials, later(60))
    assert StopTrial("exp-001", second.actions[0].reason) in second.actions
    assert [e.reason for e in second.events] == [ev.TRIAL_STOPPING]
    exp = exp.model_copy(update={"status": second.status})
    ended = [t.model_copy(update={"status": cond.mark_trial(t.status, phase, later(90), message=message)})
             for t, phase, message in zip(trials, ("Succeeded", "Pruned"), ("", "bandit: best 0.1"))]
    third = reconcile(exp, ended, later(120))
    reasons = [e.reason for e in third.events]
    assert reasons == [ev.TRIAL_SUCCEEDED, ev.TRIAL_PRUNED, ev.BEST_TRIAL_CHANGED, ev.MODEL_REGISTERED,
                       ev.EXPERIMENT_SUCCEEDED]
    assert third.events[1].message == "exp-001 pruned (mean_average_precision 0.1): bandit: best 0.1"
    assert third.status.model == "exp-best" and third.status.endedTrials == {"exp-000": "Succeeded", "exp-001": "Pruned"}
    again = reconcile(exp.model_copy(update={"status": third.status}), ended, later(130))
    assert again.events == () and again.actions == third.actions  # the outcome repeats; its events do not


def test_only_the_limits_and_the_trial_template_may_change_while_it_runs():
    exp = experiment(limits={"maxTrials": 3})
    assert spec_changes(exp.spec, experiment(limits={"maxTrials": 9}, trialTemplate={"image": "x:2"}).spec) == []
    changed = experiment(searchSpace=[{"model_name": "yolov8", "learning_rate": "uniform(0.01, 0.1)"}], primaryMetric="m")
    assert spec_changes(exp.spec, changed.spec) == ["spec.primaryMetric", "spec.searchSpace"]
    running = exp.model_copy(update={"status": reconcile(exp, [], T0).status})
    assert reconcile(running.model_copy(update={"spec": experiment(limits={"maxTrials": 9}).spec}), [], T0).status.phase == "Running"
    refused = reconcile(running.model_copy(update={"spec": changed.spec}), [], later(1))
    assert refused.status.phase == "Failed" and "spec.primaryMetric, spec.searchSpace changed" in refused.status.message
    assert cond.get_condition(refused.status.conditions, cond.FAILED).reason == cond.INVALID_SPEC


def test_a_lost_status_rebuilt_ends_pruned_if_the_trial_was_asked_to_stop():
    found = trial(phase="Pending", finalMetric=0.4).status
    assert rebuilt(found, asked_to_stop=False, now=T0, source="metrics.jsonl").phase == "Succeeded"
    pruned = rebuilt(found, asked_to_stop=True, now=T0, source="metrics.jsonl")
    assert (pruned.phase, pruned.reason, pruned.completionTime, pruned.finalMetric) == ("Pruned", "Rebuilt", T0, 0.4)
    assert pruned.message == "its status was missing: rebuilt from metrics.jsonl"
