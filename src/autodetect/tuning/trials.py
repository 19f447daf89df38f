"""What happens to one trial, as pure functions that both backends carry out: the resource a StartTrial
makes, a retry's reset, a stop request, and `step`, the one rule for a trial given how its process or pod is
(launch it, kill it, settle its status, or wait).

A backend describes a trial's process or pod as a `Run`:
- missing: nothing runs it (never started, deleted, or a local run that was restarted);
- waiting: it exists but its container has not started (reason: the pod's, e.g. ImagePullBackOff, Unschedulable);
- running;
- exited: it ended, with its exit code and the reason the backend knows (OOMKilled, DeadlineExceeded, Interrupted
  for the backend's own Ctrl-C), and a message (the log tail, or the pod's termination message).

Rules of `step`, in this order:
- A trial that ended (Succeeded, Pruned, Failed) is left alone, except: a Failed that the backend's interruption
  caused goes back to Pending; a Pruned whose message lacks its stop reason gets it; a run still alive long
  after the trial ended is killed.
- An interrupted run puts its trial back to Pending (not a failure: it resumes from its checkpoint).
- A trial asked to stop ends Pruned when its run is gone (keeping its metrics), and its run is killed once it has
  had stop_grace_s to stop by itself.
- An active trial with no run is launched.
- A run waiting for a reason in CANNOT_START marks the trial's Started condition False; after start_grace_s it
  fails the trial (a cause in the trial template, such as an image that cannot be pulled, is not retried).
- A run that exited without the trial ending: DeadlineExceeded ends it Pruned (its time is up, its metrics
  stand); the trainer's bad-input exit code fails it with reason InvalidInput (not retried); any other exit
  fails it with the reason and the log's last line first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Union

from autodetect.api.v1alpha1 import DetectionExperiment, DetectionModel, DetectionTrial, TrialSpec, TrialStatus
from autodetect.errors import SpecError
from autodetect.tuning import conditions as cond
from autodetect.tuning.events import TRIAL_CANNOT_START, TRIAL_KILLED, Event
from autodetect.vocabulary import (
    CANNOT_START, CANNOT_START_INPUT, DEADLINE_EXCEEDED, ERROR, EXIT_BAD_INPUT, EXPERIMENT_LABEL, FAILED,
    INTERRUPTED, INVALID_INPUT, PENDING, PRUNED, REBUILT, SUCCEEDED, TERMINAL_PHASES, TRIAL_LABEL,
)

STOP_GRACE_S = 60.0  # a trainer asked to stop gets this long to finish its epoch before it is killed
START_GRACE_S = 600.0  # a pod that cannot start gets this long before its trial fails
NOT_RETRIED = (INVALID_INPUT, *CANNOT_START_INPUT)  # trial failures that the input caused


@dataclass(frozen=True)
class Run:
    state: Literal["missing", "waiting", "running", "exited"]
    since: datetime | None = None  # when it was created (waiting) or ended (exited)
    exit_code: int | None = None
    reason: str = ""
    message: str = ""

    @property
    def alive(self) -> bool:
        return self.state in ("waiting", "running")


MISSING = Run("missing")


@dataclass(frozen=True)
class Launch:
    """Start the trial's process or pod (for its current attempt)."""


@dataclass(frozen=True)
class Kill:
    reason: str
    event: Event


@dataclass(frozen=True)
class Settle:
    """Write this status: the trial's run is gone, or cannot start."""

    status: TrialStatus
    event: Event | None = None


Step = Union[Launch, Kill, Settle, None]


def first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else ""


def new_trial(experiment: DetectionExperiment, name: str, parameters: dict) -> DetectionTrial:
    """The DetectionTrial of a StartTrial: Pending, carrying all a trainer needs (no link back is read)."""
    spec = experiment.spec
    metadata = {"name": name, "labels": {EXPERIMENT_LABEL: experiment.metadata.name}}
    if experiment.metadata.namespace:
        metadata["namespace"] = experiment.metadata.namespace
    return DetectionTrial(metadata=metadata, spec=TrialSpec(
        experiment=experiment.metadata.name, hyperparameters=parameters, dataset=spec.dataset,
        primaryMetric=spec.primaryMetric, artifacts=spec.artifacts))


def model_name(experiment: str) -> str:
    """The DetectionModel an experiment registers its best trial as."""
    return f"{experiment}-best"


def registered_model(experiment: DetectionExperiment, trial: DetectionTrial,
                     artifact_uri: str | None = None) -> DetectionModel:
    """The DetectionModel of an experiment's best trial, from what the trial reported of its artifact (the
    backend may have copied the artifact: artifact_uri then says where). Not owned by the experiment: a
    registered model outlives its run."""
    name, status = trial.metadata.name, trial.status
    if not status.artifactUri or status.model is None:
        raise SpecError(f"trials.{name}.status.artifactUri", "the best trial left no artifact")
    metadata = {"name": model_name(experiment.metadata.name),
                "labels": {EXPERIMENT_LABEL: experiment.metadata.name, TRIAL_LABEL: name}}
    if experiment.metadata.namespace:
        metadata["namespace"] = experiment.metadata.namespace
    return DetectionModel(metadata=metadata, spec={
        "artifactUri": artifact_uri or status.artifactUri, "format": status.model.format,
        "classes": status.model.classes, "inputSize": status.model.inputSize, "metrics": status.model.metrics,
        "lineage": {"experiment": experiment.metadata.name, "trial": name,
                    "hyperparameters": trial.spec.hyperparameters}})


