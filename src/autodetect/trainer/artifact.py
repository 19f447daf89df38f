"""The model artifact: a directory holding the weights file and model_card.json, everything serving
needs to load the model with nothing else (models.registry.load_artifact)."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from autodetect import __version__
from autodetect.models.base import Detector
from autodetect.models.registry import MODEL_CARD


@dataclass(frozen=True)
class DatasetInfo:
    fingerprint: str
    training_uri: str
    validation_uri: str | None
    training_images: int
    validation_images: int

    def to_json(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "training": self.training_uri, "validation": self.validation_uri,
                "images": self.training_images, "validation_images": self.validation_images}


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def model_card(detector: Detector, *, name: str, weights: str, version: str, metrics: dict[str, Any],
               epoch: int | None, dataset: DatasetInfo) -> dict[str, Any]:
    return {
        "name": name,
        "version": version,  # the weights' content hash: a new model is a new version
        "family": detector.family,
        "model_name": detector.hyperparameters["model_name"],
        "format": detector.family,
        "weights": weights,
        "classes": detector.classes,
        "input_size": detector.input_size,
        "hyperparameters": detector.hyperparameters,
        "metrics": metrics,
        "epoch": epoch,
        "dataset": dataset.to_json(),
        "created": datetime.now(timezone.utc).isoformat(),
        "autodetect_version": __version__,
    }


def write_artifact(directory: Path, detector: Detector, *, name: str, metrics: dict[str, Any], epoch: int | None,
                   dataset: DatasetInfo) -> Path:
    """Write the detector's current weights and its card to directory, replacing what was there
    only once the new artifact is complete."""
    partial = _fresh(directory.with_name(directory.name + ".partial"))
    weights = detector.save(partial)
    card = model_card(detector, name=name, weights=weights, version=_digest(partial / weights),
                      metrics=metrics, epoch=epoch, dataset=dataset)
    (partial / MODEL_CARD).write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
    _swap(partial, directory)
    return directory


def publish(source: Path, target: Path) -> Path:
    """Copy a finished artifact directory to target (e.g. <artifacts>/<trial>/), whole or not at all."""
    partial = target.with_name(target.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, partial)
    _swap(partial, target)
    return target


def _fresh(directory: Path) -> Path:
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    return directory


def _swap(partial: Path, directory: Path) -> None:
    old = directory.with_name(directory.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if directory.exists():
        directory.rename(old)
    partial.rename(directory)
    if old.exists():
        shutil.rmtree(old)
