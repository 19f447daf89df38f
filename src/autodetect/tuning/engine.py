"""The experiment state machine: one pure function from (experiment, its trials, the clock) to a Decision.

The local runner and the operator only carry Decisions out; every tuning decision is made here.

Semantics:
- Trials are named f"{experiment}-{index:03d}", the lowest free indices first, and the parameters of a new trial come from the
  seeded sampler fed with all existing trials, so the same state always gives the same StartTrials: a restart
  never double-starts, at worst it re-issues a start of a name that already exists.
- Trial counts and failure counts are derived from the trials on every call, never kept.
- Active trials are Pending or Running, including those already told to stop (spec.stop) whose pod still runs:
  they hold a concurrency slot and are never stopped twice.
- A stopped trial (early termination or trialTimeoutMinutes) is expected to end Pruned, keeping its metrics.
- Failures (Katib's maxFailedTrialCount): the failed attempts of a trial are its spec.attempt, plus one while
  it is Failed. Up to maxFailedTrials failed attempts are tolerated, each retried in place (same name and
  parameters, attempt+1) when a slot is free; one more fails the experiment (0 tolerates none). A failure that
  the input caused (status.reason in trials.NOT_RETRIED: a bad data set, hyperparameter or weights, an image
  that cannot be pulled) is not retried: it fails the experiment at once, with the trial's message.
- A trial's metric is its status.finalMetric, or else its best primaryMetric over its evaluations. The best
  trial is chosen among Succeeded and Pruned trials that have one (as Azure picks over completed runs);
  ties go to the earlier trial.
- Terminal checks, in this order: a failure the input caused, then the failure limit (Fail now, stop what
  runs); timeoutMinutes since the
  experiment's status.startTime (stop what runs, then Finish with the best); maxTrials reached or the grid
  exhausted, once nothing is active (Finish with the best). Finishing without any trial metric is a Fail.
- Once the experiment is Succeeded or Failed, every Decision repeats its outcome (Finish or Fail), after
  stops for trials still active: carrying an outcome out (registering the model) must be idempotent, and a
  carrier that crashed midway completes it on the next pass. Finish is only ever decided with nothing active;
  Fail stops what runs at once.
- Only spec.limits and spec.trialTemplate may change while an experiment runs: status.specFingerprint keeps a
  digest of every other spec field from the first pass, and a change to one fails the experiment (InvalidSpec,
  naming the field). The admission webhook and the local runner refuse such a change before it gets in.
- Finishing names the model the backend registers (status.model, `<experiment>-best`).
- Events say what was decided: trials started, stopping (and why), retried, ended (once each, found by
  comparing the trials with status.endedTrials), the best trial changed, the model registered, the experiment
  ended (once, on the transition).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from datetime import datetime
from typing import Any, Sequence, Union

from autodetect.api.v1alpha1 import (
    MUTABLE_SPEC_FIELDS, BestTrial, DetectionExperiment, DetectionTrial, ExperimentSpec, ExperimentStatus, TrialCounts,
)
from autodetect.errors import SpecError
from autodetect.tuning import conditions as cond
from autodetect.tuning import events as ev
from autodetect.tuning.events import Event
from autodetect.tuning.policies import decide_stops
from autodetect.tuning.samplers import Observation, suggest
from autodetect.tuning.space import parse_search_space, searched_keys, validate_for_algorithm
from autodetect.tuning.trials import NOT_RETRIED, first_line, model_name
from autodetect.vocabulary import ACTIVE_PHASES as ACTIVE, COMPLETED_PHASES as COMPLETED
from autodetect.vocabulary import ENDED_PHASES, FAILED, RUNNING, SUCCEEDED, TERMINAL_PHASES


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
    events: tuple[Event, ...] = ()


def trial_name(experiment: str, index: int) -> str:
    return f"{experiment}-{index:03d}"


def spec_fingerprint(spec: ExperimentSpec) -> dict[str, str]:
    """A digest of each spec field that may not change while the experiment runs."""
    dumped = spec.model_dump(mode="json", exclude=set(MUTABLE_SPEC_FIELDS))
    return {field: hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]
            for field, value in sorted(dumped.items())}


def changed_fields(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return [f"spec.{field}" for field in sorted(before.keys() | after.keys()) if before.get(field) != after.get(field)]


def spec_changes(old: ExperimentSpec, new: ExperimentSpec) -> list[str]:
    """The fields that a change from old to new alters and that may not change while it runs (empty: allowed)."""
    return changed_fields(spec_fingerprint(old), spec_fingerprint(new))


def metric_curve(trial: DetectionTrial, metric: str) -> list[float | None]:
    """The trial's primary metric at each evaluation, None where an evaluation lacks it."""
    return [_number(e.metrics.get(metric)) for e in sorted(trial.status.epochs, key=lambda e: e.epoch)]


