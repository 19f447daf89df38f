"""A YOLO (ultralytics) model exported to ONNX, run with ONNX Runtime.

Pre- and post-processing are ultralytics' own (LetterBox, NMS, scale_boxes). The letterbox runs
per image in `prepare` (on the server's decode threads); `predict` stacks the images of a batch
that share a shape and runs them at once.

letterbox="square" pads every image to image_size x image_size, exactly as the PyTorch path
(YoloDetector.predict) does, so the boxes match it. letterbox="rect" (the server's default) pads
only up to the next multiple of the stride, as ultralytics' validation does: a 4:3 image costs 3/4
of the compute, a 16:9 one about 0.56, for boxes that differ from the square letterbox's only by
the network's sensitivity to the grey border."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autodetect.models.base import Detection, PredictOptions
from autodetect.serving.config import LETTERBOXES

STRIDE = 32  # the largest stride of every ultralytics YOLO detector


@dataclass(frozen=True)
class Prepared:
    tensor: np.ndarray  # 3 x H x W float32 in [0, 1], RGB, letterboxed
    height: int  # of the original image
    width: int


class OnnxYoloRuntime:
    name = "onnx"

    def __init__(self, path: Path, classes: list[str], image_size: int, threads: int = 0, letterbox: str = "square"):
        import onnxruntime as ort
        from ultralytics.data.augment import LetterBox

        if letterbox not in LETTERBOXES:
            raise ValueError(f"letterbox must be one of {', '.join(LETTERBOXES)}, got {letterbox!r}")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        # idle threads sleep rather than spin: spinning burns a container's CPU quota and, on shared
        # or oversubscribed CPUs, steals the time the decode threads and other requests need
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        wanted = ("CUDAExecutionProvider", "CPUExecutionProvider")
        providers = [p for p in wanted if p in ort.get_available_providers()]
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.device = "cuda" if "CUDAExecutionProvider" in self.session.get_providers() else "cpu"
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
        boxed = self._letterbox(image=image)  # grey padding, so RGB or BGR order does not matter here
        tensor = np.ascontiguousarray(boxed.transpose(2, 0, 1), dtype=np.float32)
        tensor *= 1 / 255
        return Prepared(tensor, image.shape[0], image.shape[1])

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
            boxes = ops.scale_boxes(inputs.shape[2:], found[:, :4].clone(), (prepared.height, prepared.width))
            scale = np.array([prepared.width, prepared.height, prepared.width, prepared.height], dtype=np.float64)
            normalised = boxes.numpy().astype(np.float64) / scale
            results.append([
                Detection(self.classes[int(cls)], float(score), *map(float, box))
                for box, score, cls in zip(normalised, found[:, 4].tolist(), found[:, 5].tolist())
            ])
        return results
