"""`autodetect import azure`: Azure ML's fridge-items AutoML job YAML becomes the equivalent DetectionExperiment."""

import shutil
from pathlib import Path

from autodetect.api.loader import load_resource
from autodetect.api.v1alpha1 import DetectionExperiment
from autodetect.cli import main

JOB = Path(__file__).parent / "azure" / "cli-automl-image-object-detection-task-fridge-items.yml"


def test_import_writes_the_equivalent_experiment(tmp_path, capsys):
    job = shutil.copy(JOB, tmp_path / JOB.name)
    out = tmp_path / "experiment.yaml"
    assert main(["import", "azure", str(job), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "not carried over: compute azureml:gpu-cluster" in err
    assert "not carried over: validation_data.path azureml:fridge-validation:1" in err
    spec = load_resource(out, DetectionExperiment).spec
    assert spec.dataset.training.uri == f"file://{tmp_path}/data/training-mltable-folder"
    assert spec.dataset.validation.uri == "pvc://datasets/fridge-validation"
    assert spec.primaryMetric == "mean_average_precision"
    assert (spec.limits.maxTrials, spec.limits.maxConcurrentTrials, spec.limits.timeoutMinutes,
            spec.limits.trialTimeoutMinutes) == (10, 2, 60, 20)
    assert spec.sampling.algorithm == "random"
    assert (spec.earlyTermination.policy, spec.earlyTermination.evaluationInterval, spec.earlyTermination.slackFactor,
            spec.earlyTermination.delayEvaluation) == ("bandit", 2, 0.2, 6)
    assert [b["model_name"] for b in spec.searchSpace] == ["yolov5", "fasterrcnn_resnet50_fpn"]
    assert all(b["early_stopping"] is True and b["evaluation_frequency"] == 1 for b in spec.searchSpace)
    assert spec.searchSpace[1]["optimizer"] == "choice('sgd', 'adam', 'adamw')"  # the compact form, kept


def test_run_on_an_azure_job_says_so_and_gives_the_command(capsys):
    assert main(["run", str(JOB)]) == 2
    err = capsys.readouterr().err
    assert "is an Azure ML AutoML job" in err and f"autodetect import azure {JOB} --out experiment.yaml" in err
