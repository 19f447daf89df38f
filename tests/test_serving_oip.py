"""The Open Inference Protocol with the real tritonclient in its default mode: binary tensor data in and out,
health endpoints open, a missing key an auth error (not "not ready")."""

from __future__ import annotations

import json

import numpy as np
import pytest

from autodetect.serving.app import create_app
from test_serving import KEY, artifact, config, dataset, images, serving  # noqa: F401 (fixtures)

tritonhttp = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def url(artifact):  # noqa: F811
    with serving(create_app(config(artifact))) as url:
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
