"""The scoring server over real HTTP (uvicorn on a free port), serving a YOLO model trained from
scratch here and written by the trainer's artifact code, and a torchvision model with both runtimes."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import torch
import uvicorn
from PIL import Image

from autodetect.data.dataset import read_jsonl
from autodetect.data.images import load_rgb
from autodetect.data.synth import synthesize
from autodetect.models.base import PredictOptions
from autodetect.models.hyperparameters import resolve
from autodetect.models.registry import build_detector
from autodetect.serving.app import create_app
from autodetect.serving.config import ServerConfig
from autodetect.serving.model import load_model
from autodetect.trainer.artifact import DatasetInfo, write_artifact
from detections import assert_same_detections, match_detections

KEY = "test-key-0123456789"
FLOOR = 0.0005  # the briefly trained model's scores are low
LOW = {"box_score_threshold": FLOOR}
MAX_BODY, MAX_PIXELS = 300_000, 1_000_000


@pytest.fixture(scope="module", autouse=True)
def _threads():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return read_jsonl(synthesize(tmp_path_factory.mktemp("shapes"), classes=2, images=12, size=96, seed=1))


@pytest.fixture(scope="module")
def artifact(dataset, tmp_path_factory) -> Path:
    """A YOLO trained one epoch from scratch, saved with the trainer's artifact writer."""
    work = tmp_path_factory.mktemp("train")
    hp = resolve({"model_name": "yolov8", "model_size": "small", "image_size": 64, "number_of_epochs": 1,
                  "training_batch_size": 4, "pretrained": False})
    detector = build_detector(hp, dataset.classes)
    detector.fit(dataset, dataset, work / "fit", lambda epoch, losses, d: False, resume=False)
    info = DatasetInfo(dataset.fingerprint(), dataset.source, None, len(dataset), 0)
    return write_artifact(work / "artifact", detector, name="shapes", metrics={}, epoch=1, dataset=info)


@pytest.fixture(scope="module")
def images(dataset) -> list[bytes]:
    return [record.path.read_bytes() for record in dataset.records[:6]]


def wait_for(condition, timeout_s: float = 120.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def is_ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def serving(app, wait_ready: bool = True):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=10))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        wait_for(lambda: server.started, 30, "the server to start")
        if wait_ready:
            wait_for(lambda: is_ready(url), 180, "the model to be ready")
        yield url
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def config(artifact: Path, **overrides) -> ServerConfig:
    values = dict(model_dir=artifact, api_keys=frozenset({KEY, "another-key"}), max_batch_size=8, max_wait_ms=1000,
                  max_body_bytes=MAX_BODY, max_images_per_request=4, max_pixels=MAX_PIXELS, inference_threads=1)
    return ServerConfig(**(values | overrides))


@pytest.fixture(scope="module")
def url(artifact):
    with serving(create_app(config(artifact))) as base:
        yield base


AUTH = {"Authorization": f"Bearer {KEY}"}


def score(url: str, image: bytes, params=LOW, **headers) -> httpx.Response:
    return httpx.post(f"{url}/score", content=image, params=params, timeout=60,
                      headers={**AUTH, "Content-Type": "application/octet-stream", **headers})


def metric(text: str, series: str, **labels) -> float:
    for line in text.splitlines():
        if line.startswith(series + ("{" if labels else " ")) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# -- the scoring API ----------------------------------------------------------------------------

def test_score_answers_azure_shape_and_matches_the_model(url, artifact, images, dataset):
    response = score(url, images[0], **{"Content-Disposition": 'attachment; filename="fridge.png"'})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["filename"] == "fridge.png" and body["boxes"]
    for box in body["boxes"]:
        assert set(box) == {"box", "label", "score"} and box["label"] in dataset.classes
        assert set(box["box"]) == {"topX", "topY", "bottomX", "bottomY"}
        assert 0 <= box["box"]["topX"] <= box["box"]["bottomX"] <= 1 and 0 <= box["box"]["topY"] <= box["box"]["bottomY"] <= 1
    # the same boxes as the PyTorch model called in-process (the server runs it in ONNX Runtime)
    from autodetect.models.registry import load_artifact

    expected = load_artifact(artifact).predict([load_rgb(images[0])], PredictOptions(FLOOR, 0.5, 100))[0]
    assert_same_detections(body["boxes"], expected, floor=FLOOR)


