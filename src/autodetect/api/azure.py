"""An Azure ML AutoML image job (CLI v2 YAML, `type: automl`, `task: image_object_detection`) as the
equivalent DetectionExperiment, with what cannot be carried over listed by name."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from autodetect.errors import SpecError

LIMITS = {"max_trials": "maxTrials", "max_concurrent_trials": "maxConcurrentTrials",
          "timeout_minutes": "timeoutMinutes", "trial_timeout_minutes": "trialTimeoutMinutes"}
TERMINATION = {"evaluation_interval": "evaluationInterval", "delay_evaluation": "delayEvaluation",
               "slack_factor": "slackFactor", "slack_amount": "slackAmount",
               "truncation_percentage": "truncationPercentage", "exclude_finished_jobs": "excludeFinishedJobs"}
POLICIES = {"bandit": "bandit", "median_stopping": "median_stopping", "truncation_selection": "truncation_selection"}
# Settings of the Azure job that only mean something on Azure: nothing to carry over, nothing to list.
DESCRIPTIVE = {"$schema", "type", "task", "experiment_name", "description", "display_name", "tags",
               "target_column_name", "log_verbosity", "name"}


def is_azure_job(obj: object) -> bool:
    return isinstance(obj, dict) and "kind" not in obj and (
        obj.get("type") == "automl" or "azureml" in str(obj.get("$schema", "")) or
        ("task" in obj and "training_data" in obj))


def import_azure_job(obj: Any, source: str, name: str | None = None,
                     base: Path | None = None) -> tuple[dict[str, Any], list[str]]:
    """(DetectionExperiment as a plain dict, what was not carried over). Relative data paths are taken from
    base (the job file's folder), as Azure takes them."""
    from autodetect.models.hyperparameters import canonical_name

    if not is_azure_job(obj):
        raise SpecError(source, "not an Azure ML AutoML job (type: automl)")
    if obj.get("task") != "image_object_detection":
        raise SpecError(f"{source}: task", f"only image_object_detection is carried over, not {obj.get('task')!r}")
    dropped: list[str] = []
    dataset: dict[str, Any] = {}
    for key, field in (("training_data", "training"), ("validation_data", "validation")):
        if key in obj:
            dataset[field] = {"uri": _data_uri(obj[key], f"{key}.path", base or Path("."), dropped, source)}
    if "training" not in dataset:
        raise SpecError(f"{source}: training_data", "is required")
    if "validation_data_size" in obj:
        dataset["validationSplit"] = obj["validation_data_size"]

    sweep = obj.get("sweep") or {}
    limits_in = {**(obj.get("limits") or {}), **(sweep.get("limits") or {})}
    limits = {LIMITS[k]: v for k, v in limits_in.items() if k in LIMITS}
    dropped += [f"limits.{k}" for k in limits_in if k not in LIMITS]

    fixed: dict[str, Any] = {}
    for key, value in (obj.get("training_parameters") or {}).items():
        try:
            canonical_name(key)
            fixed[key] = value
        except SpecError:
            dropped.append(f"training_parameters.{key} (not a hyperparameter here)")
    blocks = obj.get("search_space") or [{}]
    if not isinstance(blocks, list):
        blocks = [blocks]
    search_space = [{**fixed, **block} for block in blocks]
    if not any("model_name" in block for block in search_space):
        dropped.append("search_space: no model_name, so the default model (yolov5) is searched")

    spec: dict[str, Any] = {"dataset": dataset, "primaryMetric": obj.get("primary_metric", "mean_average_precision"),
                            "searchSpace": search_space, "limits": limits}
    if "sampling_algorithm" in sweep:
        spec["sampling"] = {"algorithm": str(sweep["sampling_algorithm"]).lower()}
    termination = sweep.get("early_termination")
    if termination:
        policy = POLICIES.get(str(termination.get("type", "")).lower())
        if policy is None:
            raise SpecError(f"{source}: sweep.early_termination.type",
                            f"unknown policy {termination.get('type')!r} (one of {', '.join(POLICIES)})")
        spec["earlyTermination"] = {"policy": policy, **{TERMINATION[k]: v for k, v in termination.items() if k in TERMINATION}}
        dropped += [f"sweep.early_termination.{k}" for k in termination if k not in TERMINATION and k != "type"]
    dropped += [f"sweep.{k}" for k in sweep if k not in ("limits", "sampling_algorithm", "early_termination")]
    if "compute" in obj:
        dropped.append(f"compute {obj['compute']} (set spec.trialTemplate: resources, nodeSelector, tolerations)")
    known = DESCRIPTIVE | {"training_data", "validation_data", "validation_data_size", "primary_metric", "sweep",
                           "limits", "training_parameters", "search_space", "compute"}
    dropped += [k for k in obj if k not in known]
    metadata_name = name or _dns_name(str(obj.get("experiment_name") or obj.get("name") or Path(source).stem))
    experiment = {"apiVersion": "autodetect.dev/v1alpha1", "kind": "DetectionExperiment",
                  "metadata": {"name": metadata_name}, "spec": spec}
    return experiment, dropped


def _data_uri(data: Any, field: str, base: Path, dropped: list[str], source: str) -> str:
    path = data.get("path") if isinstance(data, dict) else data
    if not isinstance(path, str) or not path:
        raise SpecError(f"{source}: {field}", "must be a path")
    if path.startswith("azureml:"):  # a data asset version (azureml:name:1) or a datastore URI
        asset = re.sub(r"[^a-z0-9-]+", "-", path.removeprefix("azureml:").split("/")[-1].split(":")[0].lower()).strip("-")
        dropped.append(f"{field} {path} (an Azure data asset: copy its files to storage autodetect reads and set "
                       f"the uri; written as pvc://datasets/{asset})")
        return f"pvc://datasets/{asset}"
    if "://" in path:
        return path
    return "file://" + os.path.abspath(base / path.removeprefix("./"))


def _dns_name(text: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].strip("-")
    return name or "experiment"
