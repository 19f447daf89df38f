"""Which Detector class serves which model family; the one place that maps names to classes.
Families are imported lazily so that loading one never imports the other's libraries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from autodetect.errors import AutodetectError
from autodetect.models.base import Detector
from autodetect.models.hyperparameters import TORCHVISION, YOLO, family_of

MODEL_CARD = "model_card.json"


def detector_class(family: str) -> type[Detector]:
    if family == TORCHVISION:
        from autodetect.models.torchvision_detector import TorchvisionDetector

        return TorchvisionDetector
    if family == YOLO:
        from autodetect.models.yolo import YoloDetector

        return YoloDetector
    raise AutodetectError(f"unknown model family {family!r}; known: {TORCHVISION}, {YOLO}")


def build_detector(hyperparameters: dict[str, Any], classes: list[str]) -> Detector:
    """An untrained (or pretrained) detector for resolved hyperparameters."""
    return detector_class(family_of(hyperparameters["model_name"]))(hyperparameters, classes)


def read_model_card(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / MODEL_CARD
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AutodetectError(f"{path}: no model card; is {directory} a model artifact?") from None
    except json.JSONDecodeError as exc:
        raise AutodetectError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    missing = [key for key in ("family", "classes", "hyperparameters", "weights") if key not in card]
    if missing:
        raise AutodetectError(f"{path}: missing {', '.join(missing)}")
    weights = card["weights"]
    if not isinstance(weights, str) or not weights or Path(weights).is_absolute() or not (
            (Path(directory) / weights).resolve().is_relative_to(Path(directory).resolve())):
        raise AutodetectError(f"{path}: weights {weights!r} must be a file inside the artifact folder {directory}")
    return card


def load_artifact(directory: str | Path) -> Detector:
    """A ready detector from an artifact directory (or its storage URI): weights + model_card.json."""
    if isinstance(directory, str):
        from autodetect.storage import resolve_uri

        directory = resolve_uri(directory)
    card = read_model_card(directory)
    return detector_class(card["family"]).load(Path(directory), card)
