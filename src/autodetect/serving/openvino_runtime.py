"""OpenVINO: the ONNX export converted to OpenVINO IR, at fp32, bf16 or int8, for both families.

`export_openvino` writes <artifact>/openvino/<precision>/model.xml (+ .bin), evaluates it on the
validation set with the project's evaluator beside the PyTorch model, refuses a conversion that
loses more than `tolerance` of mean_average_precision, and records both figures in the model card
under "runtimes". bf16 is the fp32 IR compiled with INFERENCE_PRECISION_HINT=bf16, so it is only
offered where the CPU reports BF16 among its OPTIMIZATION_CAPABILITIES (AMX or AVX-512 BF16);
int8 is NNCF post-training quantization calibrated on images of the model's own training set.

The runtimes reuse the ONNX runtimes' pre- and post-processing (onnx_runtime.py); only the session
differs: an OpenVINO compiled model (`OpenVinoSession`) behind ONNX Runtime's `get_inputs`/`run`
surface. It takes HWC uint8 images and converts them in the graph (OpenVINO's PrePostProcessor,
fused into the first convolution): numpy's float conversion cost as much as the JPEG decode."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autodetect.errors import AutodetectError, SpecError
from autodetect.models.hyperparameters import YOLO
from autodetect.serving.onnx_runtime import OnnxTorchvisionRuntime, OnnxYoloRuntime, chw_float

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "int8")
# fastest first where the CPU has them all: int8 on VNNI/AMX beats bf16, which beats fp32
SPEED_ORDER = ("int8", "bf16", "fp32")
DEFAULT_TOLERANCE = 0.01  # of mean_average_precision
CALIBRATION_IMAGES = 100
STATIC_SHAPES = 2  # a YOLO session's input shapes that get a model compiled for them alone
STATIC_AFTER = 8  # lone images of one shape before it gets one (warm-up's gray square does not)
RUNTIMES_KEY = "runtimes"  # in the model card


def cpu_capabilities() -> set[str]:
    import openvino as ov

    return set(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def supported_precisions(capabilities: set[str]) -> list[str]:
    """The precisions this CPU runs natively, fastest first (pure, for tests)."""
    return [p for p in SPEED_ORDER if p != "bf16" or "BF16" in capabilities]


def choose_exported(runtimes: dict, capabilities: set[str]) -> dict | None:
    """The card's fastest OpenVINO entry this CPU supports, or None (pure)."""
    for precision in supported_precisions(capabilities):
        entry = runtimes.get(f"openvino-{precision}")
        if entry:
            return entry
    return None


def check_loss(precision: str, before: float, after: float, tolerance: float) -> None:
    """Refuse a conversion that loses more than tolerance of mean_average_precision, naming both figures."""
    if before - after > tolerance:
        raise AutodetectError(f"openvino {precision} loses {before - after:.4f} mean_average_precision "
                              f"({before:.4f} -> {after:.4f}), more than the tolerance {tolerance}; "
                              f"pass a looser --tolerance to keep it")


@dataclass(frozen=True)
class _Input:
    name: str
    shape: list


