"""The YOLO ONNX Runtime path gives the PyTorch path's boxes, on a model whose boxes vary (an untrained
yolov8n with its batch-norm statistics calibrated, so that scores and boxes depend on the image).
The torchvision family's ONNX runtime is compared over HTTP in test_serving.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from autodetect.data.images import load_rgb
from autodetect.data.synth import synthesize
from autodetect.models.base import PredictOptions
from autodetect.models.hyperparameters import resolve
from autodetect.serving.config import ServerConfig
from autodetect.serving.model import load_model
from autodetect.trainer.artifact import DatasetInfo, write_artifact
from detections import assert_same_detections

CLASSES = ["circle", "square"]
NO_DATA = DatasetInfo("none", "none", None, 0, 0)
FLOOR = 0.05


@pytest.fixture(scope="module", autouse=True)
def _threads():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[np.ndarray]:
    folder = tmp_path_factory.mktemp("shapes")
    synthesize(folder, classes=2, images=3, size=(320, 240), seed=2)
    wide = [load_rgb(p) for p in sorted((folder / "images").glob("*.png"))]
    return wide + [np.ascontiguousarray(wide[0].transpose(1, 0, 2))]  # and a tall one


@pytest.fixture(scope="module")
def yolo_artifact(images, tmp_path_factory) -> Path:
    import cv2
    from ultralytics.nn.tasks import DetectionModel

    from autodetect.models.yolo import YoloDetector

    torch.manual_seed(0)
    net = DetectionModel("yolov8n.yaml", nc=len(CLASSES), verbose=False)
    for module in net.modules():  # statistics of these very images, so that activations are O(1), not saturated
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    batch = np.stack([cv2.resize(image, (320, 320)) for image in images]).transpose(0, 3, 1, 2) / 255
    net.train()
    with torch.no_grad():
        net(torch.from_numpy(batch).float())
    net.eval()
    hp = resolve({"model_name": "yolov8", "model_size": "small", "image_size": 320, "pretrained": False})
    return write_artifact(tmp_path_factory.mktemp("yolo") / "artifact", YoloDetector(hp, CLASSES, model=net),
                          name="varied", metrics={}, epoch=None, dataset=NO_DATA)


def config(artifact: Path, **overrides) -> ServerConfig:
    return ServerConfig(**({"model_dir": artifact, "auth": False, "inference_threads": 1} | overrides))


def test_onnx_gives_the_torch_boxes(yolo_artifact, images, tmp_path):
    onnx = load_model(config(yolo_artifact, letterbox="square"), tmp_path)  # auto: ONNX for YOLO
    torch_ = load_model(config(yolo_artifact, runtime="torch"), tmp_path)
    assert (onnx.info.runtime, torch_.info.runtime) == ("onnx", "torch")
    options = PredictOptions(FLOOR, 0.5, 100)
    got = onnx.runtime.predict([onnx.runtime.prepare(i) for i in images], options)
    want = torch_.runtime.predict(images, options)
    for found, expected in zip(got, want):
        assert_same_detections(found, expected, floor=FLOOR, score_tol=1e-3)
    distinct = {(round(d.top_x, 2), round(d.top_y, 2), round(d.bottom_x, 2), round(d.bottom_y, 2)) for f in want for d in f}
    assert len(distinct) >= 8  # the comparison is over varied boxes, not one repeated


def test_rect_letterbox_pads_less_and_runs_the_same_network(yolo_artifact, images, tmp_path):
    from autodetect.models.registry import load_artifact

    onnx = load_model(config(yolo_artifact), tmp_path)  # the server's default: rect
    assert onnx.runtime.letterbox == "rect"
    prepared = [onnx.runtime.prepare(i) for i in images]
    assert [p.tensor.shape for p in prepared] == [(3, 256, 320)] * 3 + [(3, 320, 256)]  # 320x240 padded to 256, not 320
    network = load_artifact(yolo_artifact).model
    for p in (prepared[0], prepared[-1]):
        want = network(torch.from_numpy(p.tensor[None]))[0].detach().numpy()
        got = onnx.runtime.session.run(None, {onnx.runtime.input_name: p.tensor[None]})[0]
        assert np.allclose(got, want, rtol=1e-3, atol=1e-2)


def test_onnx_batches_give_the_single_image_boxes(yolo_artifact, images, tmp_path):
    onnx = load_model(config(yolo_artifact), tmp_path)
    options = PredictOptions(FLOOR, 0.5, 100)
    batched = onnx.runtime.predict([onnx.runtime.prepare(i) for i in images], options)  # two shapes in one batch
    for image, found in zip(images, batched):
        [single] = onnx.runtime.predict([onnx.runtime.prepare(image)], options)
        assert_same_detections(single, found, floor=FLOOR, box_tol=1e-4)

