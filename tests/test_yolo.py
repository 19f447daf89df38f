"""The ultralytics YOLO adapter: hyperparameter mapping, data layout, pretrained weights, and (slow)
real CPU training with the epoch hook, stop, resume, save/load and ONNX export."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from autodetect.data.dataset import Box, Dataset, ImageRecord, read_jsonl
from autodetect.data.images import load_rgb
from autodetect.data.synth import synthesize
from autodetect.errors import DataError, SpecError, WeightsUnavailable
from autodetect.models.base import PredictOptions
from autodetect.models.hyperparameters import resolve
from autodetect.models.yolo import (YoloDetector, _Trainer, build_model, label_lines, lr_factor, model_config,
                                    pretrained_file_name, pretrained_weights, train_args, write_yolo_dataset)

torch.set_num_threads(2)

# From scratch, the first epoch's loss is low and uninformative (random boxes win few assignments in
# ultralytics' task-aligned assigner); from the second epoch on it falls.
TINY = {"model_name": "yolov8", "model_size": "small", "pretrained": False, "image_size": 64,
        "training_batch_size": 8, "validation_batch_size": 8, "optimizer": "adamw", "learning_rate": 0.002,
        "warmup_cosine_lr_warmup_epochs": 0, "number_of_epochs": 4}
OPTIONS = PredictOptions(score_threshold=0.001, iou_threshold=0.5, max_detections=50)


def hp(**overrides):
    return resolve({**TINY, **overrides})


@pytest.mark.parametrize("name, size, config, weights", [
    ("yolov5", "medium", "yolov5m.yaml", "yolov5mu.pt"),
    ("yolov8", "small", "yolov8s.yaml", "yolov8s.pt"),
    ("yolo11", "xlarge", "yolo11x.yaml", "yolo11x.pt"),
    ("yolov8", "large", "yolov8l.yaml", "yolov8l.pt"),
])
def test_model_config_and_weights_names(name, size, config, weights):
    assert model_config(name, size) == config
    assert pretrained_file_name(name, size) == weights


def test_model_config_refuses_unknown_names():
    with pytest.raises(SpecError, match="model_size"):
        model_config("yolov8", "nano")
    with pytest.raises(SpecError, match="model_name"):
        model_config("fasterrcnn_resnet50_fpn", "small")


def test_step_schedule_is_azures():
    factor = lr_factor(hp(learning_rate_scheduler="step", step_lr_gamma=0.5, step_lr_step_size=2), 10)
    assert [factor(e) for e in range(5)] == [1.0, 1.0, 0.5, 0.5, 0.25]


def test_warmup_cosine_schedule_is_azures():
    factor = lr_factor(hp(warmup_cosine_lr_cycles=0.45, warmup_cosine_lr_warmup_epochs=2), 12)
    assert factor(0) == factor(2) == 1.0  # flat during warmup (ultralytics ramps up within it)
    assert factor(7) == pytest.approx(0.5 * (1 + math.cos(2 * math.pi * 0.45 * 0.5)))
    assert factor(12) == pytest.approx(0.5 * (1 + math.cos(2 * math.pi * 0.45)))
    assert all(factor(e) >= factor(e + 1) for e in range(12))


def test_train_args_map_azure_names(tmp_path):
    args = train_args(hp(optimizer="sgd", momentum=0.8, weight_decay=0.001, training_batch_size=4,
                         gradient_accumulation_step=3, layers_to_freeze=5, multi_scale=True, random_seed=7,
                         learning_rate_scheduler="step"), tmp_path / "data.yaml", tmp_path, "cpu")
    assert args["optimizer"] == "SGD" and args["lr0"] == 0.002 and args["momentum"] == 0.8
    assert args["nbs"] == 12 and args["batch"] == 4 and args["weight_decay"] == 0.001
    assert args["freeze"] == 5 and args["multi_scale"] == 0.5 and args["seed"] == 7 and args["warmup_epochs"] == 0
    assert args["val"] is False and args["plots"] is False and args["patience"] == 0 and args["amp"] is False
    assert Path(args["project"]).is_absolute() and args["exist_ok"] is True
    assert train_args(hp(), tmp_path / "d.yaml", tmp_path, "cpu")["freeze"] is None


def _record(tmp_path: Path, *boxes: Box, name: str = "a.png") -> ImageRecord:
    path = tmp_path / name
    path.write_bytes(b"")
    return ImageRecord(name, path, 100, 50, "png", boxes)


def test_label_lines_are_yolo_txt_without_crowd_boxes(tmp_path):
    record = _record(tmp_path, Box("cat", 0.1, 0.2, 0.5, 0.6), Box("dog", 0.0, 0.0, 1.0, 1.0, is_crowd=True))
    assert label_lines(record, {"dog": 0, "cat": 1}, "x.jsonl") == ["1 0.3 0.4 0.4 0.4"]
    with pytest.raises(DataError, match="'cat' is not one of"):
        label_lines(record, {"dog": 0}, "x.jsonl")


def test_write_yolo_dataset_layout(tmp_path):
    train = Dataset([_record(tmp_path, Box("cat", 0.1, 0.2, 0.5, 0.6)), _record(tmp_path, name="b.png")], "t.jsonl")
    data_yaml = write_yolo_dataset(train, Dataset([], "v.jsonl", ["cat"]), ["cat"], tmp_path / "yolo")
    images = sorted((tmp_path / "yolo/train/images").iterdir())
    assert [p.name for p in images] == ["000000.png", "000001.png"] and images[1].resolve() == tmp_path / "b.png"
    assert (tmp_path / "yolo/train/labels/000001.txt").read_text() == ""  # a background image
    assert "names:\n  0: cat" in data_yaml.read_text()
    assert len(list((tmp_path / "yolo/val/images").iterdir())) == 2  # no validation set: ultralytics gets train


def test_pretrained_without_weights_is_refused(shapes, tmp_path):
    with pytest.raises(WeightsUnavailable, match="yolov8s.pt.*could not be"):  # the hub is unreachable in tests
        YoloDetector(hp(pretrained=True), shapes.classes).fit(shapes, shapes, tmp_path, lambda *a: False, resume=False)
    assert not (tmp_path / "ultralytics").exists()  # refused before any work


def _ultralytics_checkpoint(path: Path, config: str, nc: int) -> Path:
    from ultralytics.nn.tasks import DetectionModel

    torch.save({"model": DetectionModel(config, nc=nc, verbose=False).half(), "train_args": {}}, path)
    return path


def test_pretrained_weights_load_from_the_weights_dir(tmp_path, monkeypatch):
    _ultralytics_checkpoint(tmp_path / "yolov8s.pt", "yolov8s.yaml", nc=80)
    monkeypatch.setenv("AUTODETECT_WEIGHTS_DIR", str(tmp_path))
    source = torch.load(tmp_path / "yolov8s.pt", weights_only=False)["model"].float().state_dict()
    params = hp(pretrained=True)
    model = build_model(params, ["a", "b"], pretrained_weights(params))
    stem = "model.0.conv.weight"
    assert torch.equal(model.state_dict()[stem], source[stem])
    assert model.model[-1].nc == 2


def test_pretrained_weights_of_another_architecture_are_refused(tmp_path):
    weights = _ultralytics_checkpoint(tmp_path / "other.pt", "yolo11s.yaml", nc=80)
    with pytest.raises(WeightsUnavailable, match="does not fit yolov8s.yaml"):
        build_model(hp(), ["a"], weights)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Dataset:
    return read_jsonl(synthesize(tmp_path_factory.mktemp("shapes"), classes=2, images=24, size=96, seed=3))


@pytest.mark.parametrize("given, expected", [
    ({"optimizer": "sgd", "nesterov": False}, {"nesterov": False, "momentum": 0.9}),
    ({"optimizer": "adamw", "beta1": 0.8, "beta2": 0.99, "ams_gradient": True}, {"betas": (0.8, 0.99), "amsgrad": True}),
])
def test_trainer_builds_azures_optimizer_and_schedule(shapes, tmp_path, given, expected):
    params = hp(**given, learning_rate_scheduler="step", step_lr_gamma=0.1, step_lr_step_size=1)
    data_yaml = write_yolo_dataset(shapes, shapes, shapes.classes, tmp_path / "data")
    trainer = _Trainer(params, train_args(params, data_yaml, tmp_path, "cpu"))
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    trainer.optimizer = trainer.build_optimizer(model, trainer.args.optimizer, 0.002, 0.9, 1e-4)
    assert type(trainer.optimizer).__name__ == ("SGD" if given["optimizer"] == "sgd" else "AdamW")
    for group in trainer.optimizer.param_groups:
        assert {key: group[key] for key in expected} == expected
    trainer._setup_scheduler()
    assert [trainer.lf(e) for e in range(3)] == pytest.approx([1.0, 0.1, 0.01])


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def trained(shapes, tmp_path_factory):
    """Four epochs, killed after the third (an exception where a SIGKILL would be: last.pt is saved before
    the hook runs) and resumed."""
    workdir, calls = tmp_path_factory.mktemp("work"), []
    detector = YoloDetector(hp(), shapes.classes)

    def hook(epoch, losses, det):
        predictions = det.predict([load_rgb(r.path) for r in shapes.records[:3]], OPTIONS)
        calls.append((epoch, losses, predictions))
        if epoch == 3 and len(calls) == 3:
            raise Killed

    with pytest.raises(Killed):
        detector.fit(shapes, shapes, workdir, hook, resume=False)
    resumed = YoloDetector(hp(), shapes.classes)
    resumed.fit(shapes, shapes, workdir, hook, resume=True)
    return resumed, calls, workdir


@pytest.mark.slow
def test_training_reports_every_epoch_with_a_falling_loss(trained):
    _, calls, _ = trained
    assert [epoch for epoch, _, _ in calls] == [1, 2, 3, 4]  # the resumed run went on after epoch 3
    losses = [losses for _, losses, _ in calls]
    assert set(losses[0]) == {"box_loss", "cls_loss", "dfl_loss", "loss"}
    # Not across the resume: ultralytics resumes from the EMA weights, which a few updates barely move.
    assert losses[2]["loss"] < losses[1]["loss"]
    assert math.isfinite(losses[3]["loss"])
    for _, _, predictions in calls:  # predict() works mid-training, on the current weights
        assert len(predictions) == 3
        for det in (d for image in predictions for d in image):
            assert 0 <= det.top_x <= det.bottom_x <= 1 and 0 <= det.top_y <= det.bottom_y <= 1


@pytest.mark.slow
def test_resume_after_the_end_trains_no_more(trained, shapes):
    _, _, workdir = trained
    detector, calls = YoloDetector(hp(), shapes.classes), []
    detector.fit(shapes, shapes, workdir, lambda *a: calls.append(a), resume=True)
    assert calls == [] and detector.predict([load_rgb(shapes.records[0].path)], OPTIONS)


@pytest.mark.slow
def test_save_load_round_trip_predicts_the_same_boxes(trained, shapes, tmp_path):
    detector, _, _ = trained
    images = [load_rgb(r.path) for r in shapes.records[:4]]
    card = {"hyperparameters": detector.hyperparameters, "classes": detector.classes,
            "weights": detector.save(tmp_path)}
    loaded = YoloDetector.load(tmp_path, card)
    before, after = detector.predict(images, OPTIONS), loaded.predict(images, OPTIONS)
    assert sum(map(len, before)) > 0 and after == before


@pytest.mark.slow
def test_export_onnx_runs_in_onnxruntime(trained, tmp_path):
    import onnxruntime

    detector, _, _ = trained
    path = detector.export_onnx(tmp_path / "out" / "model.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {"images": np.zeros((2, 3, 64, 64), np.float32)})
    assert output.shape[:2] == (2, 4 + len(detector.classes))


@pytest.mark.slow
def test_hook_stops_training(shapes, tmp_path):
    detector, epochs = YoloDetector(hp(number_of_epochs=5), shapes.classes), []
    detector.fit(shapes, shapes, tmp_path, lambda epoch, losses, det: epochs.append(epoch) or True, resume=False)
    assert epochs == [1]
    assert detector.predict([load_rgb(shapes.records[0].path)], OPTIONS) is not None
