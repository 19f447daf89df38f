"""The Events of a Decision: what a backend reports of each decision, in the same words on both backends
(a Kubernetes Event on the experiment; a line of `autodetect run`'s output)."""

from __future__ import annotations

from dataclasses import dataclass

TRIAL_STARTED = "TrialStarted"
TRIAL_STOPPING = "TrialStopping"
TRIAL_RETRIED = "TrialRetried"
TRIAL_SUCCEEDED = "TrialSucceeded"
TRIAL_PRUNED = "TrialPruned"
TRIAL_FAILED = "TrialFailed"
TRIAL_CANNOT_START = "TrialCannotStart"
TRIAL_KILLED = "TrialKilled"
BEST_TRIAL_CHANGED = "BestTrialChanged"
MODEL_REGISTERED = "ModelRegistered"
EXPERIMENT_SUCCEEDED = "ExperimentSucceeded"
EXPERIMENT_FAILED = "ExperimentFailed"

ENDED = {"Succeeded": TRIAL_SUCCEEDED, "Pruned": TRIAL_PRUNED, "Failed": TRIAL_FAILED}


@dataclass(frozen=True)
class Event:
    reason: str
    message: str
    warning: bool = False
    trial: str | None = None  # the trial it is about, where it is about one
