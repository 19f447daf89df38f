"""The one interface every model family implements (ultralytics YOLO, torchvision detectors).

The trainer, the evaluator and the scoring server only ever talk to a `Detector`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from autodetect.data.dataset import Dataset


@dataclass(frozen=True)
class Detection:
    """One predicted box, coordinates normalised to [0, 1] of the input image."""

    label: str
    score: float
    top_x: float
    top_y: float
    bottom_x: float
    bottom_y: float

    def to_json(self) -> dict:
        """Azure AutoML's scoring response shape."""
        return {"box": {"topX": self.top_x, "topY": self.top_y, "bottomX": self.bottom_x, "bottomY": self.bottom_y},
                "label": self.label, "score": self.score}


@dataclass(frozen=True)
class PredictOptions:
    score_threshold: float
    iou_threshold: float
    max_detections: int

    @classmethod
    def from_hyperparameters(cls, hp: dict[str, Any]) -> "PredictOptions":
        return cls(hp["box_score_threshold"], hp["nms_iou_threshold"], hp["box_detections_per_image"])


class EpochHook(Protocol):
    def __call__(self, epoch: int, losses: dict[str, float], detector: "Detector") -> bool:
        """Called after every training epoch (1-based); returns True to stop training now."""


def epoch_progress(epoch: int, total: int):
    """The per-batch progress bar of one training epoch, shown only when stderr is a terminal."""
    import sys

    from tqdm import tqdm

    return tqdm(total=total, desc=f"epoch {epoch}", unit="batch", leave=False, disable=not sys.stderr.isatty())


class Detector(ABC):
    """A detector of one family. `hyperparameters` are already resolved (see models.hyperparameters)."""

    family: ClassVar[str]

    def __init__(self, hyperparameters: dict[str, Any], classes: list[str]):
        self.hyperparameters = hyperparameters
        self.classes = list(classes)

    @property
    @abstractmethod
    def input_size(self) -> dict[str, int]:
        """What the model resizes inputs to, for the model card (e.g. {"image_size": 640})."""

    @abstractmethod
    def fit(self, train: Dataset, validation: Dataset, workdir: Path, on_epoch_end: EpochHook, resume: bool) -> None:
        """Train for number_of_epochs, checkpointing in workdir after every epoch so that
        `resume=True` continues after the last finished epoch; calls on_epoch_end after each."""

    @abstractmethod
    def predict(self, images: list[np.ndarray], options: PredictOptions) -> list[list[Detection]]:
        """Detections for a batch of HxWx3 uint8 RGB images."""

    @abstractmethod
    def save(self, directory: Path) -> str:
        """Write the trained weights into directory; returns the file name (relative)."""

    @classmethod
    @abstractmethod
    def load(cls, directory: Path, card: dict[str, Any]) -> "Detector":
        """Rebuild a detector from an artifact written by `save` and its model card."""

    def export_onnx(self, path: Path) -> Path:
        raise NotImplementedError(f"{type(self).__name__} cannot be exported to ONNX")