def trial_metric(trial: DetectionTrial, metric: str, objective: str) -> float | None:
    return _score(trial, metric_curve(trial, metric), objective)


def failed_attempts(trials: Sequence[DetectionTrial]) -> int:
    return sum(t.spec.attempt + (t.status.phase == FAILED) for t in trials)


def count_trials(trials: Sequence[DetectionTrial]) -> TrialCounts:
    """Pending trials count as running."""
    phases = [t.status.phase for t in trials]
    return TrialCounts(total=len(trials), running=sum(p in ACTIVE for p in phases),
                       succeeded=phases.count(SUCCEEDED), pruned=phases.count("Pruned"), failed=phases.count(FAILED))


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


def at_rest(status: ExperimentStatus, runs_alive: bool) -> bool:
    """Whether only a change, not the clock, can change the experiment's next Decision: it has ended, no trial is
    active, and no trial's process or pod still runs (one that lingers is killed after a grace: a clock)."""
    return status.phase in ENDED_PHASES and status.trials.running == 0 and not runs_alive


def rejected(name: str, status: ExperimentStatus, message: str, now: datetime,
             generation: int | None = None) -> Decision:
    """An experiment whose spec is invalid (it got in without the admission webhook): Failed with reason
    InvalidSpec, naming the field, and nothing started. Once Failed it stays so, with no new Events."""
    if status.phase == FAILED:
        return Decision((Fail(status.message),), status)
    failed = status.model_copy(update={
        "phase": FAILED, "message": message, "completionTime": now, "observedGeneration": generation,
        "conditions": cond.mark_failed(cond.mark_created(status.conditions, now, generation), cond.INVALID_SPEC,
                                       message, now, generation)})
    return Decision((Fail(message),), failed, (Event(ev.EXPERIMENT_FAILED, f"{name} failed: {message}", warning=True),))


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
            "observedGeneration": self.generation, "specFingerprint": status.specFingerprint or spec_fingerprint(self.spec),
            "endedTrials": {t.metadata.name: t.status.phase for t in self.trials if t.status.phase in TERMINAL_PHASES},
            "conditions": cond.mark_created(status.conditions, now, self.generation)})

    def decide(self) -> Decision:
        if self.status.phase in ENDED_PHASES:
            return self._ended()
        try:
            space = _search_space(json.dumps(self.spec.searchSpace, sort_keys=True), self.spec.sampling.algorithm)
        except SpecError as exc:
            return self._fail(cond.INVALID_SPEC, f"spec.searchSpace{_dotted(exc.field)}: {exc.reason}")

        if changed := changed_fields(self.status.specFingerprint, spec_fingerprint(self.spec)):
            return self._fail(cond.INVALID_SPEC, f"{', '.join(changed)} changed while the experiment ran; only "
                                                 f"{' and '.join(f'spec.{f}' for f in MUTABLE_SPEC_FIELDS)} may "
                                                 "change (start a new experiment instead)")
        refused = [t for t in self.trials if t.status.phase == FAILED and t.status.reason in NOT_RETRIED]
        if refused:
            trial = refused[0]
            return self._fail(cond.TRIAL_INPUT_INVALID, f"trial {trial.metadata.name} failed on its input, which "
                                                        f"every trial shares: {trial.status.message.strip()}")
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
                   for t in self.trials if t.status.phase == FAILED][:max(free, 0)]
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
            if (limit is not None and not trial.spec.stop and trial.status.phase == RUNNING and started
                    and (self.now - started).total_seconds() >= limit * 60):
                stops[trial.metadata.name] = f"trial timeout ({_minutes(limit)}) reached"
        running = {t.metadata.name for t in self.active
                   if t.status.phase == RUNNING and not t.spec.stop} - stops.keys()
        stops |= decide_stops(self.spec.earlyTermination, self.curves, running, self.spec.objective)
        return [StopTrial(name, reason) for name, reason in sorted(stops.items())]

    def _new_trials(self, space, count: int) -> list[StartTrial]:
        history = [Observation(parameters=t.spec.hyperparameters,
                               value=self.scores[t.metadata.name] if t.status.phase in COMPLETED else None)
                   for t in self.trials]
        sampling = self.spec.sampling
        parameters = suggest(space, sampling.algorithm, sampling.seed, history, count, self.spec.objective)
        taken = {t.metadata.name for t in self.trials}
        names, index = [], 0  # the lowest free indices: a start that never got through is made again
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
            "phase": RUNNING, "message": message,
            "conditions": cond.mark_running(self.status.conditions, "Experiment is running", self.now,
                                            self.generation)})
        return self._decision(actions)

    def _finish(self, reason: str, message: str) -> Decision:
        if self.best is None:
            return self._fail(cond.NO_TRIAL_METRIC, f"{message}, and no trial produced a "
                                                    f"{self.spec.primaryMetric}")
        message = f"{message}; best trial {self.best.name} ({self.spec.primaryMetric} {self.best.metric:.4g})"
        self.status = self.status.model_copy(update={
            "phase": SUCCEEDED, "message": message, "completionTime": self.now,
            "model": model_name(self.exp.metadata.name),
            "conditions": cond.mark_succeeded(self.status.conditions, reason, message, self.now, self.generation)})
        return self._decision([Finish(self.best.name, self.best.metric)])

    def _fail(self, reason: str, message: str) -> Decision:
        self.status = self.status.model_copy(update={
            "phase": FAILED, "message": message, "completionTime": self.now,
            "conditions": cond.mark_failed(self.status.conditions, reason, message, self.now, self.generation)})
        return self._decision([*self._stop_all(f"the experiment failed: {message}"), Fail(message)])

    def _ended(self) -> Decision:
        """An ended experiment keeps its outcome, repeated so that a carrier that crashed midway completes it."""
        stored = self.exp.status
        if stored.phase == SUCCEEDED and stored.bestTrial is not None:
            self.status = self.status.model_copy(update={"bestTrial": stored.bestTrial,
                                                         "model": model_name(self.exp.metadata.name)})
            return self._decision([*self._stop_all("the experiment has ended"),
                                   Finish(stored.bestTrial.name, stored.bestTrial.metric)])
        return self._decision([*self._stop_all(f"the experiment failed: {stored.message}"), Fail(stored.message)])

    def _decision(self, actions: list[Action]) -> Decision:
        return Decision(tuple(actions), self.status, tuple(self._events(actions)))

    def _parameters(self, parameters: dict[str, Any]) -> str:
        """The model and the parameters that trials differ in (the rest is the same for all)."""
        keys = searched_keys(parse_search_space(self.spec.searchSpace))
        model = " ".join(str(parameters[k]) for k in ("model_name", "model_size") if k in parameters)
        return " ".join([model, *(f"{k}={_short(v)}" for k, v in sorted(parameters.items()) if k in keys)]).strip()

    def _events(self, actions: list[Action]) -> list[Event]:
        """What changed between the stored status and this decision, and what it does, in words."""
        stored, new, name = self.exp.status, self.status, self.exp.metadata.name
        trials = {t.metadata.name: t for t in self.trials}
        events = []
        for trial, phase in new.endedTrials.items():
            if stored.endedTrials.get(trial) != phase:
                score, message = self.scores[trial], first_line(trials[trial].status.message)
                text = f"{trial} {phase.lower()}" + (f" ({self.spec.primaryMetric} {score:.4g})" if score is not None
                                                     else "") + (f": {message}" if message else "")
                events.append(Event(ev.ENDED[phase], text, warning=phase == FAILED, trial=trial))
        for action in actions:
            if isinstance(action, StartTrial):
                events.append(Event(ev.TRIAL_STARTED, f"{action.name} started: {self._parameters(action.parameters)}",
                                    trial=action.name))
            elif isinstance(action, StopTrial):
                events.append(Event(ev.TRIAL_STOPPING, f"{action.name} stopping: {action.reason}", trial=action.name))
            elif isinstance(action, RetryTrial):
                failure = first_line(trials[action.name].status.message)
                events.append(Event(ev.TRIAL_RETRIED, f"{action.name} retried (attempt {action.attempt}) after: "
                                                      f"{failure}", warning=True, trial=action.name))
        best = new.bestTrial
        if best is not None and (stored.bestTrial is None or stored.bestTrial.name != best.name):
            events.append(Event(ev.BEST_TRIAL_CHANGED, f"{best.name} is the best trial "
                                                       f"({self.spec.primaryMetric} {best.metric:.4g})", trial=best.name))
        if new.phase != stored.phase and new.phase in ENDED_PHASES:
            if new.phase == SUCCEEDED:
                events.append(Event(ev.MODEL_REGISTERED, f"{new.model} registered from trial {best.name}",
                                    trial=best.name))
            events.append(Event(ev.EXPERIMENT_SUCCEEDED if new.phase == SUCCEEDED else ev.EXPERIMENT_FAILED,
                                f"{name} {new.phase.lower()}: {new.message}", warning=new.phase == FAILED))
        return events


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


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _minutes(value: float) -> str:
    return f"{value:g} min"


def _dotted(field_path: str) -> str:
    return field_path if field_path.startswith("[") else f".{field_path}"
