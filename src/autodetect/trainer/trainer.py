"""One trial from start to finish: resolve its hyperparameters, load the data, train, evaluate every
`evaluation_frequency` epochs, report each evaluation, stop early or on request, and leave the
artifact of the best evaluation.

The trainer's own state lives in workdir (train/ with the detector's checkpoints, metrics.jsonl
with every evaluation made, best/ with the best evaluation's artifact), so a killed trial resumes where it
was, whichever reporter it talks to. Once the trial has ended with its artifact published and reported, only
metrics.jsonl stays: a sweep would otherwise keep every trial's weights three times (checkpoint with the
optimizer's state, best/, the artifact)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autodetect.api.v1alpha1 import DetectionTrial, TrialModel
from autodetect.data.dataset import Dataset, ImageRecord
from autodetect.errors import AutodetectError, SpecError, TransientError
from autodetect.models.base import Detection, Detector, PredictOptions
from autodetect.trainer.artifact import DatasetInfo, publish, write_artifact
from autodetect.trainer.reporter import Reporter
from autodetect.vocabulary import EXIT_BAD_INPUT, EXIT_FAILED, FAILED, INVALID_INPUT, PRUNED, SUCCEEDED

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
BEST_DIR = "best"
TRAIN_DIR = "train"  # the detector's own files (checkpoints)


@dataclass
class TrialOutcome:
    phase: str
    final_metric: float | None = None
    artifact_uri: str | None = None
    message: str = ""
    exit_code: int = 0
    reason: str = ""
    model: TrialModel | None = None


def should_stop_early(history: list[tuple[int, float]], patience: int, delay: int) -> bool:
    """Azure's early stopping over (epoch, primary metric) evaluations: the best is tracked from the
    start, but an evaluation without improvement counts only after `delay` epochs; training stops
    once `patience` such evaluations have come in a row."""
    best, stale = float("-inf"), 0
    for epoch, value in history:
        if value > best:
            best, stale = value, 0
        elif epoch > delay:
            stale += 1
    return stale >= patience


def read_history(path: Path) -> dict[int, dict[str, Any]]:
    """epoch -> metrics of every evaluation already made (a torn last line from a kill is ignored)."""
    history: dict[int, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            history[int(entry["epoch"])] = entry["metrics"]
    return history


def predict_records(detector: Detector, records: list[ImageRecord], batch_size: int, options: PredictOptions) -> list[list[Detection]]:
    from autodetect.data.images import load_rgb

    predictions: list[list[Detection]] = []
    for start in range(0, len(records), batch_size):
        predictions += detector.predict([load_rgb(r.path) for r in records[start:start + batch_size]], options)
    return predictions


def _plain(metrics: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(metrics, default=float))  # numpy scalars -> floats


@dataclass
class Evaluations:
    """The EpochHook of a trial: evaluates, records, keeps the best artifact, decides whether to stop."""

    hyperparameters: dict[str, Any]
    primary_metric: str
    validation: Dataset
    reporter: Reporter
    workdir: Path
    trial_name: str
    dataset: DatasetInfo
    history: dict[int, dict[str, Any]] = field(default_factory=dict)
    stop_requested: bool = False
    stopped_early_at: int | None = None

    @property
    def evaluating(self) -> bool:
        return self.hyperparameters["validation_metric_type"] != "none"

    def scores(self) -> list[tuple[int, float]]:
        if not self.evaluating:
            return []
        return [(epoch, m[self.primary_metric]) for epoch, m in sorted(self.history.items()) if self.primary_metric in m]

    def best(self) -> tuple[int, float] | None:
        return max(self.scores(), key=lambda item: (item[1], item[0]), default=None)  # ties: the latest epoch

    def __call__(self, epoch: int, losses: dict[str, float], detector: Detector) -> bool:
        hp = self.hyperparameters
        due = epoch % hp["evaluation_frequency"] == 0 or epoch == hp["number_of_epochs"]
        if epoch in self.history:  # evaluated before a kill; report again (reports are per epoch, idempotent)
            self.reporter.report(epoch, self.history[epoch])
        elif due:
            self._evaluate(epoch, losses, detector)
        if hp["early_stopping"] and self.evaluating and should_stop_early(
                self.scores(), hp["early_stopping_patience"], hp["early_stopping_delay"]):
            self.stopped_early_at = epoch
            return True
        self.stop_requested = self.reporter.should_stop()
        return self.stop_requested

    def _evaluate(self, epoch: int, losses: dict[str, float], detector: Detector) -> None:
        hp = self.hyperparameters
        metrics: dict[str, Any] = {}
        if self.evaluating:
            from autodetect.evaluation.evaluator import evaluate

            predictions = predict_records(detector, self.validation.records, hp["validation_batch_size"],
                                          PredictOptions.from_hyperparameters(hp))
            metrics = evaluate(self.validation.records, predictions, detector.classes,
                               hp["validation_metric_type"], hp["validation_iou_threshold"])
            if self.primary_metric not in metrics:
                raise SpecError("spec.primaryMetric", f"{self.primary_metric!r} is not computed with validation_metric_type "
                                f"{hp['validation_metric_type']!r}; it gives {', '.join(sorted(metrics))}")
        losses = {**losses, "loss": losses.get("loss", sum(losses.values()))}
        metrics = _plain({**metrics, **losses})
        best = self.best()
        if not self.evaluating or best is None or metrics[self.primary_metric] >= best[1]:
            write_artifact(self.workdir / BEST_DIR, detector, name=self.trial_name, metrics=metrics, epoch=epoch,
                           dataset=self.dataset)
        with (self.workdir / METRICS_FILE).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"epoch": epoch, "metrics": metrics}) + "\n")
        self.history[epoch] = metrics
        self.reporter.report(epoch, metrics)


def run_trial(trial: DetectionTrial, workdir: Path, reporter: Reporter, resume: bool) -> TrialOutcome:
    """Run the trial to its end and tell the reporter how it ended; never raises for a failed trial."""
    try:
        outcome = _run(trial, Path(workdir), reporter, resume)
    except TransientError as exc:  # not the input's fault: the trial may be retried
        outcome = TrialOutcome(FAILED, message=str(exc), exit_code=EXIT_FAILED)
    except AutodetectError as exc:
        outcome = TrialOutcome(FAILED, message=str(exc), exit_code=EXIT_BAD_INPUT, reason=INVALID_INPUT)
    except Exception as exc:  # noqa: BLE001 - a failed trial is reported, not raised
        log.exception("trial %s failed", trial.metadata.name)
        outcome = TrialOutcome(FAILED, message=f"{type(exc).__name__}: {exc}", exit_code=EXIT_FAILED)
    reporter.finish(outcome.phase, outcome.final_metric, outcome.artifact_uri, outcome.message, reason=outcome.reason,
                    model=outcome.model)
    if outcome.artifact_uri is not None:  # ended and published: nothing will resume it
        _drop_weights(Path(workdir))
    return outcome


def _run(trial: DetectionTrial, workdir: Path, reporter: Reporter, resume: bool) -> TrialOutcome:
    from autodetect.data.split import load_datasets
    from autodetect.models.hyperparameters import resolve
    from autodetect.models.registry import build_detector

    spec, name = trial.spec, trial.metadata.name
    hp = resolve(spec.hyperparameters, where="spec.hyperparameters")
    if spec.stop or reporter.should_stop():
        return TrialOutcome(PRUNED, message="stopped on request before training")
    workdir.mkdir(parents=True, exist_ok=True)
    if not resume:
        _clear_state(workdir)
    validation_uri = spec.dataset.validation.uri if spec.dataset.validation else None
    train, validation = load_datasets(spec.dataset.training.uri, validation_uri, split=spec.dataset.validationSplit,
                                      root=spec.dataset.root, prefix=spec.dataset.imageUrlPrefix,
                                      seed=hp["random_seed"])
    classes = sorted(set(train.classes) | set(validation.classes))
    dataset = DatasetInfo(train.fingerprint(), spec.dataset.training.uri, validation_uri, len(train), len(validation))
    hook = Evaluations(hp, spec.primaryMetric, validation, reporter, workdir, name, dataset,
                       history=read_history(workdir / METRICS_FILE))
    detector = build_detector(hp, classes)
    detector.fit(train, validation, workdir / TRAIN_DIR, hook, resume)

    best = hook.best()
    final_metric = best[1] if best else None
    artifact_uri, model = None, None
    if (workdir / BEST_DIR).exists():
        from autodetect.models.registry import read_model_card
        from autodetect.storage import resolve_uri

        artifact_uri = f"{spec.artifacts.uri.rstrip('/')}/{name}/"
        publish(workdir / BEST_DIR, resolve_uri(artifact_uri))
        card = read_model_card(workdir / BEST_DIR)
        model = TrialModel(format=card["format"], classes=card["classes"], inputSize=card.get("input_size") or {},
                           epoch=card.get("epoch"), metrics=card.get("metrics", {}))
    if hook.stop_requested:
        return TrialOutcome(PRUNED, final_metric, artifact_uri,
                            f"stopped on request after epoch {max(hook.history, default=0)}", model=model)
    message = ""
    if hook.stopped_early_at is not None:
        message = (f"early stopping at epoch {hook.stopped_early_at}: no {spec.primaryMetric} improvement in "
                   f"{hp['early_stopping_patience']} evaluations")
    return TrialOutcome(SUCCEEDED, final_metric, artifact_uri, message, model=model)


def _clear_state(workdir: Path) -> None:
    """A fresh start: forget the evaluations, checkpoints and best weights of an earlier run."""
    (workdir / METRICS_FILE).unlink(missing_ok=True)
    _drop_weights(workdir)


def _drop_weights(workdir: Path) -> None:
    """The checkpoints and the copy of the best weights (the evaluations stay)."""
    import shutil

    for name in (BEST_DIR, TRAIN_DIR):
        shutil.rmtree(workdir / name, ignore_errors=True)
