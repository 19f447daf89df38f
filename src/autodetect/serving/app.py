"""The HTTP transport: routes, body limits, content types, auth, and the one place where typed
errors become HTTP responses (`{"error": "..."}`, the Open Inference Protocol's error shape).

Open without a key: /healthz, /readyz, /metrics, /v2/health/live, /v2/health/ready (probes and
scrapers carry no key, and they reveal nothing about the model). With config.grpc_port, the same
protocol over gRPC (grpc_server.py) runs in this event loop, on the same DataPlane. Everything else needs
`Authorization: Bearer <key>` unless auth is off."""

from __future__ import annotations

import asyncio
import logging
import re
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from autodetect import __version__
from autodetect.errors import ImageError
from autodetect.serving.auth import check_bearer
from autodetect.serving.config import ServerConfig
from autodetect.serving.dataplane import (DataPlane, azure_images, binary_response, boxes_json, parse_json,
                                          split_binary, wants_binary_output)
from autodetect.serving.errors import BadRequest, PayloadTooLarge, ServingError, UnsupportedMediaType
from autodetect.serving.metrics import Metrics, MetricsMiddleware
from autodetect.serving.model import LoadedModel, ModelInfo
from autodetect.serving.transport import REDACT_QUERY, HeaderLimits

log = logging.getLogger(__name__)

QUERY_OVERRIDES = ("box_score_threshold", "nms_iou_threshold", "max_detections")
BINARY_HEADER = "Inference-Header-Content-Length"  # the Open Inference Protocol's binary tensor data extension
IMAGE_TYPES = ("application/octet-stream", "image/")


def error_response(status: int, message: str) -> JSONResponse:
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="autodetect"'
    if status == 503:
        headers["Retry-After"] = "1"
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def filename_of(request: Request) -> str:
    match = re.search(r'filename="?([^";]+)"?', request.headers.get("content-disposition", ""))
    return match.group(1) if match else "image"


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed limit (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def query_overrides(request: Request) -> dict[str, str]:
    unknown = sorted(set(request.query_params) - set(QUERY_OVERRIDES))
    if unknown:
        raise BadRequest(f"unknown query parameter {unknown[0]!r}; known: {', '.join(QUERY_OVERRIDES)}")
    return dict(request.query_params)


def create_app(config: ServerConfig, model: LoadedModel | None = None) -> FastAPI:
    """The scoring app. `model`, when given, is served as loaded (it is still warmed up before
    /readyz says ready); otherwise the app loads config.model_dir once it has started."""
    metrics = Metrics()

    def on_ready(info: ModelInfo) -> None:
        metrics.set_model(info.name, info.version, info.family, info.model_name, info.runtime)

    plane = DataPlane(config, on_batch=metrics.observe_batch, on_ready=on_ready)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await plane.start(model)
        grpc_server = None
        if config.grpc_port:
            from autodetect.serving.grpc_server import start_grpc  # grpc loads only where it is asked for

            grpc_server = await start_grpc(config, plane, metrics)
        yield
        if grpc_server is not None:  # readiness already reads false there too: the plane is draining
            await grpc_server.stop(config.graceful_timeout_s)
        await plane.stop()  # uvicorn calls this only after the requests in flight have finished

    async def require_key(request: Request) -> None:
        if config.auth:
            check_bearer(request.headers.get("authorization"), config.api_keys)

    app = FastAPI(title="autodetect scoring", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(HeaderLimits, max_headers=config.max_headers, max_bytes=config.max_header_bytes)
    app.state.plane = plane
    logging.getLogger("uvicorn.access").addFilter(REDACT_QUERY)  # here too: each worker process builds its app

    @app.exception_handler(ServingError)
    async def serving_error(request: Request, exc: ServingError) -> JSONResponse:
        return error_response(exc.status, str(exc))

    @app.exception_handler(ImageError)
    async def image_error(request: Request, exc: ImageError) -> JSONResponse:
        return error_response(400, str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: ClientDisconnect) -> Response:
        log.info("%s %s: the client hung up before its request was read", request.method, request.url.path)
        return Response(status_code=400)  # nobody reads it

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error ({type(exc).__name__})")

    # -- open: probes and metrics --------------------------------------------------------------
    @app.get("/healthz")
    async def healthz():
        if not plane.live:
            return error_response(500, "the model failed to load (the server's log says why)")
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz():
        if not plane.ready:
            return error_response(503, "the model failed to load (the server's log says why)" if plane.load_error
                                  else "the server is stopping" if plane.draining else "the model is loading")
        return {"status": "ready"}

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.get("/v2/health/live")
    async def v2_live():
        return JSONResponse({"live": plane.live}, status_code=200 if plane.live else 500)

    @app.get("/v2/health/ready")
    async def v2_ready():
        return JSONResponse({"ready": plane.ready}, status_code=200 if plane.ready else 503)

    @app.get("/v2/models/{name}/ready")  # a health endpoint: as open as /readyz, so no key never reads "not ready"
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def v2_model_ready(name: str, version: str | None = None):
        plane.loaded(name, version)
        return {"name": name, "ready": True}

    # -- behind the key ------------------------------------------------------------------------
    scoring = APIRouter(dependencies=[Depends(require_key)])

    @scoring.post("/score")
    async def score(request: Request):
        kind, overrides = media_type(request), query_overrides(request)
        if kind == "application/json":  # parsed off the event loop: the body may be megabytes of base64
            body = await read_body(request, config.max_body_bytes)
            images = await asyncio.to_thread(lambda: azure_images(parse_json(body)))
            return [boxes_json(found) for found in await plane.score(images, overrides)]
        if kind and not kind.startswith(IMAGE_TYPES):  # no Content-Type: image bytes, as Azure's scoring script takes
            raise UnsupportedMediaType(f"content type {kind or '(none)'!r}: send the image as application/octet-stream "
                                       "(or image/*), or Azure's JSON request as application/json")
        found = await plane.score([await read_body(request, config.max_body_bytes)], overrides)
        return {"filename": filename_of(request), **boxes_json(found[0])}

    @scoring.get("/v1/model")
    async def v1_model():
        return plane.loaded().info.to_json()

    @scoring.get("/v2")
    async def v2_server():
        return {"name": "autodetect", "version": __version__, "extensions": ["binary_tensor_data"]}

    @scoring.get("/v2/models/{name}")
    @scoring.get("/v2/models/{name}/versions/{version}")
    async def v2_model(name: str, version: str | None = None):
        return plane.v2_metadata(name, version)


    @scoring.post("/v2/models/{name}/infer")
    @scoring.post("/v2/models/{name}/versions/{version}/infer")
    async def v2_infer(request: Request, name: str, version: str | None = None):
        header_length = request.headers.get(BINARY_HEADER)
        if header_length is None and media_type(request) not in ("application/json", ""):
            raise UnsupportedMediaType("send the Open Inference Protocol's JSON as application/json, or binary "
                                       f"tensor data with the {BINARY_HEADER} header")
        header, binary = split_binary(await read_body(request, config.max_body_bytes), header_length)
        infer = await asyncio.to_thread(parse_json, header)
        response = await plane.infer_v2(name, version, infer, binary)
        if not wants_binary_output(infer):
            return response
        head, blob = binary_response(response)
        return Response(head + blob, media_type="application/octet-stream",
                        headers={BINARY_HEADER: str(len(head))})

    app.include_router(scoring)
    return app
