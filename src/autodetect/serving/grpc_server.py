"""The Open Inference Protocol over gRPC (KServe's `inference.GRPCInferenceService`, as tritonclient.grpc
speaks it), beside the HTTP server, in the same event loop and on the same DataPlane.

The messages are built here from their field numbers (the protocol's wire contract), in a private descriptor
pool, so there is no generated code and no clash with a client library's copy in the same process.

ServerLive, ServerReady and ModelReady are as open as /healthz; ServerMetadata, ModelMetadata and ModelInfer
need the HTTP server's keys, sent as `authorization: Bearer <key>` metadata. ModelInfer takes the BYTES input
"image" (raw_input_contents in the binary tensor layout, or contents.bytes_contents) and answers the BYTES
output "boxes", one JSON string per image, in raw_output_contents; request parameters may override the
thresholds, as on HTTP."""

from __future__ import annotations

import logging
import time
from typing import Any, Awaitable, Callable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from autodetect import __version__
from autodetect.errors import AutodetectError
from autodetect.serving.auth import check_bearer
from autodetect.serving.config import ServerConfig
from autodetect.serving.dataplane import DataPlane, pack_bytes
from autodetect.serving.errors import ServingError
from autodetect.serving.metrics import Metrics

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
F = descriptor_pb2.FieldDescriptorProto
BOOL, INT32, INT64, UINT32, UINT64, FLOAT, DOUBLE, STRING, BYTES, MESSAGE = (
    F.TYPE_BOOL, F.TYPE_INT32, F.TYPE_INT64, F.TYPE_UINT32, F.TYPE_UINT64, F.TYPE_FLOAT, F.TYPE_DOUBLE,
    F.TYPE_STRING, F.TYPE_BYTES, F.TYPE_MESSAGE)
PARAMETERS = "map<InferParameter>"  # a field that is map<string, InferParameter>
# message -> [(field, number, type, repeated)]; a MESSAGE type is written as the message's name instead
MESSAGES: dict[str, list[tuple[str, int, Any, bool]]] = {
    "InferParameter": [("bool_param", 1, BOOL, False), ("int64_param", 2, INT64, False),
                       ("string_param", 3, STRING, False), ("double_param", 4, DOUBLE, False),
                       ("uint64_param", 5, UINT64, False)],  # one oneof: parameter_choice
    "InferTensorContents": [("bool_contents", 1, BOOL, True), ("int_contents", 2, INT32, True),
                            ("int64_contents", 3, INT64, True), ("uint_contents", 4, UINT32, True),
                            ("uint64_contents", 5, UINT64, True), ("fp32_contents", 6, FLOAT, True),
                            ("fp64_contents", 7, DOUBLE, True), ("bytes_contents", 8, BYTES, True)],
    "ServerLiveRequest": [], "ServerLiveResponse": [("live", 1, BOOL, False)],
    "ServerReadyRequest": [], "ServerReadyResponse": [("ready", 1, BOOL, False)],
    "ModelReadyRequest": [("name", 1, STRING, False), ("version", 2, STRING, False)],
    "ModelReadyResponse": [("ready", 1, BOOL, False)],
    "ServerMetadataRequest": [],
    "ServerMetadataResponse": [("name", 1, STRING, False), ("version", 2, STRING, False),
                               ("extensions", 3, STRING, True)],
    "ModelMetadataRequest": [("name", 1, STRING, False), ("version", 2, STRING, False)],
    "ModelMetadataResponse.TensorMetadata": [("name", 1, STRING, False), ("datatype", 2, STRING, False),
                                             ("shape", 3, INT64, True)],
    "ModelMetadataResponse": [("name", 1, STRING, False), ("versions", 2, STRING, True),
                              ("platform", 3, STRING, False), ("inputs", 4, "ModelMetadataResponse.TensorMetadata", True),
                              ("outputs", 5, "ModelMetadataResponse.TensorMetadata", True)],
    "ModelInferRequest.InferInputTensor": [("name", 1, STRING, False), ("datatype", 2, STRING, False),
                                           ("shape", 3, INT64, True), ("parameters", 4, PARAMETERS, True),
                                           ("contents", 5, "InferTensorContents", False)],
    "ModelInferRequest.InferRequestedOutputTensor": [("name", 1, STRING, False), ("parameters", 2, PARAMETERS, True)],
    "ModelInferRequest": [("model_name", 1, STRING, False), ("model_version", 2, STRING, False),
                          ("id", 3, STRING, False), ("parameters", 4, PARAMETERS, True),
                          ("inputs", 5, "ModelInferRequest.InferInputTensor", True),
                          ("outputs", 6, "ModelInferRequest.InferRequestedOutputTensor", True),
                          ("raw_input_contents", 7, BYTES, True)],
    "ModelInferResponse.InferOutputTensor": [("name", 1, STRING, False), ("datatype", 2, STRING, False),
                                             ("shape", 3, INT64, True), ("parameters", 4, PARAMETERS, True),
                                             ("contents", 5, "InferTensorContents", False)],
    "ModelInferResponse": [("model_name", 1, STRING, False), ("model_version", 2, STRING, False),
                           ("id", 3, STRING, False), ("parameters", 4, PARAMETERS, True),
                           ("outputs", 5, "ModelInferResponse.InferOutputTensor", True),
                           ("raw_output_contents", 6, BYTES, True)],
}
STATUS_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
                404: grpc.StatusCode.NOT_FOUND, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
                415: grpc.StatusCode.INVALID_ARGUMENT, 503: grpc.StatusCode.UNAVAILABLE}


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(name="autodetect/grpc_predict_v2.proto", package="inference",
                                              syntax="proto3")
    made: dict[str, descriptor_pb2.DescriptorProto] = {}
    for path, fields in sorted(MESSAGES.items(), key=lambda item: item[0].count(".")):  # parents first
        parent, _, name = path.rpartition(".")
        message = (made[parent].nested_type if parent else file.message_type).add(name=name)
        made[path] = message
        for field, number, kind, repeated in fields:
            entry = message.field.add(name=field, number=number,
                                      label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
            if kind == PARAMETERS:  # a map is a repeated nested XEntry {key = 1; value = 2} marked map_entry
                entry_name = "".join(part.capitalize() for part in field.split("_")) + "Entry"
                nested = message.nested_type.add(name=entry_name)
                nested.options.map_entry = True
                nested.field.add(name="key", number=1, type=STRING, label=F.LABEL_OPTIONAL)
                nested.field.add(name="value", number=2, type=MESSAGE, type_name=".inference.InferParameter",
                                 label=F.LABEL_OPTIONAL)
                entry.type, entry.type_name = MESSAGE, f".inference.{path}.{entry_name}"
            elif isinstance(kind, str):
                entry.type, entry.type_name = MESSAGE, f".inference.{kind}"
            else:
                entry.type = kind
        if path == "InferParameter":
            message.oneof_decl.add(name="parameter_choice")
            for entry in message.field:
                entry.oneof_index = 0
    return file


def _messages() -> dict[str, type]:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file_descriptor())
    return {path: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"inference.{path}"))
            for path in MESSAGES}