def test_thresholds_are_overridable_per_request(url, images):
    many = score(url, images[1], params={"box_score_threshold": 0.0})
    none = score(url, images[1], params={"box_score_threshold": 0.99})
    one = score(url, images[1], params={"box_score_threshold": 0.0, "max_detections": 1})
    loose = score(url, images[1], params={"box_score_threshold": 0.0, "nms_iou_threshold": 1.0})
    assert len(many.json()["boxes"]) >= 2
    assert none.json()["boxes"] == [] and len(one.json()["boxes"]) == 1
    assert len(loose.json()["boxes"]) > len(many.json()["boxes"])  # no suppression at IoU 1.0


def test_azure_json_batch_is_one_model_call_in_request_order(url, images):
    singles = [score(url, image).json()["boxes"] for image in images[:3]]
    before = httpx.get(f"{url}/metrics").text
    request = {"input_data": {"columns": ["image"], "data": [base64.encodebytes(i).decode() for i in images[:3]]}}
    response = httpx.post(f"{url}/score", json=request, params=LOW, headers=AUTH, timeout=60)
    assert response.status_code == 200, response.text
    answers = response.json()
    assert isinstance(answers, list) and len(answers) == 3
    for answer, single in zip(answers, singles):
        assert_same_detections(answer["boxes"], single, floor=FLOOR)
    after = httpx.get(f"{url}/metrics").text
    assert metric(after, "autodetect_batch_size_count") - metric(before, "autodetect_batch_size_count") == 1
    assert metric(after, "autodetect_batch_size_sum") - metric(before, "autodetect_batch_size_sum") == 3


def test_concurrent_requests_each_get_their_own_boxes(url, images):
    expected = [score(url, image).json()["boxes"] for image in images]
    with ThreadPoolExecutor(len(images) * 2) as pool:
        answers = list(pool.map(lambda image: score(url, image), images * 2))
    assert all(a.status_code == 200 for a in answers)
    for answer, boxes in zip(answers, expected * 2):
        assert_same_detections(answer.json()["boxes"], boxes, floor=FLOOR)


def test_open_inference_protocol(url, images):
    assert httpx.get(f"{url}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{url}/v2/health/ready").json() == {"ready": True}
    model = httpx.get(f"{url}/v1/model", headers=AUTH).json()
    name, version = model["name"], model["version"]
    metadata = httpx.get(f"{url}/v2/models/{name}", headers=AUTH).json()
    assert metadata["name"] == name and metadata["versions"] == [version]
    assert metadata["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    assert httpx.get(f"{url}/v2/models/{name}/ready", headers=AUTH).json() == {"name": name, "ready": True}
    request = {"id": "r1", "parameters": LOW, "inputs": [{"name": "image", "datatype": "BYTES", "shape": [2],
                                                           "data": [base64.b64encode(i).decode() for i in images[:2]]}]}
    response = httpx.post(f"{url}/v2/models/{name}/infer", json=request, headers=AUTH, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == name and body["model_version"] == version and body["id"] == "r1"
    [output] = body["outputs"]
    assert output["name"] == "boxes" and output["datatype"] == "BYTES" and output["shape"] == [2]
    for data, image in zip(output["data"], images[:2]):
        assert_same_detections(json.loads(data)["boxes"], score(url, image).json()["boxes"], floor=FLOOR)
    versioned = httpx.post(f"{url}/v2/models/{name}/versions/{version}/infer", json=request, headers=AUTH, timeout=60)
    assert versioned.json()["outputs"] == body["outputs"]
    assert httpx.post(f"{url}/v2/models/other/infer", json=request, headers=AUTH).status_code == 404


def test_model_metadata_and_open_probes(url, dataset):
    model = httpx.get(f"{url}/v1/model", headers=AUTH).json()
    assert model["name"] == "shapes" and model["classes"] == dataset.classes and model["input_size"] == {"image_size": 64}
    assert model["runtime"] == "onnx" and model["device"] == "cpu" and model["family"] == "ultralytics" and model["version"]
    for path in ("/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready", "/v2/models/shapes/ready"):
        assert httpx.get(f"{url}{path}").status_code == 200, path


def test_auth_refuses_missing_and_wrong_keys(url, images):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}, {"Authorization": "Bearer"}):
        response = httpx.post(f"{url}/score", content=images[0], timeout=30,
                              headers={"Content-Type": "application/octet-stream", **headers})
        assert response.status_code == 401, headers
        assert response.headers["WWW-Authenticate"].startswith("Bearer") and response.json()["error"]
    assert httpx.get(f"{url}/v1/model").status_code == 401
    assert httpx.get(f"{url}/v2/models/shapes").status_code == 401
    assert score(url, images[0], Authorization="Bearer another-key").status_code == 200


