"""The operator's Prometheus metrics: experiments by phase, what happened to trials, reconcile durations and
API errors. Each operator has its own registry (two can run in one process, as the tests run them)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from autodetect.tuning import events as ev

TRIAL_EVENTS = {ev.TRIAL_STARTED: "started", ev.TRIAL_SUCCEEDED: "succeeded", ev.TRIAL_PRUNED: "pruned",
                ev.TRIAL_FAILED: "failed", ev.TRIAL_RETRIED: "retried"}


class _Phases:
    def __init__(self, phases: dict[tuple[str, str], str]):
        self.phases = phases

    def collect(self):
        family = GaugeMetricFamily("autodetect_operator_experiments", "Experiments by phase", labels=["phase"])
        for phase in ("Pending", "Running", "Succeeded", "Failed"):
            family.add_metric([phase], sum(p == phase for p in self.phases.values()))
        yield family


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.phases: dict[tuple[str, str], str] = {}  # (namespace, name) -> phase, as last reconciled
        self.registry.register(_Phases(self.phases))
        self.trials = Counter("autodetect_operator_trials", "Trials by what happened to them",
                              ["event"], registry=self.registry)
        self.reconcile_seconds = Histogram("autodetect_operator_reconcile_duration_seconds",
                                           "Time of one reconcile pass", ["kind"], registry=self.registry)
        self.api_errors = Counter("autodetect_operator_api_errors", "Kubernetes API requests that failed",
                                  ["verb", "resource", "code"], registry=self.registry)

    def api_error(self, verb: str, resource, status: int) -> None:
        self.api_errors.labels(verb, resource.plural, str(status)).inc()

    def experiment(self, namespace: str, name: str, phase: str | None) -> None:
        if phase is None:
            self.phases.pop((namespace, name), None)
        else:
            self.phases[(namespace, name)] = phase

    def event(self, event) -> None:
        if event.reason in TRIAL_EVENTS:
            self.trials.labels(TRIAL_EVENTS[event.reason]).inc()
