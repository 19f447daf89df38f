"""Kubernetes-style conditions of a DetectionExperiment and a DetectionTrial, Katib's way.

Every helper takes a list of conditions and returns a new one. Setting a condition that did not change is a
no-op; a changed reason or message with the same status keeps lastTransitionTime (it moves only when the
status does)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Sequence

from autodetect.api.v1alpha1 import Condition, TrialStatus
from autodetect.vocabulary import PENDING, PRUNED as PRUNED_PHASE, RUNNING as RUNNING_PHASE
from autodetect.vocabulary import TERMINAL_PHASES

# condition types (a trial's are Running, Started, and the terminal phase it ended in: Succeeded, Pruned, Failed)
CREATED, RUNNING, SUCCEEDED, FAILED = "Created", "Running", "Succeeded", "Failed"
PRUNED = PRUNED_PHASE
STARTED = "Started"  # False while the trial's pod cannot start, with the pod's reason

# reasons
EXPERIMENT_CREATED = "ExperimentCreated"
EXPERIMENT_RUNNING = "ExperimentRunning"
MAX_TRIALS_REACHED = "MaxTrialsReached"
SEARCH_SPACE_EXHAUSTED = "SearchSpaceExhausted"
TIMEOUT_REACHED = "TimeoutReached"
MAX_FAILED_TRIALS_REACHED = "MaxFailedTrialsReached"
NO_TRIAL_METRIC = "NoTrialMetric"
INVALID_SPEC = "InvalidSpec"
TRIAL_INPUT_INVALID = "TrialInputInvalid"
TRIAL_RUNNING = "TrialRunning"
TRIAL_STARTED = "TrialStarted"
TRIAL_RETRIED = "TrialRetried"
TRIAL_REASONS = {"Succeeded": "TrialSucceeded", "Pruned": "TrialPruned", "Failed": "TrialFailed"}

Status = Literal["True", "False", "Unknown"]


def get_condition(conditions: Sequence[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: Sequence[Condition], type_: str) -> bool:
    condition = get_condition(conditions, type_)
    return condition is not None and condition.status == "True"


def set_condition(conditions: Sequence[Condition], type_: str, status: Status, reason: str, message: str,
                  now: datetime, generation: int | None = None) -> list[Condition]:
    current = get_condition(conditions, type_)
    if current is None:
        return [*conditions, Condition(type=type_, status=status, reason=reason, message=message,
                                       lastTransitionTime=now, observedGeneration=generation)]
    if (current.status, current.reason, current.message, current.observedGeneration) == (
            status, reason, message, generation):
        return list(conditions)
    since = current.lastTransitionTime if current.status == status else now
    new = Condition(type=type_, status=status, reason=reason, message=message, lastTransitionTime=since,
                    observedGeneration=generation)
    return [new if c.type == type_ else c for c in conditions]


def mark_created(conditions: Sequence[Condition], now: datetime, generation: int | None = None) -> list[Condition]:
    return set_condition(conditions, CREATED, "True", EXPERIMENT_CREATED, "Experiment is created", now, generation)


def mark_running(conditions: Sequence[Condition], message: str, now: datetime,
                 generation: int | None = None) -> list[Condition]:
    return set_condition(conditions, RUNNING, "True", EXPERIMENT_RUNNING, message, now, generation)


def mark_succeeded(conditions: Sequence[Condition], reason: str, message: str, now: datetime,
                   generation: int | None = None) -> list[Condition]:
    return set_condition(_stop_running(conditions, now, generation), SUCCEEDED, "True", reason, message, now,
                         generation)


def mark_failed(conditions: Sequence[Condition], reason: str, message: str, now: datetime,
                generation: int | None = None) -> list[Condition]:
    return set_condition(_stop_running(conditions, now, generation), FAILED, "True", reason, message, now,
                         generation)


def _stop_running(conditions: Sequence[Condition], now: datetime, generation: int | None) -> list[Condition]:
    running = get_condition(conditions, RUNNING)
    if running is None or running.status != "True":
        return list(conditions)
    return set_condition(conditions, RUNNING, "False", running.reason, running.message, now, generation)


def is_created(conditions: Sequence[Condition]) -> bool:
    return is_true(conditions, CREATED)


def is_running(conditions: Sequence[Condition]) -> bool:
    return is_true(conditions, RUNNING)


def is_succeeded(conditions: Sequence[Condition]) -> bool:
    return is_true(conditions, SUCCEEDED)


def is_failed(conditions: Sequence[Condition]) -> bool:
    return is_true(conditions, FAILED)


def is_completed(conditions: Sequence[Condition]) -> bool:
    return is_succeeded(conditions) or is_failed(conditions)


def mark_trial(status: TrialStatus, phase: str, now: datetime, *, reason: str = "", message: str = "") -> TrialStatus:
    """The trial's status in a new phase, with its conditions, reason, message and times to match.

    Running starts the clock (startTime, kept across a resume); a terminal phase stops it; Pending (a retry,
    an interrupted run) clears the end so that the trial can run again."""
    conditions = list(status.conditions)
    update: dict = {"phase": phase, "reason": reason, "message": message}
    if phase == RUNNING_PHASE:
        conditions = set_condition(conditions, RUNNING, "True", TRIAL_RUNNING, "the trainer is running", now)
        conditions = set_condition(conditions, STARTED, "True", TRIAL_STARTED, "the trial's process is running", now)
        update |= {"startTime": status.startTime or now, "completionTime": None}
    elif phase in TERMINAL_PHASES:
        conditions = _stop_running(conditions, now, None)
        conditions = set_condition(conditions, phase, "True", reason or TRIAL_REASONS[phase], message, now)
        update |= {"completionTime": now}
    elif phase == PENDING:
        conditions = _stop_running(conditions, now, None)
        for ended in TERMINAL_PHASES:
            if is_true(conditions, ended):
                conditions = set_condition(conditions, ended, "False", TRIAL_RETRIED, message, now)
        update |= {"completionTime": None, "finalMetric": None}
    return status.model_copy(update=update | {"conditions": conditions})


def mark_cannot_start(status: TrialStatus, reason: str, message: str, now: datetime) -> TrialStatus:
    """A trial whose pod waits and cannot start (an image that cannot be pulled, no node that fits)."""
    conditions = set_condition(status.conditions, STARTED, "False", reason, message, now)
    return status.model_copy(update={"conditions": conditions, "reason": reason, "message": message})