M = _messages()


def parameter_values(parameters: Any) -> dict[str, Any]:
    return {key: getattr(value, value.WhichOneof("parameter_choice")) for key, value in parameters.items()
            if value.WhichOneof("parameter_choice")}


def as_v2_request(request: Any) -> tuple[dict, bytes]:
    """The HTTP side's form of a ModelInferRequest: a JSON-like request whose inputs' data follow as binary
    tensor data (raw_input_contents already are; bytes_contents are laid out the same way)."""
    raw = list(request.raw_input_contents)
    inputs, blobs = [], []
    for i, tensor in enumerate(request.inputs):
        if raw:
            blob = raw[i] if i < len(raw) else b""
        else:
            blob = pack_bytes(list(tensor.contents.bytes_contents))
        inputs.append({"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape),
                       "parameters": {**parameter_values(tensor.parameters), "binary_data_size": len(blob)}})
        blobs.append(blob)
    v2 = {"inputs": inputs, "parameters": parameter_values(request.parameters)}
    if request.id:
        v2["id"] = request.id
    return v2, b"".join(blobs)


def as_infer_response(response: dict) -> Any:
    message = M["ModelInferResponse"](model_name=response["model_name"], model_version=response["model_version"],
                                      id=response.get("id", ""))
    for output in response["outputs"]:
        message.outputs.add(name=output["name"], datatype=output["datatype"], shape=output["shape"])
        message.raw_output_contents.append(pack_bytes(output["data"]))
    return message


