"""A synthetic data set a detector can learn in a few CPU minutes: each class is one solid shape
in one colour (a red square, a green circle, ...), 20-45% of the image wide, on a plain, mildly
noisy background. Seeded: the same arguments give the same pixels and boxes."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from autodetect.data.convert import DECIMALS
from autodetect.data.dataset import Box, ImageRecord, write_jsonl
from autodetect.errors import SpecError

SHAPES = ("square", "circle", "triangle", "cross", "ring", "diamond")
COLOURS = ((220, 40, 40), (40, 180, 60), (40, 80, 220), (230, 200, 30), (200, 50, 200), (30, 200, 210))
ANNOTATIONS = "annotations.jsonl"


def synthesize(out_dir: str | Path, classes: int = 3, images: int = 40, size: tuple[int, int] | int = (128, 128),
               seed: int = 0, boxes_per_image: tuple[int, int] = (1, 3), image_format: str = "png") -> Path:
    """Write images/ and annotations.jsonl under out_dir; return the JSONL's path."""
    width, height = (size, size) if isinstance(size, int) else size
    low, high = boxes_per_image
    if not 1 <= classes <= len(SHAPES):
        raise SpecError("classes", f"must be between 1 and {len(SHAPES)}, got {classes}")
    if images < 1:
        raise SpecError("images", f"must be at least 1, got {images}")
    if min(width, height) < 32:
        raise SpecError("size", f"must be at least 32 pixels, got {width}x{height}")
    if not 0 <= low <= high:
        raise SpecError("boxes_per_image", f"must be (low, high) with 0 <= low <= high, got {boxes_per_image}")
    if image_format not in ("png", "jpg"):
        raise SpecError("image_format", f"must be png or jpg, got {image_format!r}")
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    records = []
    for index in range(images):
        background = [rng.randint(110, 160)] * 3
        pixels = np.clip(np.full((height, width, 3), background, np.int16) + noise.integers(-12, 13, (height, width, 3)), 0, 255)
        image = Image.fromarray(pixels.astype(np.uint8))
        draw = ImageDraw.Draw(image)
        boxes = []
        for x0, y0, x1, y1 in _place(rng, rng.randint(low, high), width, height):
            kind = rng.randrange(classes)
            _draw(draw, SHAPES[kind], COLOURS[kind], x0, y0, x1, y1)
            boxes.append(Box(SHAPES[kind], round(x0 / width, DECIMALS), round(y0 / height, DECIMALS),
                             round(x1 / width, DECIMALS), round(y1 / height, DECIMALS)))
        name = f"images/{index:04d}.{image_format}"
        image.save(out_dir / name, **({"quality": 95} if image_format == "jpg" else {}))
        records.append(ImageRecord(name, out_dir / name, width, height, image_format, tuple(boxes)))
    return write_jsonl(records, out_dir / ANNOTATIONS)


def _place(rng: random.Random, count: int, width: int, height: int) -> list[tuple[int, int, int, int]]:
    """Up to count boxes (x0, y0, x1, y1; x1, y1 exclusive), each 20-45% of the image, none overlapping."""
    placed: list[tuple[int, int, int, int]] = []
    for _ in range(count * 30):
        if len(placed) == count:
            break
        w = round(width * rng.uniform(0.20, 0.45))
        h = max(4, min(round(w * rng.uniform(0.8, 1.25) * height / width), round(height * 0.45)))
        x0, y0 = rng.randint(0, width - w), rng.randint(0, height - h)
        box = (x0, y0, x0 + w, y0 + h)
        if all(_apart(box, other) for other in placed):
            placed.append(box)
    return placed


def _apart(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    """No shared pixel, so every object is whole and its box tight."""
    return a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def _draw(draw: ImageDraw.ImageDraw, shape: str, colour: tuple[int, int, int], x0: int, y0: int, x1: int, y1: int) -> None:
    """The shape filling the box exactly (PIL's coordinates are inclusive, hence the - 1)."""
    r, b = x1 - 1, y1 - 1
    cx, cy, w, h = (x0 + r) / 2, (y0 + b) / 2, x1 - x0, y1 - y0
    if shape == "square":
        draw.rectangle((x0, y0, r, b), fill=colour)
    elif shape == "circle":
        draw.ellipse((x0, y0, r, b), fill=colour)
    elif shape == "triangle":
        draw.polygon([(x0, b), (r, b), (cx, y0)], fill=colour)
    elif shape == "cross":
        draw.rectangle((x0, cy - h / 6, r, cy + h / 6), fill=colour)
        draw.rectangle((cx - w / 6, y0, cx + w / 6, b), fill=colour)
    elif shape == "ring":
        draw.ellipse((x0, y0, r, b), outline=colour, width=max(2, round(min(w, h) / 5)))
    elif shape == "diamond":
        draw.polygon([(cx, y0), (r, cy), (cx, b), (x0, cy)], fill=colour)
