"""The model layer: load an artifact, pick its runtime, warm it up, predict batches.

A runtime has `prepare(image) -> payload` (per image, on a decode thread) and
`predict(payloads, options) -> detections per image` (per batch, on the inference thread)."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from autodetect.errors import SpecError
from autodetect.models.base import Detection, Detector, PredictOptions
from autodetect.models.hyperparameters import TORCHVISION, YOLO
from autodetect.serving.config import ServerConfig

log = logging.getLogger(__name__)

ONNX_FAMILIES = frozenset({YOLO, TORCHVISION})  # each has its runtime in onnx_runtime.py


class Runtime(Protocol):
    name: str
    device: str  # "cpu" or "cuda"

    def prepare(self, image: np.ndarray) -> Any: ...

    def predict(self, batch: list[Any], options: PredictOptions) -> list[list[Detection]]: ...


class TorchRuntime:
    """The family's own PyTorch predict (every family)."""

    name = "torch"

    def __init__(self, detector: Detector):
        self.detector = detector
        parameters = getattr(getattr(detector, "model", None), "parameters", None)
        self.device = next(parameters()).device.type if parameters else "cpu"

    def prepare(self, image: np.ndarray) -> np.ndarray:
        return image

    def predict(self, batch: list[np.ndarray], options: PredictOptions) -> list[list[Detection]]:
        return self.detector.predict(batch, options)


def cpu_limit(affinity: int, cpu_max: str | None) -> int:
    """The CPUs a process may use: its affinity, capped by a cgroup v2 quota ("<quota> <period>" or
    "max <period>", what a Kubernetes CPU limit becomes)."""
    fields = (cpu_max or "").split()
    if len(fields) == 2 and fields[0] != "max" and fields[0].isdigit() and fields[1].isdigit() and int(fields[1]):
        return max(1, min(affinity, math.ceil(int(fields[0]) / int(fields[1]))))
    return max(1, affinity)


def available_cpus() -> int:
    """The default intra-op thread count: more threads than CPUs (a runtime's default counts the
    host's cores, not the container's limit) makes inference several times slower."""
    try:
        cpu_max = Path("/sys/fs/cgroup/cpu.max").read_text()
    except OSError:
        cpu_max = None
    return cpu_limit(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, cpu_max)


def default_batch_size(device: str) -> int:
    """A GPU is underused by one image a call; on a CPU a batch costs about as much per image as
    single images do until it outgrows the caches (measured: yolov8n at 640, 1 and 2 alike, 4 and 8
    slower per image), so only small batches pay there."""
    return 8 if device == "cuda" else 2


def choose_runtime(requested: str, family: str, card: dict | None = None, capabilities: set[str] = frozenset()) -> str:
    """auto: the fastest OpenVINO export the card holds and the CPU runs (openvino-<precision>),
    else onnx for the families that export to ONNX, else torch; openvino: the fastest such export."""
    if requested in ("auto", "openvino") and family in ONNX_FAMILIES:
        from autodetect.serving.openvino_runtime import RUNTIMES_KEY, choose_exported

        entry = choose_exported((card or {}).get(RUNTIMES_KEY, {}), capabilities)
        if entry:
            return f"openvino-{entry['precision']}"
        if requested == "openvino":
            raise SpecError("runtime", "the artifact holds no OpenVINO export this CPU runs; "
                                       "make one with `autodetect export --runtime openvino --precision ...`")
    if requested == "torch" or (requested == "auto" and family not in ONNX_FAMILIES):
        return "torch"
    if family not in ONNX_FAMILIES:
        raise SpecError("runtime", f"the {family} family is served with the torch runtime only")
    return "onnx"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    family: str
    model_name: str
    classes: list[str]
    input_size: dict[str, int]
    runtime: str
    device: str
    defaults: PredictOptions

    def to_json(self) -> dict:
        return {"name": self.name, "version": self.version, "family": self.family, "model_name": self.model_name,
                "classes": self.classes, "input_size": self.input_size, "runtime": self.runtime, "device": self.device,
                "defaults": {"box_score_threshold": self.defaults.score_threshold,
                             "nms_iou_threshold": self.defaults.iou_threshold,
                             "max_detections": self.defaults.max_detections}}


