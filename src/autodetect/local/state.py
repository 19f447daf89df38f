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
      lock                     held (flock) by the `autodetect run` of this experiment; holds its pid
      model/                   the best trial's artifact and model.yaml (a DetectionModel)
      metrics.png              every trial's primary metric by epoch
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from autodetect.api import DetectionExperiment, DetectionModel, DetectionTrial, parse_resource
from autodetect.api.v1alpha1 import ExperimentStatus, TrialStatus
from autodetect.errors import AutodetectError, SpecError
from autodetect.storage import resolve_uri, write_atomic
from autodetect.tuning.engine import spec_changes
from autodetect.tuning.trials import registered_model


def dump_yaml(resource: Any, exclude: set[str] | None = None) -> str:
    """A resource as `kubectl get -o yaml` shows it: apiVersion, kind, metadata, spec first; no nulls."""
    obj = resource.model_dump(mode="json", exclude=exclude, exclude_none=True)
    ordered = {key: obj.pop(key) for key in ("apiVersion", "kind", "metadata", "spec") if key in obj}
    return yaml.safe_dump({**ordered, **obj}, sort_keys=False)


class StateError(AutodetectError):
    """A damaged state file: names it and says how to repair it."""


def read_json_file(path: Path, repair: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StateError(f"{path}: damaged, not valid JSON ({exc}); {repair}") from None


class RunState:
    """The files of one experiment's local run."""

    def __init__(self, runs_dir: Path, experiment_name: str):
        self.root = Path(runs_dir) / experiment_name
        self.experiment_file = self.root / "experiment.yaml"
        self.status_file = self.root / "status.json"
        self.trials_dir = self.root / "trials"
        self.model_dir = self.root / "model"
        self.plot_file = self.root / "metrics.png"
        self.lock_file = self.root / "lock"

    @contextmanager
    def lock(self):
        """Hold this experiment's run lock: a second run refuses at once, naming the holder. The kernel drops
        a flock when its process dies, so a lock left by a killed run is simply taken over."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                raise AutodetectError(f"{self.root} is being run by another `autodetect run` (pid {holder}, "
                                      f"lock {self.lock_file}); wait for it to end or stop it first") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)

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
                status = ExperimentStatus.model_validate(read_json_file(
                    self.status_file, "delete it: the next run rebuilds the experiment's status from its trials"))
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
        if status_file.exists():
            obj["status"] = read_json_file(status_file, f"delete the folder {folder} to train that trial again, "
                                                        "or restore the file")
            return parse_resource(obj, DetectionTrial, str(folder))
        trial = parse_resource({**obj, "status": {}}, DetectionTrial, str(folder))
        if rebuilt := rebuilt_status(trial, folder):
            self.write_trial_status(name, rebuilt)
            return trial.model_copy(update={"status": rebuilt})
        if any((folder / f).exists() for f in ("metrics.jsonl", "stdout.log", "train", "best")):
            raise StateError(f"{status_file}: missing, though the trial has run (its folder holds its output) and "
                             "it cannot be rebuilt (that needs metrics.jsonl and its published artifact); delete "
                             f"the folder {folder} to train that trial again, or restore the file")
        return trial  # written (Pending) but never started: status.json is written right after trial.yaml

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


def rebuilt_status(trial: DetectionTrial, folder: Path) -> TrialStatus | None:
    """The end of a trial whose status.json is lost, from what only an ended trainer leaves: every evaluation in
    metrics.jsonl and the artifact it published (a trainer publishes only once training is over). None when
    any of it is missing: no status is made up."""
    from autodetect.api.v1alpha1 import EpochMetrics, TrialModel
    from autodetect.models.registry import MODEL_CARD
    from autodetect.trainer.trainer import read_history
    from autodetect.tuning.trials import rebuilt

    artifact_uri = f"{trial.spec.artifacts.uri.rstrip('/')}/{trial.metadata.name}/"
    try:
        artifact = resolve_uri(artifact_uri)
    except AutodetectError:
        return None
    metrics_file = folder / "metrics.jsonl"
    if not (metrics_file.is_file() and (artifact / MODEL_CARD).is_file()):
        return None
    history = read_history(metrics_file)
    card = read_json_file(artifact / MODEL_CARD, f"delete the folder {folder} to train that trial again")
    scores = [m[trial.spec.primaryMetric] for m in history.values() if trial.spec.primaryMetric in m]
    status = TrialStatus(
        finalMetric=max(scores) if scores else None, artifactUri=artifact_uri,
        epochs=[EpochMetrics(epoch=e, metrics=m) for e, m in sorted(history.items())],
        model=TrialModel(format=card["format"], classes=card["classes"], inputSize=card.get("input_size") or {},
                         epoch=card.get("epoch"), metrics=card.get("metrics", {})))
    return rebuilt(status, asked_to_stop=(folder / "STOP").exists(), now=datetime.now(timezone.utc),
                   source=f"{metrics_file.name} and the artifact {artifact_uri}")
