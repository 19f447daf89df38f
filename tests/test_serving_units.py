"""The scoring server's decisions, without a model: batching rules, request parsing, options, keys."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections import deque
from types import SimpleNamespace

import pytest

from autodetect.errors import SpecError
from autodetect.models.base import PredictOptions
from autodetect.serving.auth import load_keys, check_bearer
from autodetect.serving.batcher import MicroBatcher, should_dispatch, take_batch
from autodetect.serving.client import ScoringFailed, scoring_url
from autodetect.serving.config import ENV_CONFIG, ServerConfig
from autodetect.serving.dataplane import azure_images, decode_base64, predict_options, v2_images
from autodetect.serving.errors import BadRequest, Unauthorized
from autodetect.serving.model import choose_runtime, cpu_limit, default_batch_size

DEFAULTS = PredictOptions(0.1, 0.5, 100)


def test_dispatch_when_full_idle_or_waited_long_enough():
    assert should_dispatch(queued=8, decoding=3, waited_s=0, max_batch_size=8, max_wait_s=0.01)
    assert should_dispatch(queued=1, decoding=0, waited_s=0, max_batch_size=8, max_wait_s=0.01)  # nothing coming
    assert should_dispatch(queued=2, decoding=1, waited_s=0.02, max_batch_size=8, max_wait_s=0.01)
    assert not should_dispatch(queued=2, decoding=1, waited_s=0.001, max_batch_size=8, max_wait_s=0.01)


def test_take_batch_keeps_options_together_and_order():
    items = deque(SimpleNamespace(id=i, options=opt) for i, opt in enumerate("aabab"))
    assert [x.id for x in take_batch(items, 2)] == [0, 1]
    assert [x.id for x in items] == [2, 3, 4]
    assert [x.id for x in take_batch(items, 8)] == [2, 4]  # the oldest is "b"
    assert [x.id for x in items] == [3]


def test_batcher_groups_concurrent_requests_and_answers_each_its_own():
    calls: list[tuple[list, str]] = []
    busy, gate = threading.Event(), threading.Event()

    def predict(batch, options):
        busy.set()
        assert gate.wait(10)
        calls.append((list(batch), options))
        return [f"{options}:{x}" for x in batch]

    async def until(condition):
        for _ in range(1000):
            if condition():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("timed out")

    async def run():
        batcher = MicroBatcher(predict, max_batch_size=3, max_wait_s=0.5, decode_threads=1)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(lambda: 0, "o"))
        await until(busy.is_set)  # taken alone at once: nothing else was on its way
        rest = [asyncio.ensure_future(batcher.submit(lambda i=i: i, "p" if i == 4 else "o")) for i in range(1, 6)]
        await until(lambda: batcher.queued == 5)  # queued behind the running batch
        gate.set()
        results = await asyncio.gather(first, *rest)
        await batcher.stop()
        return results

    results = asyncio.run(run())
    assert results == ["o:0", "o:1", "o:2", "o:3", "p:4", "o:5"]
    assert calls == [([0], "o"), ([1, 2, 3], "o"), ([4], "p"), ([5], "o")]


def test_batcher_passes_errors_to_each_caller():
    def predict(batch, options):
        raise RuntimeError("model broke")

    async def run():
        batcher = MicroBatcher(predict, 4, 0.01, 1)
        batcher.start()
        outcome = await asyncio.gather(batcher.submit(lambda: 1, "o"), batcher.submit(lambda: 1 / 0, "o"),
                                       return_exceptions=True)
        await batcher.stop()
        return outcome

    model_error, decode_error = asyncio.run(run())
    assert isinstance(model_error, RuntimeError) and isinstance(decode_error, ZeroDivisionError)


def test_predict_options_overrides_and_refusals():
    assert predict_options(DEFAULTS, {}) == DEFAULTS
    assert predict_options(DEFAULTS, {"box_score_threshold": "0.3", "nms_iou_threshold": 0.7, "max_detections": "5"}) \
        == PredictOptions(0.3, 0.7, 5)
    for bad in ({"box_score_threshold": "x"}, {"nms_iou_threshold": 1.5}, {"max_detections": 0},
                {"max_detections": "2.5"}):
        with pytest.raises(BadRequest, match=next(iter(bad))):
            predict_options(DEFAULTS, bad)


def test_azure_request_forms():
    data = b"\x89PNG" * 40
    encoded = base64.encodebytes(data).decode()  # with line breaks, as Azure's samples send
    assert "\n" in encoded
    assert azure_images({"input_data": {"columns": ["image"], "data": [encoded, encoded]}}) == [data, data]
    split = {"input_data": {"columns": ["id", "image"], "index": [0], "data": [["a", encoded]]}}
    assert azure_images(split) == [data]
    for bad, match in (({"data": [encoded]}, "input_data"), ({"input_data": {"columns": ["x"], "data": [encoded]}}, "columns"),
                       ({"input_data": {"data": []}}, "no images"), ({"input_data": {"data": ["@@"]}}, r"data\[0\]"),
                       ({"input_data": {"data": [3]}}, "base64 string")):
        with pytest.raises(BadRequest, match=match):
            azure_images(bad)


def test_v2_request_forms():
    a, b = base64.b64encode(b"one").decode(), base64.b64encode(b"two").decode()
    tensor = {"name": "image", "datatype": "BYTES", "shape": [2], "data": [a, b]}
    assert v2_images({"inputs": [tensor]}) == [b"one", b"two"]
    assert v2_images({"inputs": [tensor | {"name": "x", "shape": [2, 1], "data": [[a], [b]]}]}) == [b"one", b"two"]
    for bad, match in (({"inputs": []}, "inputs"), ({"inputs": [tensor | {"shape": [3]}]}, "holds 3"),
                       ({"inputs": [tensor | {"datatype": "FP32"}]}, "BYTES"),
                       ({"inputs": [tensor | {"name": "x"}, tensor | {"name": "y"}]}, "no input named"),
                       ({"inputs": [tensor | {"shape": "2"}]}, "shape")):
        with pytest.raises(BadRequest, match=match):
            v2_images(bad)
    with pytest.raises(BadRequest, match="not valid base64"):
        decode_base64("abc", "x")


def test_keys_from_file_and_env(tmp_path):
    keys_file = tmp_path / "keys"
    keys_file.write_text("# the Secret's keys\nfirst-key\n\n  second-key  \n")
    assert load_keys(keys_file, env={"AUTODETECT_API_KEYS": "third, ,fourth"}) == {"first-key", "second-key", "third", "fourth"}
    assert load_keys(None, env={}) == frozenset()
    with pytest.raises(SpecError, match="keys_file"):
        load_keys(tmp_path / "missing", env={})


def test_bearer_check():
    keys = frozenset({"alpha", "beta"})
    check_bearer("Bearer beta", keys)
    check_bearer("bearer  alpha ", keys)
    for header in (None, "", "alpha", "Basic alpha", "Bearer ", "Bearer alph", "Bearer alphaa"):
        with pytest.raises(Unauthorized):
            check_bearer(header, keys)


def test_config_refuses_auth_without_keys_and_travels_to_workers(tmp_path, monkeypatch):
    with pytest.raises(SpecError, match="no API key"):
        ServerConfig(model_dir=tmp_path)
    with pytest.raises(SpecError, match="runtime"):
        ServerConfig(model_dir=tmp_path, auth=False, runtime="tensorrt")
    with pytest.raises(SpecError, match="max_batch_size"):
        ServerConfig(model_dir=tmp_path, auth=False, max_batch_size=-1)
    for port in (8080, 0, 70000):
        with pytest.raises(SpecError, match="grpc_port"):
            ServerConfig(model_dir=tmp_path, auth=False, grpc_port=port)
    config = ServerConfig(model_dir=tmp_path, api_keys=frozenset({"s3cr3t-key"}), workers=2, onnx_path=tmp_path / "m.onnx")
    monkeypatch.setenv(ENV_CONFIG, config.to_env())
    assert ServerConfig.from_env() == config
    assert "s3cr3t" not in repr(config)


def test_cpu_limit_and_batch_defaults():
    assert cpu_limit(8, "max 100000\n") == 8
    assert cpu_limit(8, "150000 100000\n") == 2  # a Kubernetes limit of 1.5 CPUs
    assert cpu_limit(2, "400000 100000") == 2
    assert cpu_limit(4, None) == 4 and cpu_limit(4, "garbage") == 4
    assert default_batch_size("cuda") > default_batch_size("cpu") >= 1


def test_runtime_choice():
    assert choose_runtime("auto", "ultralytics") == "onnx"
    assert choose_runtime("torch", "ultralytics") == "torch"
    assert choose_runtime("auto", "torchvision") == "onnx"
    assert choose_runtime("torch", "torchvision") == "torch"
    assert choose_runtime("auto", "another") == "torch"  # a family without an ONNX runtime
    with pytest.raises(SpecError, match="torch runtime only"):
        choose_runtime("onnx", "another")


def test_scoring_url():
    assert scoring_url("http://host:8080") == "http://host:8080/score"
    assert scoring_url("https://host/") == "https://host/score"
    assert scoring_url("http://host:8080/score") == "http://host:8080/score"
    with pytest.raises(ScoringFailed):
        scoring_url("host:8080")