@dataclass(frozen=True)
class LoadedModel:
    info: ModelInfo
    runtime: Runtime


def load_model(config: ServerConfig, workdir: Path) -> LoadedModel:
    """Load the artifact in config.model_dir and its runtime; an ONNX export goes to config.onnx_path,
    else <model_dir>/model.onnx when that exists already, else into workdir."""
    from autodetect.models.registry import load_artifact, read_model_card

    card = read_model_card(config.model_dir)
    detector = load_artifact(config.model_dir)
    runtime: Runtime = TorchRuntime(detector)
    chosen = choose_runtime(config.runtime, detector.family, card, _capabilities(card))
    if chosen.startswith("openvino-"):
        from autodetect.serving.openvino_runtime import RUNTIMES_KEY, open_runtime

        runtime = open_runtime(config.model_dir, card[RUNTIMES_KEY][chosen], detector,
                               config.inference_threads or available_cpus(), config.letterbox)
    elif chosen == "onnx":
        try:
            runtime = _onnx_runtime(config, detector, workdir)
        except Exception as exc:  # an export the family could not do: fall back only when not asked for
            if config.runtime == "onnx":
                raise
            log.warning("ONNX export failed (%s); serving with the torch runtime", exc)
    if runtime.name == "torch":
        import torch

        torch.set_num_threads(config.inference_threads or available_cpus())
    info = ModelInfo(
        name=str(card.get("name") or config.model_dir.name), version=str(card.get("version", "1")),
        family=detector.family, model_name=str(card.get("model_name", detector.hyperparameters.get("model_name"))),
        classes=list(detector.classes), input_size=dict(detector.input_size), runtime=runtime.name, device=runtime.device,
        defaults=PredictOptions.from_hyperparameters(detector.hyperparameters),
    )
    return LoadedModel(info, runtime)


def _onnx_runtime(config: ServerConfig, detector: Detector, workdir: Path) -> Runtime:
    from autodetect.serving.onnx_runtime import OnnxTorchvisionRuntime, OnnxYoloRuntime

    path = config.onnx_path or config.model_dir / "model.onnx"
    if not path.is_file():
        path = detector.export_onnx(config.onnx_path or workdir / "model.onnx")
    threads = config.inference_threads or available_cpus()
    if detector.family == YOLO:
        return OnnxYoloRuntime(path, detector.classes, detector.input_size["image_size"], threads, config.letterbox)
    from autodetect.models.torchvision_detector import ONNX_SCORE_THRESHOLD

    baked = PredictOptions.from_hyperparameters(detector.hyperparameters | {"box_score_threshold": ONNX_SCORE_THRESHOLD})
    return OnnxTorchvisionRuntime(path, detector.classes, baked, threads)


def _capabilities(card: dict) -> set[str]:
    if not card.get("runtimes"):
        return set()
    try:
        from autodetect.serving.openvino_runtime import cpu_capabilities

        return cpu_capabilities()
    except ImportError:  # OpenVINO not installed: its exports cannot be served
        return set()


def warm_up(model: LoadedModel, batch_sizes: tuple[int, ...]) -> None:
    """Run the model on gray images at each batch size, so that the first requests do not pay for
    lazy initialisation (allocator arenas, kernel selection)."""
    sizes = model.info.input_size
    side = sizes.get("image_size") or sizes.get("min_size") or 640
    image = np.full((side, side, 3), 114, dtype=np.uint8)
    for size in dict.fromkeys(batch_sizes):
        model.runtime.predict([model.runtime.prepare(image) for _ in range(size)], model.info.defaults)

