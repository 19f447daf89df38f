"""Boxes drawn on an image, to a PNG: the ground truth of a JSONL line, or the detections of a
scoring response. One drawing helper serves both; each class keeps its colour everywhere."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from autodetect.data.dataset import ImageRecord
from autodetect.data.images import load_rgb
from autodetect.errors import DataError

PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255), (170, 110, 40),
           (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128))


class Drawn(NamedTuple):
    """One box to draw, in normalised coordinates."""

    label: str
    top_x: float
    top_y: float
    bottom_x: float
    bottom_y: float
    score: float | None = None
    crowd: bool = False


def colour_of(label: str) -> tuple[int, int, int]:
    """A colour per class name, the same in every picture and every run."""
    return PALETTE[zlib.crc32(label.encode()) % len(PALETTE)]


def draw_boxes(image: np.ndarray | Image.Image, boxes: list[Drawn]) -> Image.Image:
    """A copy of image with each box outlined in its class colour and captioned `label score`."""
    canvas = (image if isinstance(image, Image.Image) else Image.fromarray(image)).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    width, height = canvas.size
    line = max(2, round(min(width, height) / 200))
    font = ImageFont.load_default(size=max(10, min(width, height) // 28))
    for box in boxes:
        colour = colour_of(box.label)
        x0, x1 = sorted(min(max(v, 0.0), 1.0) * (width - 1) for v in (box.top_x, box.bottom_x))
        y0, y1 = sorted(min(max(v, 0.0), 1.0) * (height - 1) for v in (box.top_y, box.bottom_y))
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=line)
        caption = box.label + (f" {box.score:.2f}" if box.score is not None else "") + (" (crowd)" if box.crowd else "")
        left, top, right, bottom = draw.textbbox((0, 0), caption, font=font)
        text_w, text_h = right - left + 4, bottom - top + 4
        ty = y0 - text_h if y0 >= text_h else y0 + line
        tx = min(x0, max(width - text_w, 0))
        draw.rectangle((tx, ty, tx + text_w, ty + text_h), fill=colour)
        ink = (0, 0, 0) if sum(colour) > 400 else (255, 255, 255)
        draw.text((tx + 2 - left, ty + 2 - top), caption, fill=ink, font=font)
    return canvas


def _save(image: Image.Image, out_png: str | Path) -> Path:
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out, format="PNG")
    return out


def draw_ground_truth(record: ImageRecord, out_png: str | Path) -> Path:
    """The labelled boxes of one JSONL line, drawn on its image."""
    boxes = [Drawn(b.label, b.top_x, b.top_y, b.bottom_x, b.bottom_y, crowd=b.is_crowd) for b in record.boxes]
    return _save(draw_boxes(load_rgb(record.path), boxes), out_png)


def parse_detections(response: dict | list, source: str = "the detections") -> list[Drawn]:
    """The boxes of a scoring response: {"filename", "boxes": [...]} or a one-image list [{"boxes": [...]}]."""
    if isinstance(response, list):
        if len(response) != 1:
            raise DataError(f"a response for {len(response)} images; give the response for this one image", file=source)
        response = response[0]
    if not isinstance(response, dict) or not isinstance(response.get("boxes"), list):
        raise DataError('expected a scoring response {"boxes": [{"box": {...}, "label": ..., "score": ...}]}', file=source)
    drawn = []
    for i, item in enumerate(response["boxes"]):
        box = item.get("box") if isinstance(item, dict) else None
        if not isinstance(box, dict) or not isinstance(item.get("label"), str):
            raise DataError(f"boxes[{i}] needs a box {{topX, topY, bottomX, bottomY}} and a label", file=source)
        try:
            coords = [float(box[k]) for k in ("topX", "topY", "bottomX", "bottomY")]
            score = float(item["score"]) if item.get("score") is not None else None
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"boxes[{i}]: missing or non-numeric {exc}", file=source) from None
        drawn.append(Drawn(item["label"], *coords, score=score))
    return drawn


def draw_detections(image_path: str | Path | bytes, detections: dict | list, out_png: str | Path,
                    min_score: float = 0.0, *, source: str = "the detections") -> Path:
    """The boxes of a scoring response (scores at least min_score) drawn on the image it answered."""
    boxes = [b for b in parse_detections(detections, source) if b.score is None or b.score >= min_score]
    image = load_rgb(image_path if isinstance(image_path, bytes) else Path(image_path))
    return _save(draw_boxes(image, boxes), out_png)
