"""The experiment state machine: one pure function from (experiment, its trials, the clock) to a Decision.

The local runner and the operator only carry Decisions out; every tuning decision is made here.

Semantics:
- Trials are named f"{experiment}-{index:03d}" from index 0, and the parameters of a new trial come from the
  seeded sampler fed with all existing trials, so the same state always gives the same StartTrials: a restart
  never double-starts, at worst it re-issues a start of a name that already exists.
- Trial counts and failure counts are derived from the trials on every call, never kept.
- Active trials are Pending or Running, including those already told to stop (spec.stop) whose pod still runs:
  they hold a concurrency slot and are never stopped twice.
- A stopped trial (early termination or trialTimeoutMinutes) is expected to end Pruned, keeping its metrics.
- Failures (Katib's maxFailedTrialCount): the failed attempts of a trial are its spec.attempt, plus one while
  it is Failed. Up to maxFailedTrials failed attempts are tolerated, each retried in place (same name and
  parameters, attempt+1) when a slot is free; one more fails the experiment (0 tolerates none).
- A trial's metric is its status.finalMetric, or else its best primaryMetric over its evaluations. The best
  trial is chosen among Succeeded and Pruned trials that have one (as Azure picks over completed runs);
  ties go to the earlier trial.
- Terminal checks, in this order: the failure limit (Fail now, stop what runs); timeoutMinutes since the
  experiment's status.startTime (stop what runs, then Finish with the best); maxTrials reached or the grid
  exhausted, once nothing is active (Finish with the best). Finishing without any trial metric is a Fail.
- Once the experiment is Succeeded or Failed, every Decision repeats its outcome (Finish or Fail), after
  stops for trials still active: carrying an outcome out (registering the model) must be idempotent, and a
  carrier that crashed midway completes it on the next pass. Finish is only ever decided with nothing active;
  Fail stops what runs at once.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from datetime import datetime
from typing import Any, Sequence, Union

from autodetect.api.v1alpha1 import BestTrial, DetectionExperiment, DetectionTrial, ExperimentStatus, TrialCounts
from autodetect.errors import SpecError
from autodetect.tuning import conditions as cond
from autodetect.tuning.policies import decide_stops
from autodetect.tuning.samplers import Observation, suggest
from autodetect.tuning.space import parse_search_space, validate_for_algorithm

ACTIVE = ("Pending", "Running")
COMPLETED = ("Succeeded", "Pruned")


@dataclass(frozen=True)
class StartTrial:
    name: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class StopTrial:
    name: str
    reason: str


@dataclass(frozen=True)
class RetryTrial:
    name: str
    attempt: int


@dataclass(frozen=True)
class Finish:
    trial: str
    metric: float


@dataclass(frozen=True)
class Fail:
    reason: str


Action = Union[StartTrial, StopTrial, RetryTrial, Finish, Fail]


@dataclass(frozen=True)
class Decision:
    actions: tuple[Action, ...]
    status: ExperimentStatus


def trial_name(experiment: str, index: int) -> str:
    return f"{experiment}-{index:03d}"


def metric_curve(trial: DetectionTrial, metric: str) -> list[float | None]:
    """The trial's primary metric at each evaluation, None where an evaluation lacks it."""
    return [_number(e.metrics.get(metric)) for e in sorted(trial.status.epochs, key=lambda e: e.epoch)]


def trial_metric(trial: DetectionTrial, metric: str, objective: str) -> float | None:
    return _score(trial, metric_curve(trial, metric), objective)


def failed_attempts(trials: Sequence[DetectionTrial]) -> int:
    return sum(t.spec.attempt + (t.status.phase == "Failed") for t in trials)


def count_trials(trials: Sequence[DetectionTrial]) -> TrialCounts:
    """Pending trials count as running."""
    phases = [t.status.phase for t in trials]
    return TrialCounts(total=len(trials), running=sum(p in ACTIVE for p in phases),
                       succeeded=phases.count("Succeeded"), pruned=phases.count("Pruned"),
                       failed=phases.count("Failed"))


def best_trial(trials: Sequence[DetectionTrial], metric: str, objective: str) -> BestTrial | None:
    return _best_of(trials, {t.metadata.name: trial_metric(t, metric, objective) for t in trials}, objective)