class InferenceService:
    """The servicer; `_served` wraps each method in the error mapping and the metrics."""

    def __init__(self, config: ServerConfig, plane: DataPlane, metrics: Metrics):
        self.config, self.plane, self.metrics = config, plane, metrics

    async def server_live(self, request: Any, context: Any) -> Any:
        return M["ServerLiveResponse"](live=self.plane.live)

    async def server_ready(self, request: Any, context: Any) -> Any:
        return M["ServerReadyResponse"](ready=self.plane.ready)

    async def model_ready(self, request: Any, context: Any) -> Any:
        self.plane.loaded(request.name, request.version or None)
        return M["ModelReadyResponse"](ready=True)

    async def server_metadata(self, request: Any, context: Any) -> Any:
        self._authorize(context)
        return M["ServerMetadataResponse"](name="autodetect", version=__version__, extensions=["binary_tensor_data"])

    async def model_metadata(self, request: Any, context: Any) -> Any:
        self._authorize(context)
        meta = self.plane.v2_metadata(request.name, request.version or None)
        tensors = lambda items: [M["ModelMetadataResponse.TensorMetadata"](**t) for t in items]  # noqa: E731
        return M["ModelMetadataResponse"](name=meta["name"], versions=meta["versions"], platform=meta["platform"],
                                          inputs=tensors(meta["inputs"]), outputs=tensors(meta["outputs"]))

    async def model_infer(self, request: Any, context: Any) -> Any:
        self._authorize(context)
        v2, binary = as_v2_request(request)
        response = await self.plane.infer_v2(request.model_name, request.model_version or None, v2, binary)
        return as_infer_response(response)

    def _authorize(self, context: Any) -> None:
        if self.config.auth:
            metadata = dict(context.invocation_metadata() or ())
            check_bearer(metadata.get("authorization"), self.config.api_keys)

    def handler(self) -> grpc.GenericRpcHandler:
        methods = {"ServerLive": (self.server_live, "ServerLiveRequest", "ServerLiveResponse"),
                   "ServerReady": (self.server_ready, "ServerReadyRequest", "ServerReadyResponse"),
                   "ModelReady": (self.model_ready, "ModelReadyRequest", "ModelReadyResponse"),
                   "ServerMetadata": (self.server_metadata, "ServerMetadataRequest", "ServerMetadataResponse"),
                   "ModelMetadata": (self.model_metadata, "ModelMetadataRequest", "ModelMetadataResponse"),
                   "ModelInfer": (self.model_infer, "ModelInferRequest", "ModelInferResponse")}
        return grpc.method_handlers_generic_handler(SERVICE, {
            name: grpc.unary_unary_rpc_method_handler(_served(method, name, self.metrics),
                                                      request_deserializer=M[request].FromString,
                                                      response_serializer=M[response].SerializeToString)
            for name, (method, request, response) in methods.items()})


def _served(method: Callable[[Any, Any], Awaitable[Any]], name: str, metrics: Metrics) -> Callable[[Any, Any], Awaitable[Any]]:
    """The method with typed errors turned into gRPC status codes, as app.py turns them into HTTP ones, and
    counted in the HTTP server's metrics (method GRPC, status the code's name; ModelInfer in flight)."""
    route, scoring = f"/{SERVICE}/{name}", name == "ModelInfer"

    async def call(request: Any, context: Any) -> Any:
        started, code = time.perf_counter(), grpc.StatusCode.OK
        if scoring:
            metrics.in_flight.inc()
        try:
            return await method(request, context)
        except ServingError as exc:
            code = STATUS_CODES.get(exc.status, grpc.StatusCode.INTERNAL)
            await context.abort(code, str(exc))
        except AutodetectError as exc:  # ImageError included: the input's fault
            code = grpc.StatusCode.INVALID_ARGUMENT
            await context.abort(code, str(exc))
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - the log says why, the client gets the kind
            code = grpc.StatusCode.INTERNAL
            log.exception("internal error in gRPC %s", name)
            await context.abort(code, f"internal error ({type(exc).__name__})")
        finally:
            if scoring:
                metrics.in_flight.dec()
            metrics.observe_request(route, "GRPC", code.name, time.perf_counter() - started)
    return call


async def start_grpc(config: ServerConfig, plane: DataPlane, metrics: Metrics) -> grpc.aio.Server:
    """A started gRPC server on config.grpc_port, in the running event loop (SO_REUSEPORT lets each worker
    process bind the same port, as uvicorn's share one socket)."""
    limit = config.max_body_bytes
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", limit),
                                      ("grpc.max_send_message_length", limit),
                                      ("grpc.max_concurrent_streams", config.max_connections)])
    server.add_generic_rpc_handlers((InferenceService(config, plane, metrics).handler(),))
    if not server.add_insecure_port(f"{config.host}:{config.grpc_port}"):
        raise AutodetectError(f"grpc_port: cannot listen on {config.host}:{config.grpc_port}")
    await server.start()
    log.info("Open Inference Protocol over gRPC on %s:%d", config.host, config.grpc_port)
    return server