def _bomb() -> bytes:  # 2000 x 2000 pixels in a few KB: over the pixel limit, under the byte limit
    out = io.BytesIO()
    Image.new("L", (2000, 2000)).save(out, "PNG")
    assert len(out.getvalue()) < MAX_BODY
    return out.getvalue()


def test_bad_input_gets_a_json_4xx_and_the_server_keeps_serving(url, images):
    png = images[0]

    def chunks():  # no Content-Length: the limit is checked while the body streams in
        for _ in range(8):
            yield b"\0" * 50_000

    octet = {**AUTH, "Content-Type": "application/octet-stream"}
    cases = [
        ("not an image", dict(content=b"hello, not an image", headers=octet), 400),
        ("truncated", dict(content=png[: len(png) // 2], headers=octet), 400),
        ("zero bytes", dict(content=b"", headers=octet), 400),
        ("too many bytes", dict(content=b"\0" * (MAX_BODY + 1), headers=octet), 413),
        ("too many bytes, streamed", dict(content=chunks(), headers=octet), 413),
        ("decompression bomb", dict(content=_bomb(), headers=octet), 400),
        ("wrong content type", dict(content=png, headers={**AUTH, "Content-Type": "text/plain"}), 415),
        ("bad JSON", dict(content=b"{not json", headers={**AUTH, "Content-Type": "application/json"}), 400),
        ("JSON of the wrong shape", dict(json={"data": []}, headers=AUTH), 400),
        ("bad base64", dict(json={"input_data": {"columns": ["image"], "data": ["%%%"]}}, headers=AUTH), 400),
        ("base64 of a non-image", dict(json={"input_data": {"data": [base64.b64encode(b"x").decode()]}}, headers=AUTH), 400),
        ("too many images", dict(json={"input_data": {"data": [base64.b64encode(png).decode()] * 5}}, headers=AUTH), 413),
        ("bad threshold", dict(content=png, headers=octet, params={"box_score_threshold": "high"}), 400),
        ("threshold out of range", dict(content=png, headers=octet, params={"nms_iou_threshold": 2}), 400),
        ("unknown parameter", dict(content=png, headers=octet, params={"confidence": 0.5}), 400),
    ]
    for name, request, status in cases:
        response = httpx.post(f"{url}/score", timeout=60, **request)
        assert response.status_code == status, (name, response.text)
        assert response.headers["content-type"] == "application/json" and response.json()["error"], name
    v2 = httpx.post(f"{url}/v2/models/shapes/infer", headers=AUTH, json={"inputs": [
        {"name": "image", "datatype": "FP32", "shape": [1], "data": [1.0]}]})
    assert v2.status_code == 400 and "BYTES" in v2.json()["error"]
    assert httpx.get(f"{url}/nowhere", headers=AUTH).status_code == 404
    assert score(url, png).status_code == 200
    import requests  # as Azure's samples call it: no Content-Type, the body is the image

    plain = requests.post(f"{url}/score", data=png, headers=AUTH, timeout=60)
    assert plain.status_code == 200 and "boxes" in plain.json(), plain.text


def test_metrics_count_requests_latency_batches_and_name_the_model(url, images):
    score(url, images[0])
    httpx.post(f"{url}/score", content=images[0], headers={"Content-Type": "application/octet-stream"})
    text = httpx.get(f"{url}/metrics").text
    assert metric(text, "autodetect_requests_total", route="/score", status="200") >= 1
    assert metric(text, "autodetect_requests_total", route="/score", status="401") >= 1
    assert metric(text, "autodetect_request_duration_seconds_count", route="/score") >= 2
    assert metric(text, "autodetect_batch_size_count") >= 1
    model = httpx.get(f"{url}/v1/model", headers=AUTH).json()
    assert metric(text, "autodetect_model_info", name="shapes", version=model["version"], runtime="onnx") == 1


# -- life of the server -------------------------------------------------------------------------

class GatedRuntime:
    """The real runtime, held at its first call until the test opens the gate."""

    def __init__(self, runtime):
        self.runtime, self.name, self.gate = runtime, runtime.name, threading.Event()

    def prepare(self, image):
        return self.runtime.prepare(image)

    def predict(self, batch, options):
        assert self.gate.wait(60), "the test never opened the gate"
        return self.runtime.predict(batch, options)


def test_ready_only_after_warm_up(artifact, images, tmp_path):
    cfg = config(artifact)
    loaded = load_model(cfg, tmp_path)
    gated = GatedRuntime(loaded.runtime)
    with serving(create_app(cfg, type(loaded)(loaded.info, gated)), wait_ready=False) as base:
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert httpx.get(f"{base}/readyz").status_code == 503
        assert httpx.get(f"{base}/v2/health/ready").json() == {"ready": False}
        assert score(base, images[0]).status_code == 503
        gated.gate.set()
        wait_for(lambda: is_ready(base), 60, "ready after warm-up")
        assert score(base, images[0]).status_code == 200


def test_requests_in_flight_are_a_gauge_for_the_autoscaler(artifact, images, tmp_path):
    cfg = config(artifact)
    loaded = load_model(cfg, tmp_path)
    gated = GatedRuntime(loaded.runtime)
    gated.gate.set()  # through the warm-up
    with serving(create_app(cfg, type(loaded)(loaded.info, gated))) as base:
        gated.gate.clear()
        with ThreadPoolExecutor(2) as pool:
            held = [pool.submit(score, base, image) for image in images[:2]]
            wait_for(lambda: metric(httpx.get(f"{base}/metrics").text, "autodetect_requests_in_flight") == 2, 30,
                     "two requests in flight")
            gated.gate.set()
            assert all(f.result().status_code == 200 for f in held)
        assert metric(httpx.get(f"{base}/metrics").text, "autodetect_requests_in_flight") == 0


def test_a_broken_artifact_is_not_live(tmp_path):
    (tmp_path / "model_card.json").write_text("{}")
    with serving(create_app(config(tmp_path)), wait_ready=False) as base:
        wait_for(lambda: httpx.get(f"{base}/healthz").status_code == 500, 30, "the load to fail")
        assert "log" in httpx.get(f"{base}/healthz").json()["error"]  # why and where: in the log only
        assert httpx.get(f"{base}/readyz").status_code == 503


def test_onnx_and_torch_runtimes_give_the_same_boxes(artifact, images, tmp_path):
    onnx = load_model(config(artifact, runtime="onnx"), tmp_path)
    torch_ = load_model(config(artifact, runtime="torch"), tmp_path)
    assert (onnx.runtime.name, torch_.runtime.name) == ("onnx", "torch")
    arrays = [load_rgb(i) for i in images]
    options = PredictOptions(FLOOR, 0.5, 100)
    a = onnx.runtime.predict([onnx.runtime.prepare(i) for i in arrays], options)
    b = torch_.runtime.predict([torch_.runtime.prepare(i) for i in arrays], options)
    assert any(a)
    for x, y in zip(a, b):
        assert_same_detections(x, y, floor=FLOOR)


@pytest.fixture(scope="module")
def torchvision_artifact(dataset, tmp_path_factory) -> Path:
    """fasterrcnn_mobilenet_v3_large_320_fpn with random weights, its batch-norm statistics those of these
    images (else the activations vanish and every box scores the same) and a wider class head: scores
    and boxes that vary with the image, which is what comparing two runtimes needs."""
    from autodetect.models.torchvision_detector import to_tensor

    hp = resolve({"model_name": "fasterrcnn_mobilenet_v3_large_320_fpn", "pretrained": False,
                  "min_size": 128, "max_size": 128})
    detector = build_detector(hp, dataset.classes)
    model = detector.model
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    model.eval()
    model.backbone.train()
    with torch.no_grad():
        model.backbone(model.transform([to_tensor(load_rgb(r.path)) for r in dataset.records])[0].tensors)
        model.roi_heads.box_predictor.cls_score.weight.normal_(0, 0.3, generator=torch.Generator().manual_seed(0))
    model.eval()
    return write_artifact(tmp_path_factory.mktemp("torchvision") / "artifact", detector, name="tv", metrics={},
                          epoch=None, dataset=DatasetInfo("none", "none", None, 0, 0))


def iou(a: dict, b: dict) -> float:
    width = min(a["bottomX"], b["bottomX"]) - max(a["topX"], b["topX"])
    height = min(a["bottomY"], b["bottomY"]) - max(a["topY"], b["topY"])
    inter = max(0.0, width) * max(0.0, height)
    area = lambda box: (box["bottomX"] - box["topX"]) * (box["bottomY"] - box["topY"])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def test_torchvision_onnx_and_torch_runtimes_serve_the_same_boxes(torchvision_artifact, images):
    with serving(create_app(config(torchvision_artifact, runtime="onnx"))) as onnx, \
            serving(create_app(config(torchvision_artifact, runtime="torch"))) as torch_:
        for base, runtime in ((onnx, "onnx"), (torch_, "torch")):
            model = httpx.get(f"{base}/v1/model", headers=AUTH).json()
            assert (model["family"], model["runtime"]) == ("torchvision", runtime)
        distinct = set()
        defaults = httpx.get(f"{onnx}/v1/model", headers=AUTH).json()["defaults"]
        for params in ({}, {"box_score_threshold": 0.6}, {"box_score_threshold": 0.05, "max_detections": 4}):
            for image in images[:3]:
                got, want = (score(base, image, params=params) for base in (onnx, torch_))
                assert got.status_code == want.status_code == 200, (got.text, want.text)
                assert_same_detections(got.json()["boxes"], want.json()["boxes"], score_tol=1e-3,
                                       floor=(defaults | params)["box_score_threshold"],
                                       max_detections=(defaults | params)["max_detections"])
                distinct |= {(d["label"], round(d["score"], 2), round(d["box"]["topX"], 2)) for d in want.json()["boxes"]}
        assert len(distinct) >= 20  # compared over varied boxes, not one repeated
        # a lower nms_iou_threshold than the export's runs a second NMS; a higher one cannot loosen the first
        everything = {"box_score_threshold": 0.05}
        baked = score(onnx, images[0], params=everything).json()["boxes"]
        stricter = score(onnx, images[0], params=everything | {"nms_iou_threshold": 0.2}).json()["boxes"]
        assert 0 < len(stricter) < len(baked) and match_detections(stricter, baked, floor=0.0)[0] == []
        assert all(iou(a["box"], b["box"]) <= 0.2 for i, a in enumerate(stricter) for b in stricter[i + 1:]
                   if a["label"] == b["label"])
        looser = score(onnx, images[0], params=everything | {"nms_iou_threshold": 0.9}).json()["boxes"]
        assert_same_detections(looser, baked, floor=0.0)


def test_auto_serves_with_torch_when_the_export_fails(torchvision_artifact, tmp_path, caplog):
    blocked = tmp_path / "a-file"
    blocked.write_text("")  # the export cannot write under a file
    assert load_model(config(torchvision_artifact, onnx_path=blocked / "model.onnx"), tmp_path).info.runtime == "torch"
    assert "ONNX export failed" in caplog.text
    with pytest.raises(OSError):  # asked for by name: no fallback
        load_model(config(torchvision_artifact, onnx_path=blocked / "model.onnx", runtime="onnx"), tmp_path)


def test_sigterm_lets_the_request_in_flight_finish(artifact, images, tmp_path):
    """A real `autodetect serve` process: SIGTERM arrives while a request's body is still being
    sent; the server stops accepting new connections but answers that request, then exits."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "AUTODETECT_API_KEYS": KEY}
    process = subprocess.Popen(
        [sys.executable, "-m", "autodetect.cli", "serve", "--model", str(artifact), "--host", "127.0.0.1",
         "--port", str(port), "--threads", "1", "--graceful-timeout", "60"],
        env=env, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: process.poll() is None and is_ready(base), 180, "the server process to be ready")
        log: list[str] = []

        def body():
            yield images[0][:100]
            process.send_signal(signal.SIGTERM)
            for line in process.stderr:  # wait on the server's own word that it is shutting down
                log.append(line)
                if "Shutting down" in line:
                    break
            yield images[0][100:]

        response = httpx.post(f"{base}/score", content=body(), params=LOW, timeout=60,
                              headers={**AUTH, "Content-Type": "application/octet-stream"})
        assert response.status_code == 200, (response.text, log)
        assert response.json()["boxes"]
        assert process.wait(60) in (0, -signal.SIGTERM)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{base}/healthz")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_predict_command_prints_json_and_draws(url, images, tmp_path, capsys):
    from autodetect.cli import main

    image = tmp_path / "photo.png"
    image.write_bytes(images[0])
    out = tmp_path / "boxes.png"
    assert main(["predict", "--endpoint", url, "--key", KEY, str(image), "--out", str(out),
                 "--box-score-threshold", "0.0005"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["filename"] == "photo.png" and printed["boxes"]
    with Image.open(out) as drawn:
        assert drawn.size == Image.open(image).size
    assert main(["predict", "--endpoint", url, "--key", "wrong", str(image)]) == 2
    assert "401" in capsys.readouterr().err


def test_export_command_writes_an_onnx_model_that_serve_uses(artifact, images, tmp_path):
    from autodetect.cli import main

    out = tmp_path / "exported.onnx"
    assert main(["export", "--model", str(artifact), "--onnx", "--out", str(out)]) == 0
    loaded = load_model(config(artifact, onnx_path=out), tmp_path / "unused")
    assert loaded.info.runtime == "onnx" and not (tmp_path / "unused").exists()
    found = loaded.runtime.predict([loaded.runtime.prepare(load_rgb(images[0]))], loaded.info.defaults)
    assert isinstance(found, list) and len(found) == 1
