"""A planted checkpoint whose unpickling would run code: every loader refuses it, names the file, and
nothing runs (issue 11, item 1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from autodetect.errors import WeightsUnavailable
from autodetect.models.hyperparameters import resolve
from autodetect.models.registry import load_artifact
from autodetect.models.yolo import YoloDetector


class Payload:
    """Unpickling this calls open(marker, "w"): a file appears if the loader runs pickled code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def plant(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 1, "model": Payload(marker), "ema": None}, path)
    return path


def test_the_planted_pickle_would_run_code(tmp_path):
    """The control: a plain torch.load (weights_only=False) of the same file does run it."""
    planted, marker = plant(tmp_path / "last.pt", tmp_path / "ran"), tmp_path / "ran"
    torch.load(planted, weights_only=False)
    assert marker.exists()


def test_yolo_resume_refuses_a_planted_last_pt(tmp_path):
    marker = tmp_path / "ran"
    last = plant(tmp_path / "work" / "ultralytics" / "run" / "weights" / "last.pt", marker)
    hp = resolve({"model_name": "yolov8", "model_size": "small", "pretrained": False, "image_size": 64,
                  "number_of_epochs": 2})
    with pytest.raises(WeightsUnavailable, match=str(last)):
        YoloDetector(hp, ["a"]).fit(None, None, tmp_path / "work", lambda *a: False, resume=True)
    assert not marker.exists()


@pytest.mark.parametrize("family, model_name", [("ultralytics", "yolov8"), ("torchvision", "fasterrcnn_resnet50_fpn")])
def test_artifacts_with_a_planted_pickle_are_refused(tmp_path, family, model_name):
    marker = tmp_path / "ran"
    weights = plant(tmp_path / "artifact" / "model.pt", marker)
    hp = resolve({"model_name": model_name, "pretrained": False})
    (tmp_path / "artifact" / "model_card.json").write_text(json.dumps(
        {"family": family, "classes": ["a"], "hyperparameters": hp, "weights": "model.pt"}))
    with pytest.raises(WeightsUnavailable, match=str(weights)):
        load_artifact(tmp_path / "artifact")
    assert not marker.exists()