def retried(trial: DetectionTrial, attempt: int, now: datetime) -> DetectionTrial:
    """The same trial again, attempt+1, from its last checkpoint: its evaluations so far are kept."""
    failure = first_line(trial.status.message)
    status = cond.mark_trial(trial.status, PENDING, now,
                             message=f"attempt {attempt}; attempt {attempt - 1} failed: {failure}")
    return trial.model_copy(update={"spec": trial.spec.model_copy(update={"attempt": attempt}),
                                    "status": status.model_copy(update={"startTime": None, "artifactUri": None,
                                                                        "model": None})})


def rebuilt(status: TrialStatus, asked_to_stop: bool, now: datetime, source: str) -> TrialStatus:
    """The end of a trial whose written status was lost, rebuilt from what its trainer left once it had ended (its
    evaluations and its artifact): Pruned if it had been asked to stop, else Succeeded."""
    return cond.mark_trial(status, PRUNED if asked_to_stop else SUCCEEDED, now, reason=REBUILT,
                           message=f"its status was missing: rebuilt from {source}")


def stopped(trial: DetectionTrial, reason: str, now: datetime) -> DetectionTrial:
    """The trial asked to stop (its spec.stop), once: a second request keeps the first one's reason and time."""
    if trial.spec.stop:
        return trial
    return trial.model_copy(update={"spec": trial.spec.model_copy(
        update={"stop": True, "stopReason": reason, "stopTime": now})})


def step(trial: DetectionTrial, run: Run, now: datetime, stop_grace_s: float = STOP_GRACE_S,
         start_grace_s: float = START_GRACE_S) -> Step:
    status, spec, name = trial.status, trial.spec, trial.metadata.name
    interrupted = run.state == "exited" and run.reason == INTERRUPTED
    if status.phase in TERMINAL_PHASES:
        if interrupted and status.phase == FAILED:
            return _interrupted(trial, now)
        if status.phase == PRUNED and spec.stopReason and not status.message.startswith(spec.stopReason):
            message = f"{spec.stopReason}; {status.message}" if status.message else spec.stopReason
            return Settle(status.model_copy(update={"message": message}))
        ended = status.completionTime
        if run.alive and ended is not None and _past(ended, stop_grace_s, now):
            return _kill(name, f"{name} ended {status.phase} but its process still runs")
        return None
    if interrupted:
        return _interrupted(trial, now)
    if spec.stop:
        if run.alive:
            overdue = spec.stopTime is None or _past(spec.stopTime, stop_grace_s, now)
            return _kill(name, f"{name} did not stop within {stop_grace_s:.0f}s of being asked") if overdue else None
        return _end(trial, PRUNED, now, message=spec.stopReason + _exit_note(run, stop_grace_s))
    if run.state == "missing":
        return Launch()
    if run.state == "waiting" and run.reason in CANNOT_START:
        message = f"its pod cannot start: {run.reason}" + (f": {run.message}" if run.message else "")
        if run.since is not None and _past(run.since, start_grace_s, now):
            return _end(trial, FAILED, now, reason=run.reason,
                        message=f"{message} (for more than {start_grace_s / 60:g} min)")
        waiting = cond.mark_cannot_start(status, run.reason, message, now)
        if waiting == status:
            return None
        return Settle(waiting, Event(TRIAL_CANNOT_START, f"{name}: {message}", warning=True, trial=name))
    if run.state != "exited":
        return None
    if run.reason == DEADLINE_EXCEEDED:
        return _end(trial, PRUNED, now, reason=DEADLINE_EXCEEDED,
                    message=f"trial timeout: {run.message or 'the pod reached its deadline'}")
    if run.exit_code == EXIT_BAD_INPUT:
        return _end(trial, FAILED, now, reason=INVALID_INPUT, message=run.message.strip() or "bad input")
    tail = run.message.strip().splitlines()
    head = f"the trainer exited with code {run.exit_code}" + (f" ({run.reason})" if run.reason else "")
    return _end(trial, FAILED, now, reason=run.reason or ERROR,
                message="\n".join([head + (f": {tail[-1]}" if tail else ""), *tail[:-1]]))


def _end(trial: DetectionTrial, phase: str, now: datetime, *, reason: str = "", message: str) -> Settle:
    """The trial ended (its Event comes with the experiment's next Decision, as every trial's end does)."""
    return Settle(cond.mark_trial(trial.status, phase, now, reason=reason, message=message))


def _interrupted(trial: DetectionTrial, now: datetime) -> Settle:
    done = trial.status.epochs[-1].epoch if trial.status.epochs else 0
    return Settle(cond.mark_trial(trial.status, PENDING, now, reason=INTERRUPTED,
                                  message=f"interrupted after epoch {done}; it resumes from its checkpoint"))


def _kill(name: str, reason: str) -> Kill:
    return Kill(reason, Event(TRIAL_KILLED, reason, warning=True, trial=name))


def _exit_note(run: Run, stop_grace_s: float) -> str:
    if run.state != "exited" or run.exit_code is None:
        return ""
    if run.exit_code < 0 or run.reason == "Killed":
        return f" (killed: it did not stop within {stop_grace_s:.0f}s)"
    return f" (the trainer then exited with code {run.exit_code})" if run.exit_code else ""


def _past(moment: datetime, seconds: float, now: datetime) -> bool:
    return (now - moment).total_seconds() >= seconds
