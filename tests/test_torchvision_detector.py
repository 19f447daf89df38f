"""The torchvision family: building, schedules, freezing, pretrained weights, predict, ONNX export."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from autodetect.data.synth import synthesize
from autodetect.errors import SpecError, WeightsUnavailable
from autodetect.models.base import Detection, PredictOptions
from autodetect.models.hyperparameters import TORCHVISION_MODELS, resolve
from autodetect.models.registry import build_detector
from autodetect.models.torchvision_detector import (
    ONNX_SCORE_THRESHOLD, TorchvisionDetector, backbone_layers, build_model, lr_factor, make_optimizer, to_target,
)
from autodetect.models.weights import WEIGHTS_DIR_ENV
from detections import assert_same_detections

SMALL = "fasterrcnn_mobilenet_v3_large_320_fpn"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def hp(**given) -> dict:
    return resolve({"model_name": SMALL, "pretrained": False, "min_size": 96, "max_size": 96, **given})


def test_lr_factor_warmup_cosine_as_azure_defines_it():
    h = hp(number_of_epochs=10, warmup_cosine_lr_warmup_epochs=2, warmup_cosine_lr_cycles=0.45)
    steps = 5  # per epoch: warm-up is 10 steps, the cosine the other 40
    assert lr_factor(h, 0, steps) == 0.0
    assert lr_factor(h, 5, steps) == pytest.approx(0.5)
    assert lr_factor(h, 10, steps) == pytest.approx(1.0)
    assert lr_factor(h, 30, steps) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.45 * 2 * 0.5)))
    assert lr_factor(h, 50, steps) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.9)))


def test_lr_factor_step():
    h = hp(learning_rate_scheduler="step", step_lr_step_size=2, step_lr_gamma=0.1)
    assert [lr_factor(h, s, 3) for s in (0, 5, 6, 11, 12)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])


@pytest.mark.parametrize("name, expected", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_optimizers_take_azures_settings(name, expected):
    h = hp(optimizer=name, learning_rate=0.02, weight_decay=0.001, beta1=0.8, beta2=0.99, ams_gradient=True, momentum=0.7)
    optimizer = make_optimizer(h, [torch.nn.Parameter(torch.zeros(1))])
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, expected)
    assert (group["lr"], group["weight_decay"]) == (0.02, 0.001)
    if name == "sgd":
        assert (group["momentum"], group["nesterov"]) == (0.7, True)
    else:
        assert (group["betas"], group["amsgrad"]) == ((0.8, 0.99), True)


@pytest.mark.slow
@pytest.mark.parametrize("name", TORCHVISION_MODELS)
def test_every_model_builds_with_its_thresholds(name):
    given = {"model_name": name, "pretrained": False, "box_score_threshold": 0.42, "nms_iou_threshold": 0.33,
             "box_detections_per_image": 7}
    if not name.startswith("ssdlite"):
        given |= {"min_size": 200, "max_size": 300}
    model = build_model(resolve(given), num_classes=4)
    holder = model.roi_heads if name.startswith("fasterrcnn") else model
    assert (holder.score_thresh, holder.nms_thresh, holder.detections_per_img) == (0.42, 0.33, 7)
    if not name.startswith("ssdlite"):
        assert (model.transform.min_size, model.transform.max_size) == ((200,), 300)
    assert len(backbone_layers(model)) >= 5


def test_layers_to_freeze_freezes_the_first_backbone_layers():
    detector = TorchvisionDetector(hp(layers_to_freeze=3), ["a"])
    body = detector.model.backbone.body
    assert all(not p.requires_grad for i in range(3) for p in body[str(i)].parameters())
    assert all(p.requires_grad for p in body["3"].parameters())
    assert all(p.requires_grad for p in detector.model.roi_heads.parameters())


def test_too_many_layers_to_freeze_names_the_field():
    with pytest.raises(SpecError, match="layers_to_freeze"):
        TorchvisionDetector(hp(layers_to_freeze=99), ["a"])


def test_targets_are_pixels_with_background_zero_and_flip_mirrors():
    from autodetect.data.dataset import Box, ImageRecord

    record = ImageRecord("x.png", None, 200, 100, "png",
                         (Box("b", 0.1, 0.2, 0.3, 0.6), Box("a", 0.0, 0.0, 1.0, 1.0, is_crowd=True)))
    target = to_target(record, 200, 100, {"a": 0, "b": 1}, flip=False)
    assert target["boxes"].tolist()[0] == pytest.approx([20, 20, 60, 60])
    assert target["labels"].tolist() == [2]  # crowd boxes are left out of training
    assert to_target(record, 200, 100, {"a": 0, "b": 1}, flip=True)["boxes"].tolist()[0] == pytest.approx([140, 20, 180, 60])


def test_pretrained_without_weights_says_how_to_fix_it():
    with pytest.raises(WeightsUnavailable, match="could not be.*Put .*pth in .*pretrained_weights.*pretrained: false"):
        build_detector(hp(pretrained=True), ["a"])


def test_pretrained_weights_that_cannot_be_fetched(tmp_path):
    with pytest.raises(WeightsUnavailable, match="no such file"):
        build_detector(hp(pretrained=True, pretrained_weights=str(tmp_path / "missing.pth")), ["a"])
    with pytest.raises(WeightsUnavailable, match="could not be fetched"):
        build_detector(hp(pretrained=True, pretrained_weights="http://127.0.0.1:9/w.pth"), ["a"])
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsUnavailable, match="not a readable torch weights file"):
        build_detector(hp(pretrained=True, pretrained_weights=str(tmp_path / "junk.pth")), ["a"])


def test_pretrained_from_the_weights_dir_loads_all_but_the_class_head(tmp_path, monkeypatch):
    source = build_model(hp(), num_classes=91)  # a COCO-shaped checkpoint
    torch.save(source.state_dict(), tmp_path / f"{SMALL}.pth")
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(tmp_path))
    detector = build_detector(hp(pretrained=True), ["a", "b"])
    loaded = detector.model.state_dict()
    assert torch.equal(loaded["backbone.body.0.0.weight"], source.state_dict()["backbone.body.0.0.weight"])
    assert loaded["roi_heads.box_predictor.cls_score.weight"].shape[0] == 3
    # pretrained backbones keep their norms frozen, as torchvision trains them
    assert not any(p.requires_grad for m in detector.model.backbone.body.modules()
                   if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters())


def test_predict_honours_options_and_normalises(tmp_path):
    detector = TorchvisionDetector(hp(), ["a", "b"])
    image = np.random.default_rng(0).integers(0, 255, (80, 120, 3), dtype=np.uint8)
    many, few = detector.predict([image, image], PredictOptions(0.0, 0.5, 5))
    assert 0 < len(many) <= 5 and len(few) == len(many)
    for d in many:
        assert d.label in ("a", "b") and 0 <= d.top_x < d.bottom_x <= 1 and 0 <= d.top_y < d.bottom_y <= 1
    assert detector.predict([image], PredictOptions(1.0, 0.5, 5)) == [[]]


@pytest.mark.slow
@pytest.mark.parametrize("name", [SMALL, "retinanet_resnet50_fpn"])
def test_onnx_export_gives_the_same_boxes(tmp_path, name):
    import onnxruntime

    torch.manual_seed(0)
    detector = TorchvisionDetector(hp(model_name=name), ["a", "b"])
    path = detector.export_onnx(tmp_path / "model.onnx")
    image = synthesize_one(tmp_path)
    reference = detector.predict([image], PredictOptions(ONNX_SCORE_THRESHOLD, 0.5, 100))[0]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    boxes, labels, scores = session.run(None, {"image": image.transpose(2, 0, 1).astype(np.float32) / 255})
    h, w = image.shape[:2]
    exported = [Detection(detector.classes[label - 1], float(score), x1 / w, y1 / h, x2 / w, y2 / h)
                for (x1, y1, x2, y2), label, score in zip(boxes.tolist(), labels.tolist(), scores.tolist())]
    assert reference
    assert_same_detections(exported, reference, floor=ONNX_SCORE_THRESHOLD, box_tol=1e-3, max_detections=100)


def synthesize_one(tmp_path) -> np.ndarray:
    from autodetect.data.images import load_rgb

    synthesize(tmp_path / "one", classes=2, images=1, size=(120, 90), seed=3)
    return load_rgb(tmp_path / "one" / "images" / "0000.png")


@pytest.mark.slow
def test_fit_resumes_after_the_checkpoint_and_the_artifact_predicts_alike(tmp_path):
    from autodetect.data.dataset import read_jsonl
    from autodetect.models.registry import load_artifact
    from autodetect.trainer.artifact import DatasetInfo, write_artifact

    data = read_jsonl(synthesize(tmp_path / "data", classes=2, images=6, size=96, seed=2))
    h = hp(number_of_epochs=2, training_batch_size=3)
    calls = []

    def stop_after_first(epoch, losses, detector):
        calls.append((epoch, losses))
        return True

    # the first run's seed differs, so a resumed run that started afresh could not report its losses
    TorchvisionDetector({**h, "random_seed": 1}, data.classes).fit(data, data, tmp_path / "w", stop_after_first, resume=False)
    assert [epoch for epoch, _ in calls] == [1] and calls[0][1]["loss"] > 0
    first_losses, calls = calls[0][1], []
    resumed = TorchvisionDetector(h, data.classes)
    resumed.fit(data, data, tmp_path / "w", lambda epoch, losses, d: calls.append((epoch, losses)) and False, resume=True)
    # the checkpointed epoch is handed to the hook again, then training goes on
    assert [epoch for epoch, _ in calls] == [1, 2] and calls[0][1] == first_losses

    write_artifact(tmp_path / "artifact", resumed, name="m", metrics={}, epoch=2,
                   dataset=DatasetInfo(data.fingerprint(), "x.jsonl", None, 6, 6))
    images = [synthesize_one(tmp_path)]
    options = PredictOptions(0.0, 0.5, 10)
    expected, got = resumed.predict(images, options)[0], load_artifact(tmp_path / "artifact").predict(images, options)[0]
    assert len(expected) > 0 and [d.label for d in got] == [d.label for d in expected]
    np.testing.assert_allclose([[d.top_x, d.top_y, d.bottom_x, d.bottom_y, d.score] for d in got],
                               [[d.top_x, d.top_y, d.bottom_x, d.bottom_y, d.score] for d in expected], atol=1e-5)
