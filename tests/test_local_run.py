"""`autodetect run` end to end on the CPU: the real engine deciding, real trainer processes training
tiny Faster R-CNNs on a synthetic set, pruning, the best registered as a DetectionModel, Ctrl-C and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from autodetect.api import DetectionModel, load_resource
from autodetect.api.v1alpha1 import ExperimentStatus, TrialStatus
from autodetect.cli import main
from autodetect.data.synth import synthesize
from autodetect.models.registry import load_artifact

pytestmark = pytest.mark.slow

FIXED = {"model_name": "fasterrcnn_mobilenet_v3_large_320_fpn", "pretrained": False, "min_size": 64, "max_size": 64,
         "training_batch_size": 2, "validation_batch_size": 4, "warmup_cosine_lr_warmup_epochs": 0,
         "early_stopping": False}
# Reports every box it finds and is scored at a loose IoU: its mAP is far above 0 from the first epoch
# (about 0.13: most boxes are found), on any CPU.
LEARNS = {**FIXED, "number_of_epochs": 2, "learning_rate": 0.02, "box_score_threshold": 0.0,
          "validation_iou_threshold": 0.1}
# Twins: trials that differ only in a setting that changes nothing (early stopping is off) train alike (the
# same seed, data and steps), so the bandit's 20% slack can never prune one against the other.
TWINS = {"early_stopping_patience": {"type": "choice", "values": [5, 6]}}
# Learns nothing (a learning rate of almost zero) and reports no box at all: its mAP is exactly 0, so a bandit
# policy must prune it.
LEARNS_NOTHING = {**FIXED, "number_of_epochs": 2, "box_score_threshold": 0.99}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return synthesize(tmp_path_factory.mktemp("data"), classes=2, images=12, size=64, seed=1)


def experiment(path: Path, name: str, data: Path, search_space: list[dict], **spec) -> Path:
    obj = {"apiVersion": "autodetect.dev/v1alpha1", "kind": "DetectionExperiment", "metadata": {"name": name},
           "spec": {"dataset": {"training": {"uri": str(data)}, "validation": {"uri": str(data)}},
                    "searchSpace": search_space, "sampling": {"algorithm": "grid"},
                    "artifacts": {"uri": str(path.parent / "artifacts")}, **spec}}
    path.write_text(yaml.safe_dump(obj))
    return path


def choice(*values) -> dict:
    return {"type": "choice", "values": list(values)}


def trial_status(runs: Path, experiment_name: str, trial: str) -> TrialStatus:
    return TrialStatus.model_validate_json((runs / experiment_name / "trials" / trial / "status.json").read_text())


def test_a_sweep_runs_two_at_once_prunes_and_registers_the_best(tmp_path, data, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    spec = experiment(tmp_path / "sweep.yaml", "sweep", data, [
        {**LEARNS, **TWINS},
        {**LEARNS_NOTHING, "learning_rate": choice(1e-9, 1e-8)}],
        earlyTermination={"policy": "bandit", "slackFactor": 0.2, "evaluationInterval": 1, "delayEvaluation": 1},
        limits={"maxTrials": 4, "maxConcurrentTrials": 2})

    assert main(["run", str(spec), "--runs-dir", "runs"]) == 0

    root = tmp_path / "runs" / "sweep"
    status = ExperimentStatus.model_validate_json((root / "status.json").read_text())
    assert status.phase == "Succeeded" and status.trials.total == 4 and status.trials.failed == 0
    trials = {name: trial_status(tmp_path / "runs", "sweep", name) for name in ("sweep-000", "sweep-001", "sweep-002", "sweep-003")}
    for name in trials:
        assert {"trial.yaml", "status.json", "metrics.jsonl", "stdout.log"} <= {p.name for p in (root / "trials" / name).iterdir()}
    # the grid runs the learning block first; the block that learns nothing is pruned, saying why
    assert [trials[n].phase for n in ("sweep-000", "sweep-001")] == ["Succeeded", "Succeeded"]
    twins = [[e.metrics["mean_average_precision"] for e in trials[n].epochs] for n in ("sweep-000", "sweep-001")]
    assert min(twins[0]) > 0.01 and twins[0] == pytest.approx(twins[1], rel=0.01)  # they learned, and alike
    for name in ("sweep-002", "sweep-003"):
        assert trials[name].phase == "Pruned" and trials[name].message.startswith("bandit: best 0 at interval 1")
        assert yaml.safe_load((root / "trials" / name / "trial.yaml").read_text())["spec"]["stop"] is True

    # two trials at once, never more
    spans = [(t.startTime, t.completionTime) for t in trials.values()]
    overlapping = max(sum(start <= moment < end for start, end in spans) for moment, _ in spans)
    assert overlapping == 2

    assert status.bestTrial.name in ("sweep-000", "sweep-001") and status.model == "sweep-best"
    model = load_resource(root / "model" / "model.yaml", DetectionModel)
    assert model.metadata.name == "sweep-best" and model.spec.format == "torchvision"
    assert model.spec.lineage.trial == status.bestTrial.name and model.spec.lineage.experiment == "sweep"
    assert model.spec.lineage.hyperparameters["early_stopping_patience"] in (5, 6)
    assert model.spec.classes == ["circle", "square"]
    assert model.spec.metrics["mean_average_precision"] == pytest.approx(status.bestTrial.metric)
    assert load_artifact(model.spec.artifactUri).classes == ["circle", "square"]
    assert (root / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    out = capsys.readouterr().out
    assert "sweep-002 stopping: bandit" in out and "best model: sweep-best" in out

    # running a finished experiment again trains nothing and reports the same best model
    logs = {name: (root / "trials" / name / "stdout.log").read_bytes() for name in trials}
    assert main(["run", str(spec), "--runs-dir", "runs"]) == 0
    assert {name: (root / "trials" / name / "stdout.log").read_bytes() for name in trials} == logs
    assert "best model: sweep-best" in capsys.readouterr().out


def test_ctrl_c_stops_cleanly_and_a_second_run_resumes_without_training_twice(tmp_path, data, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    spec = experiment(tmp_path / "resume.yaml", "resume", data, [
        {**LEARNS_NOTHING, "learning_rate": 0.01, "number_of_epochs": choice(1, 3)}],
        limits={"maxTrials": 2, "maxConcurrentTrials": 2})
    trials = tmp_path / "runs" / "resume" / "trials"
    runner = subprocess.Popen([sys.executable, "-m", "autodetect.cli", "run", str(spec), "--runs-dir", "runs"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 240
        while not (trials / "resume-000" / "status.json").exists() or \
                trial_status(tmp_path / "runs", "resume", "resume-000").phase != "Succeeded":
            assert runner.poll() is None and time.monotonic() < deadline, runner.stdout.read().decode()
            time.sleep(0.2)
        runner.send_signal(signal.SIGINT)
        output = runner.communicate(timeout=60)[0].decode()
    finally:
        runner.kill()
    assert runner.returncode == 130, output

    interrupted = trial_status(tmp_path / "runs", "resume", "resume-001")
    assert interrupted.phase == "Pending" and "interrupted" in interrupted.message
    assert not (trials / "resume-001" / "pid").exists()
    finished = {file: (trials / "resume-000" / file).read_bytes() for file in ("metrics.jsonl", "status.json")}
    evaluated = (trials / "resume-001" / "metrics.jsonl").read_text() if (trials / "resume-001" / "metrics.jsonl").exists() else ""

    assert main(["run", str(spec), "--runs-dir", "runs"]) == 0
    assert "resume-001 resumed from its checkpoint" in capsys.readouterr().out
    assert {file: (trials / "resume-000" / file).read_bytes() for file in finished} == finished
    resumed = (trials / "resume-001" / "metrics.jsonl").read_text()
    assert resumed.startswith(evaluated)  # the evaluations made before Ctrl-C are kept, not made again
    assert [json.loads(line)["epoch"] for line in resumed.splitlines()] == [1, 2, 3]
    assert trial_status(tmp_path / "runs", "resume", "resume-001").phase == "Succeeded"
    status = ExperimentStatus.model_validate_json((tmp_path / "runs" / "resume" / "status.json").read_text())
    assert status.phase == "Succeeded" and status.trials.succeeded == 2


@pytest.mark.parametrize("change, field", [
    ({"searchSpace": [{"model_name": "yolov8", "learning_rat": 0.1}]}, "spec.searchSpace[0].learning_rat"),
    ({"limits": {"maxConcurrentTrials": 0}}, "spec.limits.maxConcurrentTrials"),
    ({"earlyTermination": {"policy": "bandit"}}, "spec.earlyTermination"),
])
def test_a_bad_experiment_is_refused_naming_the_field(tmp_path, data, capsys, change, field):
    spec = experiment(tmp_path / "bad.yaml", "bad", data, [{"model_name": "yolov8"}])
    obj = yaml.safe_load(spec.read_text())
    obj["spec"].update(change)
    spec.write_text(yaml.safe_dump(obj))
    assert main(["run", str(spec), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert field in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_run_of_another_spec_under_the_same_name_is_refused(tmp_path, data, capsys):
    runs = tmp_path / "runs"
    first = experiment(tmp_path / "a.yaml", "same", data, [{**LEARNS, "learning_rate": 0.01}],
                       limits={"maxTrials": 1})
    (runs / "same").mkdir(parents=True)
    (runs / "same" / "experiment.yaml").write_text(first.read_text())
    second = experiment(tmp_path / "b.yaml", "same", data, [{**LEARNS, "learning_rate": 0.02}])
    assert main(["run", str(second), "--runs-dir", str(runs)]) == 2
    assert "different spec" in capsys.readouterr().err
    assert sorted(set(os.listdir(runs / "same")) - {"lock"}) == ["experiment.yaml"]  # the run lock stays
