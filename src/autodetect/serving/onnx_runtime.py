"""Exported models run with ONNX Runtime: OnnxYoloRuntime (ultralytics) and OnnxTorchvisionRuntime.
Both open their session with `open_session` (threads, spinning, providers) and take images
prepared as `Prepared` on the server's decode threads: CHW float32 in [0, 1] here (`chw_float`),
HWC uint8 for OpenVINO, whose graph converts it itself.

YOLO: pre- and post-processing are ultralytics' own (LetterBox, NMS, scale_boxes). The letterbox
runs per image in `prepare`; `predict` stacks the images of a batch that share a shape and runs
them at once.

letterbox="square" pads every image to image_size x image_size, exactly as the PyTorch path
(YoloDetector.predict) does, so the boxes match it. letterbox="rect" (the server's default) pads
only up to the next multiple of the stride, as ultralytics' validation does: a 4:3 image costs 3/4
of the compute, a 16:9 one about 0.56, for boxes that differ from the square letterbox's only by
the network's sensitivity to the grey border.

torchvision: the graph (TorchvisionDetector.export_onnx) takes one image of any size and does its
own resizing, score filter, NMS and top-k, with thresholds baked in at export: scores above 0.01,
NMS at the trial's nms_iou_threshold, at most box_detections_per_image. A request's higher score
threshold and lower max_detections are applied to its output (the same boxes as the torch path
gives), a lower nms_iou_threshold by a second NMS on top. What the graph has already removed cannot
come back: a score threshold below 0.01, an nms_iou_threshold above the baked one and more
detections than box_detections_per_image act as the baked values (use --runtime torch for those)."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autodetect.models.base import Detection, PredictOptions
from autodetect.serving.config import LETTERBOXES

STRIDE = 32  # the largest stride of every ultralytics YOLO detector


def chw_float(model_input: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 -> 3 x H x W float32 in [0, 1], what the exported graphs take."""
    tensor = np.ascontiguousarray(model_input.transpose(2, 0, 1), dtype=np.float32)
    tensor *= 1 / 255
    return tensor


@dataclass(frozen=True)
class Prepared:
    tensor: np.ndarray  # one RGB image as the session takes it (letterboxed for YOLO)
    height: int  # of the original image
    width: int
    input_height: int  # of the image the model sees
    input_width: int

    @classmethod
    def of(cls, image: np.ndarray, model_input: np.ndarray, to_input) -> "Prepared":
        """model_input: H x W x 3 uint8, the image as the model takes it; to_input: its conversion for the session."""
        return cls(to_input(model_input), image.shape[0], image.shape[1], model_input.shape[0], model_input.shape[1])


