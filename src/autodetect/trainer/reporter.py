"""Where a trial's progress goes. The trainer only talks to a `Reporter`; the local one writes files
and stdout, the Kubernetes one (with the operator) patches the DetectionTrial status."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from autodetect.api.v1alpha1 import EpochMetrics, TrialModel, TrialStatus
from autodetect.storage import write_atomic
from autodetect.tuning.conditions import mark_trial
from autodetect.vocabulary import RUNNING

STATUS_FILE = "status.json"
STOP_FILE = "STOP"


class Reporter(Protocol):
    def report(self, epoch: int, metrics: dict[str, Any]) -> None:
        """One evaluation, the moment it is made."""

    def should_stop(self) -> bool:
        """True once the trial has been asked to stop (pruned); checked between epochs."""

    def finish(self, phase: str, final_metric: float | None, artifact_uri: str | None, message: str = "", *,
               reason: str = "", model: TrialModel | None = None) -> None:
        """The trial's end: Succeeded, Pruned or Failed (reason: why, in one word), and what its artifact holds."""


class LocalReporter:
    """Each evaluation as one JSON line on stdout, and trial_dir/status.json (a TrialStatus,
    rewritten atomically) kept current. A stop is requested by creating trial_dir/STOP.

    Created at the start of a run: it marks the trial Running; with keep_previous (a resumed run)
    it keeps the epochs and start time of the earlier, interrupted run of the same trial."""

    def __init__(self, trial_dir: Path, keep_previous: bool = False):
        self.trial_dir = Path(trial_dir)
        self.trial_dir.mkdir(parents=True, exist_ok=True)
        previous = self.trial_dir / STATUS_FILE
        keep = keep_previous and previous.exists()
        status = TrialStatus.model_validate_json(previous.read_text()) if keep else TrialStatus()
        self.status = mark_trial(status, RUNNING, datetime.now(timezone.utc))
        self._write()

    def report(self, epoch: int, metrics: dict[str, Any]) -> None:
        self.status.epochs = [e for e in self.status.epochs if e.epoch != epoch] + [EpochMetrics(epoch=epoch, metrics=metrics)]
        self._write()
        print(json.dumps({"epoch": epoch, "metrics": metrics}), flush=True)

    def should_stop(self) -> bool:
        return (self.trial_dir / STOP_FILE).exists()

    def finish(self, phase: str, final_metric: float | None, artifact_uri: str | None, message: str = "", *,
               reason: str = "", model: TrialModel | None = None) -> None:
        self.status = mark_trial(self.status, phase, datetime.now(timezone.utc), reason=reason, message=message)
        self.status.finalMetric, self.status.artifactUri, self.status.model = final_metric, artifact_uri, model
        self._write()
        print(json.dumps({"phase": phase, "finalMetric": final_metric, "artifactUri": artifact_uri, "message": message}), flush=True)

    def _write(self) -> None:
        write_atomic(self.trial_dir / STATUS_FILE, self.status.model_dump_json(indent=1) + "\n")