class OpenVinoSession:
    """A compiled OpenVINO model with ONNX Runtime's `get_inputs()` and `run(None, feed)`.

    A lone image runs on a model compiled for latency (every thread on it). Where the model takes batches (YOLO's,
    not torchvision's one image of any size), two more things:
    - a batch runs on a model compiled for throughput (streams of a few threads each, a batch's images at once);
    - the first STATIC_SHAPES input shapes that lone images keep coming in (STATIC_AFTER of them: 4:3, 16:9,
      portrait...) each get a latency model compiled for that shape alone, in the background. On yolov8n that
      runs some 10% faster than the dynamic model, which serves the shape until it is ready; each costs its own
      activation buffers (40-50 MB for yolov8n at 640)."""

    def __init__(self, path: Path, threads: int = 0, precision: str = "fp32"):
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(path))
        self._inputs = [_Input(i.get_any_name(), [d.get_length() if d.is_static else "?" for d in i.get_partial_shape()])
                        for i in model.inputs]
        model = _takes_uint8_hwc(model)
        config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = core.compile_model(model, "CPU", config | {"PERFORMANCE_HINT": "LATENCY"})
        self.request = self.compiled.create_infer_request()
        self._core, self._model, self._config = core, model, config
        self.streams, self.queue, self._compiler = 1, None, None
        self.static: dict[tuple, object] = {}  # input shape -> an infer request of a model compiled for it
        self._wanted: set[tuple] = set()
        self._seen: Counter[tuple] = Counter()
        shape = self._inputs[0].shape
        if len(shape) == 4 and shape[0] != 1:  # batches can come (not torchvision's one CHW image)
            from concurrent.futures import ThreadPoolExecutor

            self._compiler = ThreadPoolExecutor(1, thread_name_prefix="openvino-compile")
            if threads != 1:
                streamed = core.compile_model(model, "CPU", config | {"PERFORMANCE_HINT": "THROUGHPUT"})
                self.streams = int(streamed.get_property("NUM_STREAMS"))
                if self.streams > 1:
                    self.queue = ov.AsyncInferQueue(streamed, self.streams)

    def get_inputs(self) -> list[_Input]:
        return self._inputs

    def run(self, _names, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        [(name, array)] = feed.items()
        if self.queue is None or array.ndim != 4 or len(array) == 1:
            return list(self._latency_request(array.shape).infer({name: array}).values())
        outputs: list = [None] * len(array)

        def done(request, index):
            outputs[index] = request.get_output_tensor(0).data.copy()

        self.queue.set_callback(done)
        for index, image in enumerate(array):
            self.queue.start_async({name: image[None]}, index)
        self.queue.wait_all()
        return [np.concatenate(outputs)]

    def _latency_request(self, shape: tuple):
        """The request compiled for this shape, or the dynamic one (asking for a static one while there is room)."""
        request = self.static.get(shape)
        if request is None and self._compiler is not None:
            self._seen[shape] += 1
            if self._seen[shape] == STATIC_AFTER and len(self._wanted) < STATIC_SHAPES:
                self._wanted.add(shape)
                self._compiler.submit(self._compile_for, shape)
        return self.request if request is None else request

    def _compile_for(self, shape: tuple) -> None:
        """On the compiler thread: the latency model for this input shape alone, into `static` once ready."""
        try:
            fixed = self._model.clone()
            fixed.reshape({0: list(shape)})
            compiled = self._core.compile_model(fixed, "CPU", self._config | {"PERFORMANCE_HINT": "LATENCY"})
            self.static[shape] = compiled.create_infer_request()
        except Exception:  # the dynamic model keeps serving this shape
            log.exception("compiling the OpenVINO model for input shape %s failed", shape)


def _takes_uint8_hwc(model):
    """The model with its (N)CHW float input in [0, 1] taken as (N)HWC uint8, converted in the graph."""
    import openvino as ov
    from openvino.preprocess import PrePostProcessor

    batched = model.inputs[0].get_partial_shape().rank.get_length() == 4
    steps = PrePostProcessor(model)
    steps.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC" if batched else "HWC"))
    steps.input().model().set_layout(ov.Layout("NCHW" if batched else "CHW"))
    steps.input().preprocess().convert_element_type(ov.Type.f32).scale(255.0)
    return steps.build()


def _opener(precision: str):
    def open_session(path: Path, threads: int = 0):
        return OpenVinoSession(path, threads, precision), "cpu"
    return staticmethod(open_session)


def yolo_runtime(path: Path, precision: str, classes, image_size: int, threads: int = 0, letterbox: str = "square"):
    runtime_class = type("OpenVinoYoloRuntime", (OnnxYoloRuntime,), {"name": f"openvino-{precision}", "open_session": _opener(precision),
                                                                     "to_input": staticmethod(np.ascontiguousarray)})
    return runtime_class(path, classes, image_size, threads, letterbox)


def torchvision_runtime(path: Path, precision: str, classes, baked, threads: int = 0):
    runtime_class = type("OpenVinoTorchvisionRuntime", (OnnxTorchvisionRuntime,),
                         {"name": f"openvino-{precision}", "open_session": _opener(precision),
                          "to_input": staticmethod(np.ascontiguousarray)})
    return runtime_class(path, classes, baked, threads)


def open_runtime(model_dir: Path, entry: dict, detector, threads: int = 0, letterbox: str = "square"):
    from autodetect.models.base import PredictOptions
    from autodetect.models.hyperparameters import YOLO

    path = model_dir / entry["path"]
    if detector.family == YOLO:
        return yolo_runtime(path, entry["precision"], detector.classes, detector.input_size["image_size"], threads, letterbox)
    from autodetect.models.torchvision_detector import ONNX_SCORE_THRESHOLD

    baked = PredictOptions.from_hyperparameters(detector.hyperparameters | {"box_score_threshold": ONNX_SCORE_THRESHOLD})
    return torchvision_runtime(path, entry["precision"], detector.classes, baked, threads)


def _datasets(card: dict, training: str | None, validation: str | None):
    from autodetect.data.split import load_datasets

    recorded = card.get("dataset") or {}
    training = training or recorded.get("training")
    if not training or training == "none":
        raise SpecError("--data", "the model card names no training set; pass --data TRAIN.jsonl (and --validation)")
    if not validation and training == recorded.get("training"):
        validation = recorded.get("validation")  # None: split off as the trial did
    return load_datasets(training, validation, seed=card["hyperparameters"].get("random_seed", 0))


def _predict(runtime, records, options) -> list:
    from autodetect.data.images import load_rgb

    return [runtime.predict([runtime.prepare(load_rgb(r.path))], options)[0] for r in records]


def export_openvino(model_dir: Path, precision: str, tolerance: float = DEFAULT_TOLERANCE, threads: int = 0,
                    training: str | None = None, validation: str | None = None) -> dict:
    """Convert, quantize if asked, evaluate and record; returns the card's new entry. Raises when the
    conversion loses more than tolerance of mean_average_precision (the IR is then removed)."""
    import shutil

    import openvino as ov

    from autodetect.evaluation.evaluator import evaluate
    from autodetect.models.base import PredictOptions
    from autodetect.models.registry import MODEL_CARD, load_artifact, read_model_card
    from autodetect.serving.model import TorchRuntime

    if precision not in PRECISIONS:
        raise SpecError("--precision", f"{precision!r} is not one of {', '.join(PRECISIONS)}")
    capabilities = cpu_capabilities()
    if precision not in supported_precisions(capabilities):
        raise AutodetectError(f"this CPU cannot run {precision} (OpenVINO's OPTIMIZATION_CAPABILITIES: "
                              f"{', '.join(sorted(capabilities))}); bf16 needs AMX or AVX-512 BF16")
    card = read_model_card(model_dir)
    detector = load_artifact(model_dir)
    hp = card["hyperparameters"]
    train, val = _datasets(card, training, validation)
    target = model_dir / "openvino" / precision
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    onnx = detector.export_onnx(target / "model.onnx")
    model = ov.convert_model(str(onnx))
    onnx.unlink()
    fp32 = target / "model.xml"
    ov.save_model(model, str(fp32), compress_to_fp16=False)
    entry = {"runtime": "openvino", "precision": precision, "path": str(fp32.relative_to(model_dir))}
    if precision == "int8":
        import nncf

        calibrator = open_runtime(model_dir, entry, detector, threads)
        # the IR takes what the ONNX export takes (the uint8 input is added when a session compiles it)
        images = [chw_float(calibrator.prepare(_load(r.path)).tensor) for r in train.records[:CALIBRATION_IMAGES]]
        if detector.family == YOLO:
            images = [i[None] for i in images]  # YOLO's graph takes a batch, torchvision's one CHW image
        quantized = nncf.quantize(model, nncf.Dataset(images), preset=nncf.QuantizationPreset.MIXED,
                                  subset_size=len(images), ignored_scope=_yolo_head(detector))
        ov.save_model(quantized, str(fp32), compress_to_fp16=False)
    options = PredictOptions.from_hyperparameters(hp)
    started = time.perf_counter()
    converted = _predict(open_runtime(model_dir, entry, detector, threads), val.records, options)
    seconds = time.perf_counter() - started
    reference = _predict(TorchRuntime(detector), val.records, options)
    metric_type, iou = hp.get("validation_metric_type", "voc"), hp.get("validation_iou_threshold", 0.5)
    if metric_type == "none":
        metric_type = "voc"
    before = evaluate(val.records, reference, detector.classes, metric_type, iou)["mean_average_precision"]
    after = evaluate(val.records, converted, detector.classes, metric_type, iou)["mean_average_precision"]
    entry |= {"mean_average_precision_fp32": before, "mean_average_precision": after,
              "validation_images": len(val.records), "ms_per_image": 1000 * seconds / max(1, len(val.records)),
              "cpu": sorted(capabilities)}
    try:
        check_loss(precision, before, after, tolerance)
    except AutodetectError:
        shutil.rmtree(target, ignore_errors=True)
        raise
    card.setdefault(RUNTIMES_KEY, {})[f"openvino-{precision}"] = entry
    path = model_dir / MODEL_CARD
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
    partial.replace(path)
    return entry


def _yolo_head(detector):
    """YOLO's box decoding (DFL, anchor arithmetic, sigmoid) stays in float, as ultralytics' own int8
    export keeps it: quantized, the box coordinates collapse to the quantization grid."""
    import nncf

    if detector.family != YOLO:
        return None
    head = f"model.{len(detector.model.model) - 1}"
    return nncf.IgnoredScope(patterns=[f".*{head}/.*/Add", f".*{head}/.*/Sub*", f".*{head}/.*/Mul*",
                                       f".*{head}/.*/Div*", f".*{head}\\.dfl.*"], types=["Sigmoid"], validate=False)


def _load(path):
    from autodetect.data.images import load_rgb

    return load_rgb(path)
