"""Kubernetes-style conditions of a DetectionExperiment, Katib's way.

Every helper takes a list of conditions and returns a new one. Setting a condition that did not change is a
no-op; a changed reason or message with the same status keeps lastTransitionTime (it moves only when the
status does)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Sequence

from autodetect.api.v1alpha1 import Condition

# condition types
CREATED, RUNNING, SUCCEEDED, FAILED = "Created", "Running", "Succeeded", "Failed"

# reasons
EXPERIMENT_CREATED = "ExperimentCreated"
EXPERIMENT_RUNNING = "ExperimentRunning"
MAX_TRIALS_REACHED = "MaxTrialsReached"
SEARCH_SPACE_EXHAUSTED = "SearchSpaceExhausted"
TIMEOUT_REACHED = "TimeoutReached"
MAX_FAILED_TRIALS_REACHED = "MaxFailedTrialsReached"
NO_TRIAL_METRIC = "NoTrialMetric"
INVALID_SPEC = "InvalidSpec"

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
