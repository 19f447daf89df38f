"""The trainer's side on a cluster: `autodetect train --trial-ref <namespace>/<name>`. The trial pod reads its
parameters from its own DetectionTrial (never from argument text) and reports to that trial's status
subresource: Running with startTime, each evaluation the moment it is made, its end with finalMetric and
artifactUri. It reads spec.stop between epochs. Its RBAC: get detectiontrials, patch detectiontrials/status.

Checkpoints live on the artifacts volume (`<artifacts>/.trials/<trial>-<uid>`), so a retried or replaced pod
resumes where the last one stopped."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from autodetect.api import DetectionTrial, parse_resource
from autodetect.api.v1alpha1 import EpochMetrics, TrialModel, TrialStatus
from autodetect.errors import AutodetectError
from autodetect.operator.builders import TRIALS_WORK_DIR
from autodetect.operator.kube import TRIALS, Api, load_configuration
from autodetect.tuning.conditions import mark_trial
from autodetect.vocabulary import RUNNING


class KubernetesReporter:
    def __init__(self, api: Api, trial: dict[str, Any]):
        self.api, self.namespace, self.name = api, trial["metadata"]["namespace"], trial["metadata"]["name"]
        status = TrialStatus.model_validate(trial.get("status") or {})  # a resumed pod keeps the epochs so far
        self.status = mark_trial(status, RUNNING, datetime.now(timezone.utc))
        self._write()

    def report(self, epoch: int, metrics: dict[str, Any]) -> None:
        self.status.epochs = [e for e in self.status.epochs if e.epoch != epoch] + [EpochMetrics(epoch=epoch, metrics=metrics)]
        self._write()

    def should_stop(self) -> bool:
        trial = self.api.get(TRIALS, self.namespace, self.name)
        return trial is None or bool(trial["spec"].get("stop"))

    def finish(self, phase: str, final_metric: float | None, artifact_uri: str | None, message: str = "", *,
               reason: str = "", model: TrialModel | None = None) -> None:
        self.status = mark_trial(self.status, phase, datetime.now(timezone.utc), reason=reason, message=message)
        self.status.finalMetric, self.status.artifactUri, self.status.model = final_metric, artifact_uri, model
        self._write()

    def _write(self) -> None:
        # A merge patch of the whole status: null for what the trial no longer has (e.g. completionTime on resume).
        self.api.patch(TRIALS, self.namespace, self.name, {"status": self.status.model_dump(mode="json")},
                       subresource="status")


def parse_ref(ref: str) -> tuple[str, str]:
    namespace, _, name = ref.partition("/")
    if not namespace or not name or "/" in name:
        raise AutodetectError(f"--trial-ref {ref!r}: expected <namespace>/<name>")
    return namespace, name


def train_from_ref(ref: str) -> int:
    from autodetect.storage import resolve_uri
    from autodetect.trainer.trainer import run_trial

    namespace, name = parse_ref(ref)
    api = Api(load_configuration())
    obj = api.get(TRIALS, namespace, name)
    if obj is None:
        raise AutodetectError(f"--trial-ref {ref}: no such DetectionTrial")
    trial = parse_resource(obj, DetectionTrial, f"DetectionTrial {ref}")
    workdir = Path(resolve_uri(trial.spec.artifacts.uri)) / TRIALS_WORK_DIR / f"{name}-{obj['metadata']['uid'][:8]}"
    return run_trial(trial, workdir, KubernetesReporter(api, obj), resume=True).exit_code
