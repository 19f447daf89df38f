"""Everything the scoring server is configured by; built by the CLI (or a test), never from argv
at import time. `to_env`/`from_env` carry it to uvicorn's worker processes when --workers > 1."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from autodetect.data.images import MAX_PIXELS
from autodetect.errors import SpecError

RUNTIMES = ("auto", "openvino", "onnx", "torch")
LETTERBOXES = ("rect", "square")
ENV_CONFIG = "AUTODETECT_SERVE_CONFIG"


@dataclass(frozen=True)
class ServerConfig:
    model_dir: Path
    host: str = "0.0.0.0"
    port: int = 8080
    grpc_port: int | None = None  # the Open Inference Protocol over gRPC as well, on this port
    auth: bool = True
    api_keys: frozenset[str] = field(default_factory=frozenset, repr=False)  # never logged
    runtime: str = "auto"  # auto: ONNX Runtime where the family exports to ONNX, else torch
    letterbox: str = "rect"  # ONNX runtime: rect (pad to the stride, less compute) or square (as the torch path)
    max_batch_size: int = 0  # 0: the model's device decides (see model.default_batch_size)
    max_wait_ms: float = 5.0
    workers: int = 1
    max_body_bytes: int = 20 * 1024 * 1024
    max_images_per_request: int = 32  # a JSON batch of many small, highly compressed images is a memory bomb
    max_pixels: int = MAX_PIXELS
    decode_threads: int = 4
    inference_threads: int = 0  # intra-op threads of the runtime; 0: the CPUs this process may use
    onnx_path: Path | None = None  # where to find or write the exported model; None: <model_dir>/model.onnx or a temp file
    graceful_timeout_s: float = 30.0
    drain_s: float = 5.0  # after SIGTERM: not ready, still serving, so the balancer can take the pod out first
    max_queued_images: int = 0  # images decoding or waiting for the model; 0: max(64, 4 batches). Beyond: 503
    max_pixels_in_flight: int = 2 * MAX_PIXELS  # decoded pixels across all requests at once
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    max_connections: int = 1000

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise SpecError("runtime", f"{self.runtime!r} is not one of {', '.join(RUNTIMES)}")
        if self.letterbox not in LETTERBOXES:
            raise SpecError("letterbox", f"{self.letterbox!r} is not one of {', '.join(LETTERBOXES)}")
        for name in ("workers", "max_body_bytes", "max_images_per_request", "max_pixels", "decode_threads",
                     "max_pixels_in_flight", "max_header_bytes", "max_headers", "max_connections"):
            if getattr(self, name) < 1:
                raise SpecError(name, f"must be at least 1, got {getattr(self, name)}")
        for name in ("header_timeout_s", "body_timeout_s"):
            if getattr(self, name) <= 0:
                raise SpecError(name, f"must be positive, got {getattr(self, name)}")
        for name in ("max_batch_size", "max_wait_ms", "inference_threads", "drain_s", "max_queued_images"):
            if getattr(self, name) < 0:
                raise SpecError(name, f"must not be negative, got {getattr(self, name)}")
        if self.grpc_port is not None and not (0 < self.grpc_port < 65536 and self.grpc_port != self.port):
            raise SpecError("grpc_port", f"must be a port (1-65535) other than the HTTP port {self.port}, "
                                         f"got {self.grpc_port}")
        if self.auth and not self.api_keys:
            raise SpecError("auth", "auth is on but no API key was given (--keys-file or AUTODETECT_API_KEYS); "
                                    "pass --no-auth to serve without authentication")

    def to_env(self) -> str:
        data = asdict(self)
        data.update(model_dir=str(self.model_dir), api_keys=sorted(self.api_keys),
                    onnx_path=str(self.onnx_path) if self.onnx_path else None)
        return json.dumps(data)

    @classmethod
    def from_env(cls) -> "ServerConfig":
        data = json.loads(os.environ[ENV_CONFIG])
        data.update(model_dir=Path(data["model_dir"]), api_keys=frozenset(data["api_keys"]),
                    onnx_path=Path(data["onnx_path"]) if data["onnx_path"] else None)
        return cls(**data)
