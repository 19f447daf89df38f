"""A local run's state on disk, in the shape of the resources' status. The runner reads it back on every
pass (never keeps the truth only in memory), so an interrupted run resumes from here.

    <runs>/<experiment>/
      experiment.yaml          the DetectionExperiment as run
      status.json              its ExperimentStatus
      trials/<trial>/          the trainer's --workdir
        trial.yaml             the DetectionTrial (spec)
        status.json            its TrialStatus (the trainer rewrites it while it runs)
        metrics.jsonl          one line per evaluation (the trainer's)
        stdout.log             the trainer's output
        STOP                   a stop request; holds the reason
        pid                    the trainer's process id while it may be running
      model/                   the best trial's artifact and model.yaml (a DetectionModel)
      metrics.png              every trial's primary metric by epoch
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from autodetect.api import DetectionExperiment, DetectionModel, DetectionTrial, parse_resource
from autodetect.api.v1alpha1 import ExperimentStatus, TrialStatus
from autodetect.errors import SpecError
from autodetect.storage import resolve_uri, write_atomic
from autodetect.tuning.engine import spec_changes
from autodetect.tuning.trials import registered_model


def dump_yaml(resource: Any, exclude: set[str] | None = None) -> str:
    """A resource as `kubectl get -o yaml` shows it: apiVersion, kind, metadata, spec first; no nulls."""
    obj = resource.model_dump(mode="json", exclude=exclude, exclude_none=True)
    ordered = {key: obj.pop(key) for key in ("apiVersion", "kind", "metadata", "spec") if key in obj}
    return yaml.safe_dump({**ordered, **obj}, sort_keys=False)


class RunState:
    """The files of one experiment's local run."""

    def __init__(self, runs_dir: Path, experiment_name: str):
        self.root = Path(runs_dir) / experiment_name
        self.experiment_file = self.root / "experiment.yaml"
        self.status_file = self.root / "status.json"
        self.trials_dir = self.root / "trials"
        self.model_dir = self.root / "model"
        self.plot_file = self.root / "metrics.png"

    # --- the experiment ----------------------------------------------------------------

    def open(self, experiment: DetectionExperiment) -> DetectionExperiment:
        """Start a run, or resume the one stored here; returns the experiment with its stored status.

        A stored run of a different spec is refused: mixing its trials with new ones would compare
        unlike with unlike. Only what may change while an experiment runs may change between runs (the
        limits, e.g. more trials, and the trial template)."""
        status = ExperimentStatus()
        if self.experiment_file.exists():
            stored = parse_resource(yaml.safe_load(self.experiment_file.read_text()), DetectionExperiment,
                                    str(self.experiment_file))
            if changed := spec_changes(stored.spec, experiment.spec):
                raise SpecError(", ".join(changed), f"{self.root} holds a run of experiment "
                                                    f"{experiment.metadata.name!r} with a different spec; rename the "
                                                    "experiment or remove that folder")
            if self.status_file.exists():
                status = ExperimentStatus.model_validate_json(self.status_file.read_text())
        self.trials_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.experiment_file, dump_yaml(experiment, exclude={"status"}))
        return experiment.model_copy(update={"status": status})

    def write_status(self, status: ExperimentStatus) -> None:
        write_atomic(self.status_file, status.model_dump_json(indent=2) + "\n")

    # --- trials ----------------------------------------------------------------------

    def trial_dir(self, name: str) -> Path:
        return self.trials_dir / name

    def trial_names(self) -> list[str]:
        return sorted(p.parent.name for p in self.trials_dir.glob("*/trial.yaml"))

    def read_trial(self, name: str) -> DetectionTrial:
        folder = self.trial_dir(name)
        obj = yaml.safe_load((folder / "trial.yaml").read_text())
        status_file = folder / "status.json"
        obj["status"] = json.loads(status_file.read_text()) if status_file.exists() else {}
        return parse_resource(obj, DetectionTrial, str(folder))

    def read_trials(self) -> list[DetectionTrial]:
        return [self.read_trial(name) for name in self.trial_names()]

    def write_trial(self, trial: DetectionTrial, with_status: bool = True) -> None:
        """The trial's spec, and its status unless a trainer runs for it (the trainer owns status.json then)."""
        write_atomic(self.trial_dir(trial.metadata.name) / "trial.yaml", dump_yaml(trial, exclude={"status"}))
        if with_status:
            self.write_trial_status(trial.metadata.name, trial.status)

    def write_trial_status(self, name: str, status: TrialStatus) -> None:
        write_atomic(self.trial_dir(name) / "status.json", status.model_dump_json(indent=2) + "\n")

    def request_stop(self, name: str, reason: str) -> bool:
        """Ask the trainer to stop between epochs; False when it was asked already."""
        stop = self.trial_dir(name) / "STOP"
        if stop.exists():
            return False
        write_atomic(stop, reason + "\n")
        return True

    def stop_reason(self, name: str) -> str | None:
        try:
            return (self.trial_dir(name) / "STOP").read_text().strip() or "stop requested"
        except FileNotFoundError:
            return None

    def stop_requested_at(self, name: str) -> float | None:
        try:
            return (self.trial_dir(name) / "STOP").stat().st_mtime
        except FileNotFoundError:
            return None

    def write_pid(self, name: str, pid: int | None) -> None:
        pid_file = self.trial_dir(name) / "pid"
        if pid is None:
            pid_file.unlink(missing_ok=True)
        else:
            write_atomic(pid_file, f"{pid}\n")

    def read_pid(self, name: str) -> int | None:
        try:
            return int((self.trial_dir(name) / "pid").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def log_tail(self, name: str, lines: int = 5) -> str:
        try:
            text = (self.trial_dir(name) / "stdout.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    # --- the model --------------------------------------------------------------------

    def register_model(self, experiment: DetectionExperiment, trial: DetectionTrial) -> DetectionModel:
        """Copy the best trial's artifact to model/ and describe it there as a DetectionModel (model.yaml)."""
        registered_model(experiment, trial)  # refuses a trial without an artifact before anything is copied
        if self.model_dir.exists():
            shutil.rmtree(self.model_dir)
        shutil.copytree(resolve_uri(trial.status.artifactUri), self.model_dir)
        model = registered_model(experiment, trial, artifact_uri=self.model_dir.resolve().as_uri())
        write_atomic(self.model_dir / "model.yaml", dump_yaml(model, exclude={"status"}))
        return model