def open_session(path: Path, threads: int = 0):
    """An ONNX Runtime session on CUDA where available, else the CPU; threads: intra-op threads
    (0: ONNX Runtime's default). Returns the session and its device ("cuda" or "cpu")."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    # idle threads sleep rather than spin: spinning burns a container's CPU quota and, on shared
    # or oversubscribed CPUs, steals the time the decode threads and other requests need
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    wanted = ("CUDAExecutionProvider", "CPUExecutionProvider")
    session = ort.InferenceSession(str(path), options, providers=[p for p in wanted if p in ort.get_available_providers()])
    return session, "cuda" if "CUDAExecutionProvider" in session.get_providers() else "cpu"


class OnnxYoloRuntime:
    """Batches of letterboxed images a session run (one a run where the export has a static batch of 1)."""

    name = "onnx"
    open_session = staticmethod(open_session)  # the OpenVINO runtimes open theirs (openvino_runtime.py)
    to_input = staticmethod(chw_float)  # and take HWC uint8

    def __init__(self, path: Path, classes: list[str], image_size: int, threads: int = 0, letterbox: str = "square"):
        from ultralytics.data.augment import LetterBox

        if letterbox not in LETTERBOXES:
            raise ValueError(f"letterbox must be one of {', '.join(LETTERBOXES)}, got {letterbox!r}")
        self.session, self.device = self.open_session(path, threads)
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        batch, _, height, width = model_input.shape
        self.fixed_batch = batch if isinstance(batch, int) else None  # None: any batch size
        if self.fixed_batch not in (None, 1):
            raise ValueError(f"{path}: a static batch size of {batch} is not supported (export with a dynamic batch)")
        static = isinstance(height, int) or isinstance(width, int)
        if static and height != width:
            raise ValueError(f"{path}: non-square input {height}x{width} is not supported")
        # an exported static size wins (and needs the square letterbox); else image_size up to the
        # stride, as YoloDetector.predict does
        self.size = height if static else math.ceil(image_size / STRIDE) * STRIDE
        self.letterbox = "square" if static else letterbox
        self.classes = list(classes)
        self._letterbox = LetterBox((self.size, self.size), auto=self.letterbox == "rect", stride=STRIDE)

    def prepare(self, image: np.ndarray) -> Prepared:
        return Prepared.of(image, self._letterbox(image=image), self.to_input)  # grey padding: RGB or BGR alike

    def predict(self, batch: list[Prepared], options: PredictOptions) -> list[list[Detection]]:
        results: list[list[Detection]] = [[] for _ in batch]
        same_shape: dict[tuple, list[int]] = defaultdict(list)
        for i, prepared in enumerate(batch):
            same_shape[prepared.tensor.shape].append(i)
        for indices in same_shape.values():
            chunks = [indices] if self.fixed_batch is None else [[i] for i in indices]
            for chunk in chunks:
                found = self._run([batch[i] for i in chunk], options)
                for i, detections in zip(chunk, found):
                    results[i] = detections
        return results

    def _run(self, batch: list[Prepared], options: PredictOptions) -> list[list[Detection]]:
        import torch
        from ultralytics.utils import nms, ops

        inputs = np.stack([p.tensor for p in batch])
        raw = self.session.run(None, {self.input_name: inputs})[0]
        kept = nms.non_max_suppression(torch.from_numpy(raw), options.score_threshold, options.iou_threshold,
                                       max_det=options.max_detections)
        results = []
        for prepared, found in zip(batch, kept):
            boxes = ops.scale_boxes((prepared.input_height, prepared.input_width), found[:, :4].clone(),
                                    (prepared.height, prepared.width))
            scale = np.array([prepared.width, prepared.height, prepared.width, prepared.height], dtype=np.float64)
            normalised = boxes.numpy().astype(np.float64) / scale
            results.append([
                Detection(self.classes[int(cls)], float(score), *map(float, box))
                for box, score, cls in zip(normalised, found[:, 4].tolist(), found[:, 5].tolist())
            ])
        return results


class OnnxTorchvisionRuntime:
    """One image a session run (the graph takes one); `baked` are the thresholds of the export."""

    name = "onnx"
    open_session = staticmethod(open_session)
    to_input = staticmethod(chw_float)

    def __init__(self, path: Path, classes: list[str], baked: PredictOptions, threads: int = 0):
        self.session, self.device = self.open_session(path, threads)
        self.input_name = self.session.get_inputs()[0].name
        self.classes, self.baked = list(classes), baked

    def prepare(self, image: np.ndarray) -> Prepared:
        return Prepared.of(image, image, self.to_input)

    def predict(self, batch: list[Prepared], options: PredictOptions) -> list[list[Detection]]:
        return [self._run(prepared, options) for prepared in batch]

    def _run(self, prepared: Prepared, options: PredictOptions) -> list[Detection]:
        boxes, labels, scores = self.session.run(None, {self.input_name: prepared.tensor})
        keep = scores > options.score_threshold  # as torchvision filters; the output is sorted by score
        boxes, labels, scores = boxes[keep], labels[keep], scores[keep]
        if options.iou_threshold < self.baked.iou_threshold:
            import torch
            from torchvision.ops import batched_nms

            kept = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels),
                               options.iou_threshold).numpy()  # sorted by score again
            boxes, labels, scores = boxes[kept], labels[kept], scores[kept]
        count = options.max_detections
        scale = np.array([prepared.width, prepared.height] * 2, dtype=np.float64)
        normalised = np.clip(boxes[:count].astype(np.float64) / scale, 0.0, 1.0)
        return [Detection(self.classes[int(label) - 1], float(score), *map(float, box))
                for box, label, score in zip(normalised, labels[:count], scores[:count])]
