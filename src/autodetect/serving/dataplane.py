"""The protocol-neutral data plane: everything a request means, nothing about HTTP.

It owns the model's life (load and warm-up in the background, so that liveness answers at once
and readiness only after warm-up), decodes images (with the pixel limit) and scores them through
the micro-batcher, and reads the three request bodies it understands: raw image bytes, Azure's
`input_data` JSON and the Open Inference Protocol's (KServe v2) infer request."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import json
import logging
import math
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

from autodetect.data.images import MAX_PIXELS, image_pixels, load_rgb
from autodetect.errors import ImageError
from autodetect.models.base import Detection, PredictOptions
from autodetect.serving.batcher import MicroBatcher
from autodetect.serving.config import ServerConfig
from autodetect.serving.errors import BadRequest, NotFound, NotReady, Overloaded, PayloadTooLarge, ServingError
from autodetect.serving.model import LoadedModel, ModelInfo, default_batch_size, load_model, warm_up

log = logging.getLogger(__name__)

V2_INPUT, V2_OUTPUT = "image", "boxes"
MAX_INT_DIGITS = 20


def predict_options(defaults: PredictOptions, overrides: Mapping[str, Any]) -> PredictOptions:
    """The model's defaults with box_score_threshold, nms_iou_threshold, max_detections overridden
    (values may be strings, as in a query); a bad value is a BadRequest naming the parameter."""
    values = {"score_threshold": defaults.score_threshold, "iou_threshold": defaults.iou_threshold,
              "max_detections": defaults.max_detections}
    for name, field, kind in (("box_score_threshold", "score_threshold", float),
                              ("nms_iou_threshold", "iou_threshold", float),
                              ("max_detections", "max_detections", int)):
        if overrides.get(name) is None:
            continue
        value = _number(name, overrides[name], kind)
        if kind is float and not 0.0 <= value <= 1.0:
            raise BadRequest(f"{name}: must be between 0 and 1, got {value}")
        if kind is int and not 1 <= value <= 10_000:
            raise BadRequest(f"{name}: must be between 1 and 10000, got {value}")
        values[field] = value
    return PredictOptions(**values)


def _number(name: str, raw: Any, kind: type) -> float | int:
    """A query string or JSON value as kind, strictly: no bools, no 2.9 for an integer, nothing infinite."""
    expected = "an integer" if kind is int else "a number"
    if isinstance(raw, str) and len(raw) <= 32:
        try:
            raw = int(raw) if kind is int else float(raw)
        except ValueError:
            pass
    if isinstance(raw, bool) or not isinstance(raw, (int, float) if kind is float else int) or not math.isfinite(raw):
        shown = repr(raw) if len(repr(raw)) <= 40 else repr(raw)[:40] + "..."
        raise BadRequest(f"{name}: expected {expected}, got {shown}")
    return kind(raw)


def decode_base64(text: Any, where: str) -> bytes:
    """Strict base64 that tolerates the line breaks base64.encodebytes writes (Azure's samples use it)."""
    if not isinstance(text, str):
        raise BadRequest(f"{where}: expected a base64 string, got {type(text).__name__}")
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{where}: not valid base64") from None


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise BadRequest(f"the body: an integer of {len(text)} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def parse_json(body: bytes) -> Any:
    """JSON with integers of many digits and deep nesting refused (400); Infinity and NaN are left to the
    field that gets one, which names itself (see _number)."""
    try:
        return json.loads(body, parse_int=_bounded_int)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON ({exc})") from None
    except RecursionError:
        raise BadRequest("the body: JSON nested too deep") from None


def azure_images(request: Any) -> list[bytes]:
    """The images of Azure's `{"input_data": {"columns": ["image"], "data": [b64, ...]}}` (rows may
    also be one-element lists, pandas' split orientation)."""
    data = request.get("input_data") if isinstance(request, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise BadRequest('expected {"input_data": {"columns": ["image"], "data": ["<base64>", ...]}}')
    columns = data.get("columns", ["image"])
    if not isinstance(columns, list) or "image" not in columns:
        raise BadRequest('input_data.columns: must contain "image"')
    column = columns.index("image")
    rows = data["data"]
    if not rows:
        raise BadRequest("input_data.data: no images")
    images = []
    for i, row in enumerate(rows):
        cell = row[column] if isinstance(row, list) and len(row) == len(columns) else row
        images.append(decode_base64(cell, f"input_data.data[{i}]"))
    return images


def split_binary(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The binary tensor data extension: the JSON header is the first Inference-Header-Content-Length bytes,
    the tensors' bytes follow it."""
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        raise BadRequest(f"Inference-Header-Content-Length: expected a number, got {header_length!r}") from None
    if not 0 <= length <= len(body):
        raise BadRequest(f"Inference-Header-Content-Length {length} is outside the body of {len(body)} bytes")
    return body[:length], body[length:]


def _binary_elements(blob: bytes, where: str) -> list[bytes]:
    """BYTES elements as the extension packs them: each a 4-byte little-endian length, then its bytes."""
    elements, offset = [], 0
    while offset < len(blob):
        if offset + 4 > len(blob):
            raise BadRequest(f"{where}: a BYTES element's 4-byte length is cut short")
        size = int.from_bytes(blob[offset:offset + 4], "little")
        if offset + 4 + size > len(blob):
            raise BadRequest(f"{where}: a BYTES element of {size} bytes runs past the binary data")
        elements.append(blob[offset + 4:offset + 4 + size])
        offset += 4 + size
    return elements


def pack_bytes(elements: list[bytes | str]) -> bytes:
    """BYTES elements packed as the extension (and gRPC's raw contents) lay them out: the inverse of the above."""
    data = [e.encode() if isinstance(e, str) else e for e in elements]
    return b"".join(len(d).to_bytes(4, "little") + d for d in data)


def _binary_input(inputs: list[dict], tensor: dict, binary: bytes) -> list[bytes] | None:
    """The tensor's elements from the binary part (inputs' binary data follow in their order), or None."""
    offset = 0
    for t in inputs:
        size = (t.get("parameters") or {}).get("binary_data_size")
        if size is None:
            continue
        if not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise BadRequest(f"inputs.{t.get('name')}.parameters.binary_data_size {size!r} does not fit the "
                             f"{len(binary)} bytes after the JSON header")
        if t is tensor:
            return _binary_elements(binary[offset:offset + size], f"inputs.{t.get('name')}")
        offset += size
    return None


def v2_images(request: Any, binary: bytes = b"") -> list[bytes]:
    """The images of an Open Inference Protocol request: one BYTES input (named "image", or the only
    input) whose data are base64 strings or binary tensor data, `shape` giving their number."""
    inputs = request.get("inputs") if isinstance(request, dict) else None
    if not isinstance(inputs, list) or not inputs or not all(isinstance(t, dict) for t in inputs):
        raise BadRequest('expected {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [N], "data": [...]}]}')
    named = [t for t in inputs if t.get("name") == V2_INPUT]
    if not named and len(inputs) != 1:
        raise BadRequest(f'inputs: no input named "{V2_INPUT}"')
    tensor = (named or inputs)[0]
    if tensor.get("datatype") != "BYTES":
        raise BadRequest(f"inputs.{tensor.get('name')}.datatype: must be BYTES, got {tensor.get('datatype')!r}")
    data, shape = tensor.get("data"), tensor.get("shape")
    raw = _binary_input(inputs, tensor, binary)
    if raw is not None:
        data = raw
    elif isinstance(data, list) and data and all(isinstance(row, list) for row in data):
        data = [cell for row in data for cell in row]  # the nested (row-major) form
    if not isinstance(data, list) or not data:
        raise BadRequest(f"inputs.{tensor.get('name')}.data: expected a non-empty list of base64 strings")
    count = 1
    for dim in shape if isinstance(shape, list) else [None]:
        if not isinstance(dim, int) or dim < 0:
            raise BadRequest(f"inputs.{tensor.get('name')}.shape: expected a list of sizes, got {shape!r}")
        count *= dim
    if count != len(data):
        raise BadRequest(f"inputs.{tensor.get('name')}: shape {shape} holds {count} elements, data has {len(data)}")
    if raw is not None:
        return raw
    return [decode_base64(cell, f"inputs.{tensor.get('name')}.data[{i}]") for i, cell in enumerate(data)]


def wants_binary_output(request: Any) -> bool:
    """Whether the client asked for binary outputs: `parameters.binary_data_output`, or per output."""
    asked = [(o.get("parameters") or {}).get("binary_data") for o in request.get("outputs") or []
             if isinstance(o, dict) and o.get("name") == V2_OUTPUT]
    if asked and asked[0] is not None:
        return bool(asked[0])
    return bool((request.get("parameters") or {}).get("binary_data_output"))


def binary_response(response: dict) -> tuple[bytes, bytes]:
    """(JSON header, tensor bytes) of a response with its BYTES outputs moved into the binary part."""
    blobs = []
    for output in response["outputs"]:
        blob = pack_bytes(output.pop("data"))
        output["parameters"] = {**output.get("parameters", {}), "binary_data_size": len(blob)}
        blobs.append(blob)
    return json.dumps(response).encode(), b"".join(blobs)


class DataPlane:
    def __init__(self, config: ServerConfig, on_batch: Callable[[int, float], None] = lambda size, seconds: None,
                 on_ready: Callable[[ModelInfo], None] = lambda info: None):
        self.config, self._on_ready = config, on_ready
        self.model: LoadedModel | None = None
        self.load_error: str | None = None
        self.draining = False  # SIGTERM came: not ready (the balancer stops sending), still serving
        self.batcher = MicroBatcher(self._predict, config.max_batch_size or 1, config.max_wait_ms / 1000,
                                    config.decode_threads, on_batch)
        self._workdir = tempfile.TemporaryDirectory(prefix="autodetect-serve-")
        self.waiting = 0  # images admitted and not yet answered (decoding, queued or in the model)
        self.pixels = PixelBudget(config.max_pixels_in_flight)
        self._loading: asyncio.Task | None = None

    # -- life ---------------------------------------------------------------------------------
    async def start(self, model: LoadedModel | None = None) -> None:
        """Start the batcher and load (unless given) and warm up the model in the background."""
        self.batcher.start()
        self._loading = asyncio.create_task(self._load(model), name="load-model")

    async def _load(self, model: LoadedModel | None) -> None:
        try:
            loaded = model or await asyncio.to_thread(load_model, self.config, Path(self._workdir.name))
            self.batcher.max_batch_size = self.config.max_batch_size or default_batch_size(loaded.info.device)
            await asyncio.to_thread(warm_up, loaded, (1, self.batcher.max_batch_size))
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("loading the model from %s failed", self.config.model_dir)
            return
        self.model = loaded
        self._on_ready(loaded.info)
        log.info("model %s version %s ready (%s runtime)", loaded.info.name, loaded.info.version, loaded.info.runtime)

    async def stop(self) -> None:
        if self._loading is not None:
            self._loading.cancel()
            await asyncio.gather(self._loading, return_exceptions=True)
        await self.batcher.stop()
        self._workdir.cleanup()

    def drain(self) -> None:
        """SIGTERM: readiness turns false; requests are still served until the listener closes."""
        self.draining = True
        log.info("draining: not ready any more, still serving")

    @property
    def live(self) -> bool:
        return self.load_error is None

    @property
    def ready(self) -> bool:
        return self.model is not None and not self.draining

    def loaded(self, name: str | None = None, version: str | None = None) -> LoadedModel:
        """The model, once ready; NotFound for a name or version that is not the model's."""
        if self.model is None:
            raise NotReady("the model failed to load (the server's log says why)" if self.load_error else "the model is loading")
        if name is not None and name != self.model.info.name:
            raise NotFound(f"no model named {name!r}; this server serves {self.model.info.name!r}")
        if version is not None and version != self.model.info.version:
            raise NotFound(f"model {name!r} has no version {version!r}; it is version {self.model.info.version!r}")
        return self.model

    # -- scoring ------------------------------------------------------------------------------
    def _predict(self, payloads: list[Any], options: PredictOptions) -> list[list[Detection]]:
        return self.loaded().runtime.predict(payloads, options)

    @property
    def max_waiting(self) -> int:
        return self.config.max_queued_images or max(64, 4 * self.batcher.max_batch_size)

    async def score(self, images: list[bytes], overrides: Mapping[str, Any]) -> list[list[Detection]]:
        """Detections for each image (decoded with the pixel limit), batched with other requests. Overloaded
        at once when more images than max_waiting would wait for the model."""
        model = self.loaded()
        options = predict_options(model.info.defaults, overrides)
        if len(images) > self.config.max_images_per_request:
            raise PayloadTooLarge(f"{len(images)} images in one request; the limit is {self.config.max_images_per_request}")
        for image in images:
            if not image:
                raise BadRequest("empty image (zero bytes)")
        if self.waiting and self.waiting + len(images) > self.max_waiting:
            raise Overloaded(f"{self.waiting} images are waiting for the model (the limit is {self.max_waiting}); "
                             "retry shortly")
        self.waiting += len(images)
        try:
            return await self._score(model, images, options)
        finally:
            self.waiting -= len(images)

    async def _score(self, model: LoadedModel, images: list[bytes], options: PredictOptions) -> list[list[Detection]]:
        sizes = model.info.input_size
        fit = (sizes.get("image_size") or sizes.get("max_size") or 640, sizes.get("min_size") or 1)

        def prepare(data: bytes, pixels: int) -> Any:
            try:
                return model.runtime.prepare(load_rgb(data, self.config.max_pixels, fit))
            finally:
                if len(data) > LARGE_BYTES or pixels > LARGE_PIXELS:
                    release_memory()

        async def job(data: bytes) -> Any:
            pixels = image_pixels(data, self.config.max_pixels)  # from the header; ImageError for a bad one
            async with self.pixels.hold(pixels):
                return await self.batcher.submit(lambda: prepare(data, pixels), options)

        results = await asyncio.gather(*(job(data) for data in images), return_exceptions=True)
        for i, result in enumerate(results):  # the first error wins
            if isinstance(result, BaseException):
                if isinstance(result, (ImageError, ServingError)) and len(images) > 1:
                    raise type(result)(f"image {i}: {result}") from None
                raise result
        return results

    async def infer_v2(self, name: str, version: str | None, request: Any, binary: bytes = b"") -> dict:
        """An Open Inference Protocol infer: a BYTES output "boxes", one JSON string per image
        (`{"boxes": [...]}`, Azure's shape); `parameters` may override the thresholds."""
        model = self.loaded(name, version)
        if not isinstance(request, dict):
            raise BadRequest("expected a JSON object with \"inputs\"")
        parameters = {k: v for k, v in (request.get("parameters") or {}).items() if k != "binary_data_output"} \
            if isinstance(request.get("parameters") or {}, dict) else None
        if parameters is None:
            raise BadRequest("parameters: expected an object")
        detections = await self.score(await asyncio.to_thread(v2_images, request, binary), parameters)
        response = {"model_name": model.info.name, "model_version": model.info.version,
                    "outputs": [{"name": V2_OUTPUT, "datatype": "BYTES", "shape": [len(detections)],
                                 "data": [json.dumps(boxes_json(found)) for found in detections]}]}
        if isinstance(request.get("id"), str):
            response["id"] = request["id"]
        return response

    def v2_metadata(self, name: str, version: str | None = None) -> dict:
        info = self.loaded(name, version).info
        return {"name": info.name, "versions": [info.version], "platform": f"{info.family}_{info.runtime}",
                "inputs": [{"name": V2_INPUT, "datatype": "BYTES", "shape": [-1]}],
                "outputs": [{"name": V2_OUTPUT, "datatype": "BYTES", "shape": [-1]}],
                "parameters": {"classes": info.classes, "input_size": info.input_size}}


LARGE_PIXELS, LARGE_BYTES = 4_000_000, 4 * 1024 * 1024


def release_memory() -> None:
    """Hand freed heap back to the system (glibc keeps it otherwise, and RSS stays at the peak of a large image)."""
    try:
        _libc().malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


@functools.lru_cache(maxsize=1)
def _libc():
    import ctypes

    return ctypes.CDLL("libc.so.6")


class PixelBudget:
    """The decoded pixels all requests may hold at once; an image waits its turn (one larger than the whole
    budget takes all of it)."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def hold(self, pixels: int):
        pixels = min(pixels, self.limit)
        async with self._changed:
            await self._changed.wait_for(lambda: self.used + pixels <= self.limit)
            self.used += pixels
        try:
            yield
        finally:
            async with self._changed:
                self.used -= pixels
                self._changed.notify_all()


def boxes_json(detections: list[Detection]) -> dict:
    return {"boxes": [d.to_json() for d in detections]}