def _score(trial: DetectionTrial, curve: list[float | None], objective: str) -> float | None:
    if (final := _number(trial.status.finalMetric)) is not None:
        return final
    values = [v for v in curve if v is not None]
    return (max if objective == "maximize" else min)(values) if values else None


def _best_of(trials: Sequence[DetectionTrial], scores: dict[str, float | None], objective: str) -> BestTrial | None:
    best = None
    for trial in trials:
        value = scores[trial.metadata.name] if trial.status.phase in COMPLETED else None
        if value is not None and (best is None or (value > best.metric if objective == "maximize"
                                                   else value < best.metric)):
            best = BestTrial(name=trial.metadata.name, metric=value, hyperparameters=trial.spec.hyperparameters,
                             artifactUri=trial.status.artifactUri)
    return best


def reconcile(experiment: DetectionExperiment, trials: Sequence[DetectionTrial], now: datetime) -> Decision:
    return _Reconcile(experiment, trials, now).decide()


class _Reconcile:
    """One reconcile pass; holds the derived facts so each rule reads as one short method."""

    def __init__(self, experiment: DetectionExperiment, trials: Sequence[DetectionTrial], now: datetime):
        self.exp, self.spec, self.now = experiment, experiment.spec, now
        self.limits = self.spec.limits
        self.trials = sorted(trials, key=lambda t: t.metadata.name)
        self.active = [t for t in self.trials if t.status.phase in ACTIVE]
        self.generation = getattr(experiment.metadata, "generation", None)
        self.curves = {t.metadata.name: metric_curve(t, self.spec.primaryMetric) for t in self.trials}
        self.scores = {t.metadata.name: _score(t, self.curves[t.metadata.name], self.spec.objective)
                       for t in self.trials}
        self.best = _best_of(self.trials, self.scores, self.spec.objective)
        status = experiment.status
        self.status = status.model_copy(update={
            "startTime": status.startTime or now, "trials": count_trials(self.trials), "bestTrial": self.best,
            "conditions": cond.mark_created(status.conditions, now, self.generation)})

    def decide(self) -> Decision:
        if self.status.phase in ("Succeeded", "Failed"):
            return self._ended()
        try:
            space = _search_space(json.dumps(self.spec.searchSpace, sort_keys=True), self.spec.sampling.algorithm)
        except SpecError as exc:
            return self._fail(cond.INVALID_SPEC, f"spec.searchSpace{_dotted(exc.field)}: {exc.reason}")

        failures = failed_attempts(self.trials)
        if failures > self.limits.maxFailedTrials:
            return self._fail(cond.MAX_FAILED_TRIALS_REACHED,
                              f"{failures} failed trial attempts, more than maxFailedTrials "
                              f"({self.limits.maxFailedTrials})")
        if self._timed_out():
            stops = self._stop_all(f"experiment timeout ({_minutes(self.limits.timeoutMinutes)}) reached")
            if self.active:
                return self._running(stops, f"timeout reached, waiting for {len(self.active)} trial(s) to stop")
            return self._finish(cond.TIMEOUT_REACHED,
                                f"timeoutMinutes ({_minutes(self.limits.timeoutMinutes)}) reached")

        stops = self._trial_stops()
        free = self.limits.maxConcurrentTrials - len(self.active)
        retries = [RetryTrial(t.metadata.name, t.spec.attempt + 1)
                   for t in self.trials if t.status.phase == "Failed"][:max(free, 0)]
        free -= len(retries)
        wanted = min(free, self.limits.maxTrials - len(self.trials))
        starts = self._new_trials(space, wanted) if wanted > 0 else []
        exhausted = wanted > 0 and len(starts) < wanted

        if not (self.active or retries or starts):
            if len(self.trials) >= self.limits.maxTrials:
                return self._finish(cond.MAX_TRIALS_REACHED, f"maxTrials ({self.limits.maxTrials}) reached")
            if exhausted:
                return self._finish(cond.SEARCH_SPACE_EXHAUSTED,
                                    f"the search space is exhausted after {len(self.trials)} trials")
        counts = self.status.trials
        return self._running([*stops, *retries, *starts],
                             f"{counts.total} trials: {counts.running} running, {counts.succeeded} succeeded, "
                             f"{counts.pruned} pruned, {counts.failed} failed")

    # --- rules ---------------------------------------------------------------------------

    def _timed_out(self) -> bool:
        limit = self.limits.timeoutMinutes
        return limit is not None and (self.now - self.status.startTime).total_seconds() >= limit * 60

    def _trial_stops(self) -> list[StopTrial]:
        """Trials over trialTimeoutMinutes, then those the early-termination policy prunes."""
        stops = {}
        limit = self.limits.trialTimeoutMinutes
        for trial in self.active:
            started = trial.status.startTime
            if (limit is not None and not trial.spec.stop and trial.status.phase == "Running" and started
                    and (self.now - started).total_seconds() >= limit * 60):
                stops[trial.metadata.name] = f"trial timeout ({_minutes(limit)}) reached"
        running = {t.metadata.name for t in self.active
                   if t.status.phase == "Running" and not t.spec.stop} - stops.keys()
        stops |= decide_stops(self.spec.earlyTermination, self.curves, running, self.spec.objective)
        return [StopTrial(name, reason) for name, reason in sorted(stops.items())]

    def _new_trials(self, space, count: int) -> list[StartTrial]:
        history = [Observation(parameters=t.spec.hyperparameters,
                               value=self.scores[t.metadata.name] if t.status.phase in COMPLETED else None)
                   for t in self.trials]
        sampling = self.spec.sampling
        parameters = suggest(space, sampling.algorithm, sampling.seed, history, count, self.spec.objective)
        taken = {t.metadata.name for t in self.trials}
        names, index = [], len(self.trials)
        while len(names) < len(parameters):
            if (name := trial_name(self.exp.metadata.name, index)) not in taken:
                names.append(name)
            index += 1
        return [StartTrial(name, dict(p)) for name, p in zip(names, parameters)]

    def _stop_all(self, reason: str) -> list[StopTrial]:
        return [StopTrial(t.metadata.name, reason) for t in self.active if not t.spec.stop]

    # --- outcomes ------------------------------------------------------------------------

    def _running(self, actions: list[Action], message: str) -> Decision:
        self.status = self.status.model_copy(update={
            "phase": "Running", "message": message,
            "conditions": cond.mark_running(self.status.conditions, "Experiment is running", self.now,
                                            self.generation)})
        return self._decision(actions)

    def _finish(self, reason: str, message: str) -> Decision:
        if self.best is None:
            return self._fail(cond.NO_TRIAL_METRIC, f"{message}, and no trial produced a "
                                                    f"{self.spec.primaryMetric}")
        message = f"{message}; best trial {self.best.name} ({self.spec.primaryMetric} {self.best.metric:.4g})"
        self.status = self.status.model_copy(update={
            "phase": "Succeeded", "message": message, "completionTime": self.now,
            "conditions": cond.mark_succeeded(self.status.conditions, reason, message, self.now, self.generation)})
        return self._decision([Finish(self.best.name, self.best.metric)])

    def _fail(self, reason: str, message: str) -> Decision:
        self.status = self.status.model_copy(update={
            "phase": "Failed", "message": message, "completionTime": self.now,
            "conditions": cond.mark_failed(self.status.conditions, reason, message, self.now, self.generation)})
        return self._decision([*self._stop_all(f"the experiment failed: {message}"), Fail(message)])

    def _ended(self) -> Decision:
        """An ended experiment keeps its outcome, repeated so that a carrier that crashed midway completes it."""
        stored = self.exp.status
        if stored.phase == "Succeeded" and stored.bestTrial is not None:
            self.status = self.status.model_copy(update={"bestTrial": stored.bestTrial})
            return self._decision([*self._stop_all("the experiment has ended"),
                                   Finish(stored.bestTrial.name, stored.bestTrial.metric)])
        return self._decision([*self._stop_all(f"the experiment failed: {stored.message}"), Fail(stored.message)])

    def _decision(self, actions: list[Action]) -> Decision:
        return Decision(tuple(actions), self.status)


@lru_cache(maxsize=32)
def _search_space(blocks_json: str, algorithm: str):
    """The parsed, validated search space; parsed once per distinct spec, not on every reconcile."""
    space = parse_search_space(json.loads(blocks_json))
    validate_for_algorithm(space, algorithm)
    return space


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def _minutes(value: float) -> str:
    return f"{value:g} min"


def _dotted(field_path: str) -> str:
    return field_path if field_path.startswith("[") else f".{field_path}"
