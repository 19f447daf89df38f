"""One reconcile pass of one DetectionExperiment on the cluster, level-triggered: read the experiment and its
trials, and their Jobs and Pods as the watches last delivered them (operator.watched); carry out each trial's step
and the engine's Decision; post the Events; write the experiment's status once. It keeps no state of its own
between passes: a restarted or a second operator sees the same truth."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable
from datetime import datetime, timezone

from autodetect.api import DetectionExperiment, DetectionTrial, parse_resource
from autodetect.api.v1alpha1 import ExperimentStatus
from autodetect.errors import SpecError
from autodetect.operator import builders
from autodetect.operator.admission import check_experiment
from autodetect.operator.kube import EXPERIMENTS, JOBS, PODS, TRIALS, Api
from autodetect.operator.observe import run_of
from autodetect.operator.watched import WatchedRuns
from autodetect.tuning.engine import Decision, Finish, RetryTrial, StartTrial, StopTrial, at_rest, reconcile, rejected
from autodetect.tuning.events import Event
from autodetect.tuning.trials import START_GRACE_S, Kill, Launch, Settle, new_trial, registered_model, retried, step
from autodetect.tuning.trials import stopped
from autodetect.vocabulary import EXPERIMENT_LABEL, FAILED

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    pods: builders.TrialPodSettings = builders.TrialPodSettings()
    start_grace_s: float = START_GRACE_S
    instance: str = "autodetect-operator"


@dataclass
class Outcome:
    phase: str | None  # None: the object is gone
    events: list[Event]
    at_rest: bool = False  # only a change can change the next pass: no timer needed


def now() -> datetime:
    return datetime.now(timezone.utc)


class ParsedTrials:
    """The typed trials of one experiment's loop, each state (uid and resourceVersion) validated once, not on every
    pass (a pass only reads them, or makes changed copies)."""

    def __init__(self):
        self._trials: dict[str, tuple[str, DetectionTrial]] = {}  # uid -> (resourceVersion, the typed trial)

    def __call__(self, obj: dict) -> DetectionTrial:
        meta = obj["metadata"]
        cached = self._trials.get(meta["uid"])
        if cached is None or cached[0] != meta["resourceVersion"]:
            cached = self._trials[meta["uid"]] = (meta["resourceVersion"], parse_resource(obj, DetectionTrial))
        return cached[1]

    def clear(self) -> None:
        self._trials.clear()


class ExperimentPass:
    def __init__(self, api: Api, runs: WatchedRuns, namespace: str, name: str, settings: Settings,
                 post: Callable[[Event, dict], None], parsed: ParsedTrials, clock=now):
        self.api, self.runs, self.namespace, self.name, self.settings = api, runs, namespace, name, settings
        self.parsed, self.clock = parsed, clock
        self.post = post  # an Event about an object, to be posted (runtime.EventPoster: the pass does not wait)
        self.events: list[Event] = []
        self.runs_alive = False  # whether a trial's Job still runs a pod (or may start one)

    def run(self) -> Outcome:
        obj = self.api.get(EXPERIMENTS, self.namespace, self.name)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return Outcome(None, [])  # deleted: its trials and Jobs go with it (ownerReferences)
        try:
            experiment = check_experiment(obj)
        except SpecError as exc:
            stored = ExperimentStatus.model_validate(obj.get("status") or {})
            return self._write(obj, stored, rejected(self.name, stored, str(exc), self.clock(),
                                                     obj["metadata"].get("generation")))
        selector = {EXPERIMENT_LABEL: self.name}
        trial_objects = {t["metadata"]["name"]: t for t in self.api.list(TRIALS, self.namespace, selector)}
        if not self.runs.listed(self.namespace, self.name):
            self.runs.fill(self.namespace, self.name, self.api.list(JOBS, self.namespace, selector),
                           self.api.list(PODS, self.namespace, selector))
        jobs = {j["metadata"]["name"]: j for j in self.runs.of(JOBS.plural, self.namespace, self.name)}
        pods = self.runs.of(PODS.plural, self.namespace, self.name)
        trials = [self._step(experiment, self.parsed(t), t, jobs, pods) for t in trial_objects.values()]
        decision = reconcile(experiment, trials, self.clock())
        self._carry_out(experiment, obj, decision, {t.metadata.name: t for t in trials}, trial_objects)
        return self._write(obj, experiment.status, decision)

    def _write(self, obj: dict, stored: ExperimentStatus, decision: Decision) -> Outcome:
        """The Events, then the status, once. What was carried out is said even when the status write then fails
        (a conflict: the pass is made again, and an Event of a status change may then be said twice)."""
        self.events += decision.events
        for event in self.events:
            self.post(event, obj)
        if decision.status != stored:
            self.api.replace_status(builders.with_status(obj, decision.status))
        resting = at_rest(decision.status, self.runs_alive)
        if resting:
            self.parsed.clear()  # no pass may come for long
        return Outcome(decision.status.phase, self.events, resting)

    # --- each trial's step ----------------------------------------------------------------------------

    def _step(self, experiment: DetectionExperiment, trial: DetectionTrial, obj: dict, jobs: dict,
              pods: list[dict]) -> DetectionTrial:
        job = jobs.get(builders.job_name(trial.metadata.name, trial.spec.attempt))
        run = run_of(job, pods)
        self.runs_alive |= run.alive
        outcome = step(trial, run, self.clock(), start_grace_s=self.settings.start_grace_s)
        if isinstance(outcome, Launch):
            self._launch(obj, experiment)
        elif isinstance(outcome, Kill):
            self.events.append(outcome.event)
            self.api.delete(JOBS, self.namespace, job["metadata"]["name"])
        elif isinstance(outcome, Settle):
            if outcome.event is not None:
                self.events.append(outcome.event)
            self.api.replace_status(builders.with_status(obj, outcome.status))
            return trial.model_copy(update={"status": outcome.status})
        return trial

    # --- the engine's decision ------------------------------------------------------------------------

    def _carry_out(self, experiment: DetectionExperiment, obj: dict, decision: Decision,
                   trials: dict[str, DetectionTrial], trial_objects: dict[str, dict]) -> None:
        now = self.clock()
        for action in decision.actions:
            if isinstance(action, StartTrial):
                created = self.api.create(builders.trial_object(new_trial(experiment, action.name, action.parameters),
                                                                obj))
                if created is not None:  # its Job at once, not on the next pass
                    self._launch(created, experiment)
            elif isinstance(action, StopTrial):
                asked = stopped(trials[action.name], action.reason, now).spec
                self.api.patch(TRIALS, self.namespace, action.name, {"spec": {
                    "stop": True, "stopReason": asked.stopReason, "stopTime": asked.stopTime.isoformat()}})
            elif isinstance(action, RetryTrial):
                again = retried(trials[action.name], action.attempt, now)
                patched = self.api.patch(TRIALS, self.namespace, action.name, {"spec": {"attempt": action.attempt}})
                written = self.api.replace_status(builders.with_status(patched, again.status))
                self._launch(written, experiment)
            elif isinstance(action, Finish):
                self._register(experiment, trials[action.trial])

    def _launch(self, trial: dict, experiment: DetectionExperiment) -> None:
        """The Job of the trial's current attempt; the next pass sees it even before its watch event comes."""
        if (job := self.api.create(builders.trial_job(trial, experiment, self.settings.pods))) is not None:
            self.runs.seen(JOBS.plural, None, job)

    def _register(self, experiment: DetectionExperiment, best: DetectionTrial) -> None:
        """Idempotent (an ended experiment's every pass repeats it): a read when the model is registered already.
        The same name follows the best trial."""
        model = builders.model_object(registered_model(experiment, best))
        self.api.ensure(model, {"metadata": {"labels": model["metadata"]["labels"]}, "spec": model["spec"]})
