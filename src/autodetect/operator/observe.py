"""How a trial's Job and its Pod are, in the engine's terms (a tuning.trials.Run). Pure: reads plain dicts
as the API server returns them, decides nothing (tuning.trials.step does)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable

from autodetect.tuning.trials import MISSING, Run
from autodetect.vocabulary import CANNOT_START, DEADLINE_EXCEEDED, TERMINAL_PHASES

JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")


def parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def job_pods(job: dict[str, Any], pods: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The job's pods, newest first."""
    name = job["metadata"]["name"]
    mine = [p for p in pods if any(p["metadata"].get("labels", {}).get(key) == name for key in JOB_NAME_LABELS)]
    return sorted(mine, key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True)


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or []
                 if c.get("type") == type_ and c.get("status") == "True"), None)


def _terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if terminated := (status.get("state") or {}).get("terminated"):
            return terminated
    return None


def _exited(pod: dict[str, Any] | None, since: datetime | None, reason: str = "", message: str = "") -> Run:
    terminated = _terminated(pod) if pod else None
    if terminated is None:
        return Run("exited", since, exit_code=None, reason=reason, message=message)
    pod_reason = terminated.get("reason") or ""
    return Run("exited", parse_time(terminated.get("finishedAt")) or since, exit_code=terminated.get("exitCode"),
               reason=reason or ("" if pod_reason in ("Error", "Completed") else pod_reason),
               message=terminated.get("message") or message)


def _waiting(pod: dict[str, Any], job: dict[str, Any]) -> Run:
    since = parse_time(pod["metadata"].get("creationTimestamp")) or parse_time(job["metadata"].get("creationTimestamp"))
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (status.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason") in CANNOT_START:
            return Run("waiting", since, reason=waiting["reason"], message=waiting.get("message", ""))
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False" and \
                condition.get("reason") == "Unschedulable":
            return Run("waiting", since, reason="Unschedulable", message=condition.get("message", ""))
    return Run("waiting", since)


def run_of(job: dict[str, Any] | None, pods: Iterable[dict[str, Any]]) -> Run:
    """The Run of one attempt's Job (None: there is none)."""
    if job is None:
        return MISSING
    newest = next(iter(job_pods(job, pods)), None)
    ended = parse_time((job.get("status") or {}).get("completionTime"))
    if job["metadata"].get("deletionTimestamp"):  # the operator killed it
        return Run("exited", parse_time(job["metadata"]["deletionTimestamp"]), exit_code=-9, reason="Killed")
    if _condition(job, "Complete") or _condition(job, "SuccessCriteriaMet"):
        return Run("exited", ended, exit_code=0)
    failed = _condition(job, "Failed") or _condition(job, "FailureTarget")
    if failed:
        reason = DEADLINE_EXCEEDED if failed.get("reason") == DEADLINE_EXCEEDED else ""
        return _exited(newest, parse_time(failed.get("lastTransitionTime")), reason, failed.get("message", ""))
    if newest is None:
        return Run("waiting", parse_time(job["metadata"].get("creationTimestamp")))
    phase = (newest.get("status") or {}).get("phase")
    if phase in ("Succeeded", "Failed") and not _condition(newest, "DisruptionTarget"):
        return _exited(newest, None)  # before the Job controller says so: a failure surfaces at once
    if phase == "Running":
        return Run("running")
    return _waiting(newest, job)


def wants_a_pass_at_once(plural: str, obj: dict[str, Any]) -> bool:
    """Whether this state of a trial, its Job or its pod ends the trial or keeps it from starting, so that the
    experiment's next pass must come at once (the next trial's Job is due within a second): a trial that ended, a
    run that failed, a pod that cannot start. Any other change can wait for a coalesced pass: a running trial's
    evaluation, a pod starting, and a run that exited 0 (its trainer reported the trial's end just before)."""
    if plural == "detectiontrials":
        return (obj.get("status") or {}).get("phase") in TERMINAL_PHASES
    if plural == "jobs":
        run = run_of(obj, ())
        return run.state == "exited" and run.exit_code != 0
    if plural == "pods":
        terminated = _terminated(obj)
        return (terminated or {}).get("exitCode", 0) != 0 or _waiting(obj, job=obj).reason in CANNOT_START
    return True
