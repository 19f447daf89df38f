"""The trial trainer: a real Faster R-CNN trial on a synthetic set, reporting, stop, kill-and-resume,
bad input, and the artifact that serving loads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from autodetect.api import DetectionTrial, parse_resource
from autodetect.api.v1alpha1 import TrialStatus
from autodetect.cli import main
from autodetect.data.synth import synthesize
from autodetect.models.base import PredictOptions
from autodetect.models.registry import load_artifact
from autodetect.trainer.reporter import STATUS_FILE, STOP_FILE, LocalReporter
from autodetect.trainer.trainer import METRICS_FILE, read_history, run_trial, should_stop_early

HYPERPARAMETERS = {"model_name": "fasterrcnn_mobilenet_v3_large_320_fpn", "pretrained": False, "min_size": 96,
                   "max_size": 96, "number_of_epochs": 3, "training_batch_size": 2, "validation_batch_size": 4,
                   "learning_rate": 0.01, "warmup_cosine_lr_warmup_epochs": 0}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return synthesize(tmp_path_factory.mktemp("data"), classes=2, images=12, size=96, seed=1)


def trial_obj(data: Path, artifacts: Path, name: str = "t1", **hyperparameters) -> dict:
    return {"apiVersion": "autodetect.dev/v1alpha1", "kind": "DetectionTrial", "metadata": {"name": name},
            "spec": {"experiment": "e", "hyperparameters": {**HYPERPARAMETERS, **hyperparameters},
                     "dataset": {"training": {"uri": str(data)}}, "artifacts": {"uri": f"file://{artifacts}/"}}}


def make_trial(data: Path, artifacts: Path, **hyperparameters) -> DetectionTrial:
    return parse_resource(trial_obj(data, artifacts, **hyperparameters), DetectionTrial)


def status_of(workdir: Path) -> TrialStatus:
    return TrialStatus.model_validate_json((workdir / STATUS_FILE).read_text())


# --- pure decisions -----------------------------------------------------------------------

@pytest.mark.parametrize("history, patience, delay, stop", [
    ([(1, 0.1), (2, 0.2), (3, 0.3)], 1, 0, False),  # improving
    ([(1, 0.3), (2, 0.2), (3, 0.2)], 2, 0, True),  # two evaluations without improvement
    ([(1, 0.3), (2, 0.2), (3, 0.4), (4, 0.1)], 2, 0, False),  # an improvement resets the count
    ([(1, 0.3), (2, 0.2), (3, 0.2)], 2, 2, False),  # only epoch 3 counts after the delay
    ([(1, 0.3), (2, 0.3)], 1, 0, True),  # a tie is no improvement
    ([], 1, 0, False),
])
def test_early_stopping(history, patience, delay, stop):
    assert should_stop_early(history, patience, delay) is stop


def test_history_ignores_a_torn_last_line(tmp_path):
    (tmp_path / METRICS_FILE).write_text('{"epoch": 1, "metrics": {"m": 0.5}}\n{"epoch": 2, "metr')
    assert read_history(tmp_path / METRICS_FILE) == {1: {"m": 0.5}}


def test_local_reporter_writes_status_and_json_lines(tmp_path, capsys):
    reporter = LocalReporter(tmp_path)
    assert status_of(tmp_path).phase == "Running"
    reporter.report(1, {"mean_average_precision": 0.25, "per_label_average_precision": {"a": 0.25}})
    reporter.report(1, {"mean_average_precision": 0.25})  # the same epoch again replaces it
    assert not reporter.should_stop()
    (tmp_path / STOP_FILE).touch()
    assert reporter.should_stop()
    reporter.finish("Pruned", 0.25, "file:///a/", "stopped")
    status = status_of(tmp_path)
    assert (status.phase, status.finalMetric, status.artifactUri) == ("Pruned", 0.25, "file:///a/")
    assert [e.epoch for e in status.epochs] == [1] and status.startTime and status.completionTime
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0] == {"epoch": 1, "metrics": {"mean_average_precision": 0.25, "per_label_average_precision": {"a": 0.25}}}
    assert lines[-1]["phase"] == "Pruned"
    assert [e.epoch for e in status_of(LocalReporter(tmp_path, keep_previous=True).trial_dir).epochs] == [1]
    assert status_of(LocalReporter(tmp_path).trial_dir).epochs == []


# --- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize("extra, field", [({"learning_rat": 0.1}, "spec.hyperparameters.learning_rat"),
                                          ({"image_size": 640}, "spec.hyperparameters.image_size"),
                                          ({"optimizer": "lamb"}, "spec.hyperparameters.optimizer")])
def test_bad_hyperparameters_fail_naming_the_field(tmp_path, data, extra, field):
    outcome = run_trial(make_trial(data, tmp_path / "a", **extra), tmp_path / "w", LocalReporter(tmp_path / "w"), False)
    assert (outcome.phase, outcome.exit_code) == ("Failed", 2)
    assert field in outcome.message
    assert status_of(tmp_path / "w").phase == "Failed" and field in status_of(tmp_path / "w").message


def test_pretrained_without_weights_fails_with_advice(tmp_path, data, capsys):
    (tmp_path / "trial.yaml").write_text(yaml.safe_dump(trial_obj(data, tmp_path / "a", pretrained=True)))
    # the conftest's hub is unreachable: a network failure, which a retry may not meet (exit 1, not 2)
    assert main(["train", "--trial", str(tmp_path / "trial.yaml"), "--workdir", str(tmp_path / "w")]) == 1
    message = status_of(tmp_path / "w").message
    assert "pretrained weights" in message and "pretrained: false" in message
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["phase"] == "Failed"


def test_a_bad_trial_file_is_exit_2(tmp_path):
    (tmp_path / "trial.yaml").write_text("kind: DetectionTrial\nmetadata: {name: x}\nspec: {}\n")
    assert main(["train", "--trial", str(tmp_path / "trial.yaml"), "--workdir", str(tmp_path / "w")]) == 2


# --- real training ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("trained")
    outcome = run_trial(make_trial(data, root / "artifacts"), root / "w", LocalReporter(root / "w"), False)
    return root, outcome


@pytest.mark.slow
def test_a_trial_trains_with_a_falling_loss_and_succeeds(trained):
    root, outcome = trained
    assert (outcome.phase, outcome.exit_code) == ("Succeeded", 0), outcome.message
    status = status_of(root / "w")
    assert status.phase == "Succeeded" and [e.epoch for e in status.epochs] == [1, 2, 3]
    losses = [e.metrics["loss"] for e in status.epochs]
    assert losses[-1] < losses[0]
    for entry in status.epochs:
        assert {"mean_average_precision", "precision", "recall", "per_label_average_precision", "loss_classifier"} <= set(entry.metrics)
    assert status.finalMetric == max(e.metrics["mean_average_precision"] for e in status.epochs)
    assert outcome.artifact_uri == f"file://{root / 'artifacts'}/t1/"


@pytest.mark.slow
def test_the_artifact_is_the_best_evaluation_and_loads_alone(trained, data):
    root, _ = trained
    artifact = root / "artifacts" / "t1"
    card = json.loads((artifact / "model_card.json").read_text())
    history = read_history(root / "w" / METRICS_FILE)
    best_epoch = max(history, key=lambda e: (history[e]["mean_average_precision"], e))  # ties: the latest
    assert card["epoch"] == best_epoch and card["metrics"] == history[best_epoch]
    assert (card["family"], card["format"], card["classes"]) == ("torchvision", "torchvision", ["circle", "square"])
    assert card["input_size"] == {"min_size": 96, "max_size": 96}
    assert card["dataset"]["fingerprint"].startswith("sha256:") and card["dataset"]["images"] == 10
    assert card["hyperparameters"]["learning_rate"] == 0.01
    # the artifact's weights are those of the best epoch's evaluation: scored again as the trainer scores, they give
    # its figures
    from autodetect.data.split import load_datasets
    from autodetect.evaluation.evaluator import evaluate
    from autodetect.trainer.trainer import predict_records

    hp = card["hyperparameters"]
    _, validation = load_datasets(str(data), seed=hp["random_seed"])
    detector = load_artifact(artifact)
    found = predict_records(detector, validation.records, hp["validation_batch_size"], PredictOptions.from_hyperparameters(hp))
    again = evaluate(validation.records, found, detector.classes, hp["validation_metric_type"],
                     hp["validation_iou_threshold"])
    assert again["mean_average_precision"] == pytest.approx(history[best_epoch]["mean_average_precision"], abs=1e-6)
    # the trial has ended: its checkpoints and its copy of the best weights are gone, its evaluations stay
    assert sorted(p.name for p in (root / "w").iterdir() if p.is_dir()) == []
    assert (root / "w" / METRICS_FILE).is_file()


class StopAfterFirstReport:
    """Asks for a stop the way the local runner does: by creating trial_dir/STOP."""

    def __init__(self, reporter: LocalReporter):
        self.reporter = reporter

    def report(self, epoch, metrics):
        self.reporter.report(epoch, metrics)
        (self.reporter.trial_dir / STOP_FILE).touch()

    def should_stop(self):
        return self.reporter.should_stop()

    def finish(self, *args, **kwargs):
        self.reporter.finish(*args, **kwargs)


@pytest.mark.slow
def test_a_stop_file_prunes_the_trial_between_epochs(tmp_path, data):
    workdir = tmp_path / "w"
    outcome = run_trial(make_trial(data, tmp_path / "a"), workdir, StopAfterFirstReport(LocalReporter(workdir)), False)
    assert (outcome.phase, outcome.exit_code) == ("Pruned", 0)
    status = status_of(workdir)
    assert status.phase == "Pruned" and [e.epoch for e in status.epochs] == [1]
    assert load_artifact(tmp_path / "a" / "t1").classes == ["circle", "square"]


def _wait_for(condition, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.mark.slow
def test_killed_and_resumed_it_continues_at_the_next_epoch(tmp_path, data):
    (tmp_path / "trial.yaml").write_text(yaml.safe_dump(trial_obj(data, tmp_path / "a", number_of_epochs=3)))
    workdir = tmp_path / "w"
    command = [sys.executable, "-m", "autodetect.cli", "train", "--trial", str(tmp_path / "trial.yaml"), "--workdir", str(workdir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    _wait_for(lambda: (workdir / "train" / "checkpoint.pt").exists(), first)
    first.send_signal(signal.SIGKILL)
    first.wait()
    done = torch.load(workdir / "train" / "checkpoint.pt", weights_only=True)["epoch"]
    assert done < 3

    second = subprocess.run([*command, "--resume"], capture_output=True, text=True, env=env, timeout=600)
    assert second.returncode == 0, second.stderr
    assert f"resuming after epoch {done}" in second.stderr
    reported = [json.loads(line) for line in second.stdout.splitlines()]
    assert [r["epoch"] for r in reported if "epoch" in r][-(3 - done):] == list(range(done + 1, 4))
    assert reported[-1]["phase"] == "Succeeded"
    epochs = [json.loads(line)["epoch"] for line in (workdir / METRICS_FILE).read_text().splitlines()]
    assert epochs == [1, 2, 3]
    status = status_of(workdir)
    assert status.phase == "Succeeded" and [e.epoch for e in status.epochs] == [1, 2, 3]


def test_on_ties_the_latest_evaluation_is_the_best():
    from autodetect.trainer.trainer import Evaluations

    hook = Evaluations({"validation_metric_type": "voc"}, "mean_average_precision", None, None, Path("."), "t", None,
                       history={1: {"mean_average_precision": 0.0}, 2: {"mean_average_precision": 0.0},
                                3: {"mean_average_precision": 0.0}})
    assert hook.best() == (3, 0.0)
