"""The Open Inference Protocol with the real tritonclient in its default modes, and kserve's SDK, over HTTP
(binary tensor data in and out) and over gRPC: health endpoints open, a missing key an auth error (not "not ready")."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tritongrpc
import tritonclient.http as tritonhttp
from tritonclient.utils import InferenceServerException

from autodetect.serving.app import create_app
from detections import assert_same_detections
from test_serving import FLOOR, KEY, LOW, artifact, config, dataset, images, metric, score, serving  # noqa: F401 (fixtures)

AUTH = {"Authorization": f"Bearer {KEY}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def grpc_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def url(artifact, grpc_port):  # noqa: F811
    with serving(create_app(config(artifact, host="127.0.0.1", grpc_port=grpc_port))) as url:
        yield url


def test_tritonclient_http_default_binary_mode(url, images):  # noqa: F811
    client = tritonhttp.InferenceServerClient(url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("shapes")  # no key
    assert "binary_tensor_data" in client.get_server_metadata(headers=AUTH)["extensions"]
    image = tritonhttp.InferInput("image", [2], "BYTES")
    image.set_data_from_numpy(np.array(images[:2], dtype=object))  # binary_data=True, the default
    result = client.infer("shapes", [image], headers=AUTH, parameters={"box_score_threshold": 0.0005})
    boxes = [json.loads(cell) for cell in result.as_numpy("boxes")]
    assert len(boxes) == 2 and all("boxes" in b for b in boxes)
    assert result.get_output("boxes")["parameters"]["binary_data_size"] > 0

    asked_json = client.infer("shapes", [image], headers=AUTH,
                              outputs=[tritonhttp.InferRequestedOutput("boxes", binary_data=False)])
    assert [json.loads(cell) for cell in asked_json.as_numpy("boxes")][0].keys() == {"boxes"}

    with pytest.raises(InferenceServerException) as refused:
        client.infer("shapes", [image])
    assert "401" in str(refused.value.status()) or "key" in str(refused.value).lower()


def test_tritonclient_grpc(url, grpc_port, images):  # noqa: F811
    client = tritongrpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("shapes")  # no key
    grpc_auth = {"authorization": f"Bearer {KEY}"}
    assert "binary_tensor_data" in client.get_server_metadata(headers=grpc_auth).extensions
    metadata = client.get_model_metadata("shapes", headers=grpc_auth, as_json=True)
    assert metadata["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": ["-1"]}]

    image = tritongrpc.InferInput("image", [2], "BYTES")
    image.set_data_from_numpy(np.array(images[:2], dtype=object))
    result = client.infer("shapes", [image], headers=grpc_auth, request_id="g1",
                          parameters={"box_score_threshold": LOW["box_score_threshold"]})
    assert result.get_response().id == "g1"
    boxes = [json.loads(cell)["boxes"] for cell in result.as_numpy("boxes")]
    assert len(boxes) == 2
    for found, picture in zip(boxes, images[:2]):
        assert_same_detections(found, score(url, picture).json()["boxes"], floor=FLOOR)

    for headers in (None, {"authorization": "Bearer wrong"}):
        with pytest.raises(InferenceServerException) as refused:
            client.infer("shapes", [image], headers=headers)
        assert refused.value.status() == "StatusCode.UNAUTHENTICATED", refused.value
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("other", [image], headers=grpc_auth)
    assert unknown.value.status() == "StatusCode.NOT_FOUND" and "shapes" in unknown.value.message()
    broken = tritongrpc.InferInput("image", [1], "BYTES")
    broken.set_data_from_numpy(np.array([b"not an image"], dtype=object))
    with pytest.raises(InferenceServerException) as bad:
        client.infer("shapes", [broken], headers=grpc_auth)
    assert bad.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert client.is_server_live()  # and it keeps serving

    text = httpx.get(f"{url}/metrics").text  # counted beside the HTTP requests, in flight while scoring
    infer = dict(route="/inference.GRPCInferenceService/ModelInfer", method="GRPC")
    assert metric(text, "autodetect_requests_total", **infer, status="OK") >= 1
    assert metric(text, "autodetect_requests_total", **infer, status="UNAUTHENTICATED") == 2
    assert metric(text, "autodetect_requests_total", **infer, status="INVALID_ARGUMENT") == 1
    assert metric(text, "autodetect_requests_in_flight") == 0


def test_the_grpc_messages_are_kserves_on_the_wire():
    """Each message and field that the server defines has the number, type and cardinality of the protocol's own
    (Triton's copy of grpc_predict_v2.proto, which tritonclient ships)."""
    from tritonclient.grpc import service_pb2

    from autodetect.serving.grpc_server import M

    def shape(descriptor):
        return {f.name: (f.number, f.type, f.label, f.message_type.full_name if f.message_type else None)
                for f in descriptor.fields}

    for path, message in M.items():
        theirs = service_pb2.DESCRIPTOR.pool.FindMessageTypeByName(f"inference.{path}")
        ours = shape(message.DESCRIPTOR)
        assert ours == {name: field for name, field in shape(theirs).items() if name in ours}, path


def test_kserve_sdk_rest_binary_and_grpc(url, grpc_port, images, tmp_path):  # noqa: F811
    """In a process of its own: kserve's and Triton's generated protos both claim the package "inference" in
    protobuf's default pool, so one process cannot import both clients (a user's process has one of them)."""
    paths = []
    for i, picture in enumerate(images[:2]):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(picture)
    run = subprocess.run([sys.executable, str(Path(__file__).parent / "clients" / "kserve_client.py"), url,
                          str(grpc_port), KEY, *map(str, paths)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    answers = json.loads(run.stdout)
    assert [a["how"] for a in answers] == ["rest-binary", "rest-json", "grpc"]
    assert all(a["refused_without_key"] for a in answers)
    for answer in answers:
        assert answer["id"] == "k1" and answer["model_name"] == "shapes"
        for found, picture in zip(answer["boxes"], images[:2]):
            assert_same_detections(found, score(url, picture).json()["boxes"], floor=FLOOR)
