"""kserve's SDK as a user runs it, against a running `autodetect serve`: InferenceRESTClient with binary and
JSON tensors, and InferenceGRPCClient, each first without a key. Prints one JSON list of what came back.

usage: kserve_client.py URL GRPC_PORT KEY IMAGE..."""

import asyncio
import base64
import json
import sys
from pathlib import Path

import grpc
import httpx
import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig


def request(images: list[bytes], binary: bool, threshold: float | str = 0.0005) -> InferRequest:
    """Binary tensor data carries the image bytes; JSON carries them base64-encoded, as JSON has no bytes.
    kserve's gRPC parameters hold bool, int64 or string, so a threshold travels there as a string."""
    tensor = InferInput("image", [len(images)], "BYTES")
    cells = images if binary else [base64.b64encode(image).decode() for image in images]
    tensor.set_data_from_numpy(np.array(cells, dtype=object), binary_data=binary)
    return InferRequest("shapes", [tensor], request_id="k1", parameters={"box_score_threshold": threshold})


def summary(how: str, refused: bool, response) -> dict:
    return {"how": how, "refused_without_key": refused, "id": response.id, "model_name": response.model_name,
            "boxes": [json.loads(cell)["boxes"] for cell in response.outputs[0].as_numpy()]}


async def main(url: str, grpc_port: str, key: str, paths: list[str]) -> list[dict]:
    images = [Path(p).read_bytes() for p in paths]
    answers = []
    rest = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
    try:
        assert await rest.is_server_ready(url) and await rest.is_model_ready(url, "shapes")  # no key needed
        for binary in (True, False):
            try:
                await rest.infer(url, request(images, binary), model_name="shapes")
                refused = False
            except httpx.HTTPStatusError as error:
                refused = error.response.status_code == 401
            response = await rest.infer(url, request(images, binary), model_name="shapes",
                                        headers={"Authorization": f"Bearer {key}"})
            answers.append(summary("rest-binary" if binary else "rest-json", refused, response))
    finally:
        await rest.close()
    client = InferenceGRPCClient(f"127.0.0.1:{grpc_port}")
    try:
        assert await client.is_server_ready() and await client.is_model_ready("shapes")
        try:
            await client.infer(request(images, True, "0.0005"))
            refused = False
        except grpc.RpcError as error:
            refused = error.code() == grpc.StatusCode.UNAUTHENTICATED
        response = await client.infer(request(images, True, "0.0005"), headers=(("authorization", f"Bearer {key}"),))
        answers.append(summary("grpc", refused, response))
    finally:
        await client.close()
    return answers


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]))))
