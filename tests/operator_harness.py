"""Running autodetect's own operator against the emulator, and playing the trainer and the kubelet for it."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from apiserver import Emulator, controllers

from autodetect.operator.experiments import Settings
from autodetect.operator.kube import Api, load_configuration
from autodetect.operator.reporter import KubernetesReporter
from autodetect.operator.runtime import OperatorConfig, operate

GROUP, VERSION = "autodetect.dev", "v1alpha1"
NAMESPACE = "default"
SEARCH = [{"model_name": "yolov8", "learning_rate": {"type": "choice", "values": [0.01, 0.02, 0.03, 0.04]}}]


def experiment(name: str = "fridge", **spec: Any) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "DetectionExperiment",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"dataset": {"training": {"uri": "pvc://datasets/fridge/train.jsonl"}},
                     "searchSpace": SEARCH, "sampling": {"algorithm": "grid"},
                     "artifacts": {"uri": "pvc://artifacts/"}, **spec}}


def trainer_kubeconfig(emulator: Emulator, kubeconfig: Path) -> Path:
    """A kubeconfig beside the operator's for the trainer in a trial pod: its requests are the trial role's."""
    from operator_requests import TRAINER_USER

    return emulator.kubeconfig(kubeconfig.with_name("trainer-kubeconfig"), user=TRAINER_USER)


@contextlib.contextmanager
def running_operator(kubeconfig: Path, timeout: float = 30, **config: Any) -> Iterator[OperatorConfig]:
    """autodetect's operator (operate()) in a thread with its own event loop, standalone, until the block ends."""
    defaults = dict(namespaces=[], standalone=True, kubeconfig=str(kubeconfig), metrics_port=None,
                    liveness_endpoint=None, webhook_port=None, timer_s=1.0, settings=Settings(start_grace_s=600))
    settings = OperatorConfig(**(defaults | config))
    stop, ready, errors = threading.Event(), threading.Event(), []

    def main() -> None:
        try:
            asyncio.run(operate(settings, stop_flag=stop, ready_flag=ready))
        except BaseException as error:  # noqa: BLE001 - handed to the test
            errors.append(error)
            ready.set()

    thread = threading.Thread(target=main, name="autodetect-operator", daemon=True)
    thread.start()
    assert ready.wait(timeout), "the operator was not ready in time"
    if errors:
        raise errors[0]
    try:
        yield settings
    finally:
        stop.set()
        thread.join(timeout)
        assert not thread.is_alive(), "the operator did not stop"
        if errors:
            raise errors[0]


class Cluster:
    """The test's hands on the emulator: the kubelet and Job controller (apiserver.controllers), and trainers that
    report through the real KubernetesReporter over HTTP, as a trial pod's trainer does."""

    def __init__(self, emulator: Emulator, kubeconfig: Path):
        self.emulator, self.api = emulator, Api(load_configuration(str(trainer_kubeconfig(emulator, kubeconfig))))
        self.reporters: dict[str, KubernetesReporter] = {}

    def get(self, resource: str, name: str) -> dict | None:
        return self.emulator.get(resource, NAMESPACE, name)

    def names(self, resource: str, **labels: str) -> list[str]:
        selector = ",".join(f"{k}={v}" for k, v in labels.items()) or None
        return sorted(o["metadata"]["name"] for o in self.emulator.list(resource, NAMESPACE, labels=selector))

    def wait(self, condition, timeout: float = 20, what: str = ""):
        try:
            return self.emulator.wait_for(condition, timeout)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what or condition}") from None

    def wait_job(self, name: str, timeout: float = 20) -> dict:
        return self.wait(lambda: self.get("jobs", name), timeout, f"job {name}")

    def start(self, job: str) -> dict:
        """The Job's pod runs, and its trainer starts (it marks its trial Running)."""
        made = self.wait_job(job)
        pod = controllers.pod_running(self.emulator, controllers.job_pod(self.emulator, made))
        trial = made["metadata"]["labels"]["autodetect.dev/trial"]
        self.reporters[trial] = KubernetesReporter(self.api, self.emulator.get("detectiontrials", NAMESPACE, trial))
        return pod

    def report(self, trial: str, *values: float) -> None:
        reporter = self.reporters[trial]
        for value in values:
            epoch = len(reporter.status.epochs) + 1
            reporter.report(epoch, {"mean_average_precision": value, "loss": 1.0 / epoch})

    def finish(self, trial: str, job: str, phase: str = "Succeeded", classes=("can",)) -> None:
        """The trainer ends its trial, then its pod exits 0 and the Job completes."""
        from autodetect.api.v1alpha1 import TrialModel

        reporter = self.reporters.pop(trial)
        best = max((e.metrics["mean_average_precision"] for e in reporter.status.epochs), default=None)
        model = TrialModel(format="ultralytics", classes=list(classes), inputSize={"image_size": 640}, epoch=1,
                           metrics={"mean_average_precision": best})
        reporter.finish(phase, best, f"pvc://artifacts/{trial}/", "stopped on request" if phase == "Pruned" else "",
                        model=model)
        self.exit(job, 0)

    def exit(self, job: str, code: int, reason: str | None = None, message: str | None = None) -> None:
        pods = [p for p in self.emulator.list("pods", NAMESPACE, labels=f"job-name={job}")]
        pod = pods[0] if pods else controllers.pod_running(self.emulator,
                                                           controllers.job_pod(self.emulator, self.wait_job(job)))
        controllers.pod_terminated(self.emulator, pod, code, reason, message)
        controllers.job_finished(self.emulator, self.get("jobs", job), succeeded=code == 0,
                                 reason="DeadlineExceeded" if reason == "DeadlineExceeded" else None)

    def phase(self, trial: str) -> str:
        return ((self.get("detectiontrials", trial) or {}).get("status") or {}).get("phase", "Pending")

    def experiment_status(self, name: str = "fridge") -> dict:
        return (self.get("detectionexperiments", name) or {}).get("status") or {}

    def events(self, name: str = "fridge") -> list[tuple[str, str]]:
        return [(e["reason"], e["message"]) for e in self.emulator.list("v1/events", NAMESPACE)
                if e["involvedObject"]["name"] == name]
