"""The data set as Azure AutoML writes it: JSONL, one image a line, normalised boxes.

Reading validates every line and reports each bad one with its file, line number and reason;
nothing is silently dropped."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from autodetect.errors import DataError, ImageError


@dataclass(frozen=True)
class Box:
    label: str
    top_x: float
    top_y: float
    bottom_x: float
    bottom_y: float
    is_crowd: bool = False

    def to_json(self) -> dict:
        return {"label": self.label, "topX": self.top_x, "topY": self.top_y,
                "bottomX": self.bottom_x, "bottomY": self.bottom_y, "isCrowd": int(self.is_crowd)}


@dataclass(frozen=True)
class ImageRecord:
    image_url: str  # as written in the JSONL (relative to its folder unless absolute)
    path: Path  # absolute local path
    width: int | None
    height: int | None
    format: str | None
    boxes: tuple[Box, ...]

    def to_json(self) -> dict:
        details = {k: v for k, v in (("format", self.format), ("width", self.width), ("height", self.height)) if v is not None}
        return {"image_url": self.image_url, "image_details": details, "label": [b.to_json() for b in self.boxes]}


@dataclass
class Dataset:
    records: list[ImageRecord]
    source: str = ""  # the file it was read from, for messages
    classes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.classes:
            self.classes = sorted({b.label for r in self.records for b in r.boxes})

    def __len__(self) -> int:
        return len(self.records)

    def fingerprint(self) -> str:
        """A content hash of the annotations (not the pixels): same lines, same fingerprint."""
        digest = hashlib.sha256()
        for record in self.records:
            digest.update(json.dumps(record.to_json(), sort_keys=True).encode())
        return "sha256:" + digest.hexdigest()[:16]


def _number(value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} must be a number, got {value!r}")
    return float(value)


def parse_box(raw: object, index: int) -> Box:
    if not isinstance(raw, dict):
        raise ValueError(f"label[{index}] must be an object")
    missing = [k for k in ("label", "topX", "topY", "bottomX", "bottomY") if k not in raw]
    if missing:
        raise ValueError(f"label[{index}] is missing {', '.join(missing)}")
    coords = [_number(raw[k], f"label[{index}].{k}") for k in ("topX", "topY", "bottomX", "bottomY")]
    if any(not 0.0 <= c <= 1.0 for c in coords):
        raise ValueError(f"label[{index}] coordinates {coords} are outside [0, 1]")
    if coords[0] >= coords[2] or coords[1] >= coords[3]:
        raise ValueError(f"label[{index}] is inverted or empty (topX < bottomX and topY < bottomY required)")
    label = raw["label"]
    if not isinstance(label, str) or not label:
        raise ValueError(f"label[{index}].label must be a non-empty string")
    return Box(label, *coords, is_crowd=bool(raw.get("isCrowd", 0)))


def resolve_image_path(image_url: str, folder: Path, root: Path | None = None, prefix: str | None = None) -> Path:
    """An image_url relative to the JSONL's folder unless absolute ("../", absolute and file:// are fine);
    a URL starting with prefix (Azure's azureml://.../paths/<folder>/) is taken relative to the root.
    The path must stay inside the data set root (default: the JSONL's folder)."""
    root = Path(os.path.abspath(root or folder))
    if prefix and image_url.startswith(prefix):
        raw = root / image_url[len(prefix):].lstrip("/")
    elif "://" in image_url and not image_url.startswith("file://"):
        hint = " (set spec.dataset.imageUrlPrefix, or --image-url-prefix, to map it onto the data set root)" \
            if image_url.startswith("azureml://") else ""
        raise ValueError(f"image_url {image_url!r}: only local paths are read here{hint}")
    else:
        raw = Path(image_url.removeprefix("file://"))
    # Lexical, not resolve(): a symlinked images folder the owner made is fine; "../" out of the root is not.
    path = Path(os.path.abspath(raw if Path(raw).is_absolute() else folder / raw))
    if not path.is_relative_to(root):
        raise ValueError(f"image_url {image_url!r} is outside the data set root {root}; widen the root with "
                         "spec.dataset.root (or --root) to a folder that holds the images")
    return path


def parse_line(text: str, folder: Path, check_images: bool = True, decode: bool = False,
               root: Path | None = None, prefix: str | None = None) -> ImageRecord:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"bad JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(obj, dict):
        raise ValueError("a line must be a JSON object")
    image_url = obj.get("image_url")
    if not isinstance(image_url, str) or not image_url:
        raise ValueError("image_url is missing or not a string")
    labels = obj.get("label", [])
    if not isinstance(labels, list):
        raise ValueError("label must be a list of boxes")
    boxes = tuple(parse_box(raw, i) for i, raw in enumerate(labels))
    details = obj.get("image_details") or {}
    if not isinstance(details, dict):
        raise ValueError("image_details must be an object")
    path = resolve_image_path(image_url, folder, root, prefix)
    width, height, fmt = details.get("width"), details.get("height"), details.get("format")
    if check_images or decode:
        from autodetect.data.images import load_rgb, read_size

        width, height, fmt = read_size(path)
        if decode:  # every pixel, so truncated or corrupt data is found now rather than mid-training
            load_rgb(path)
    return ImageRecord(image_url, path, _int_or_none(width), _int_or_none(height), fmt, boxes)


def _int_or_none(value: object) -> int | None:
    if isinstance(value, str):
        value = value.removesuffix("px")
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def jsonl_files(path: Path) -> list[Path]:
    """The JSONL files a data set location names: the file itself, or an Azure MLTable (its folder or the
    MLTable file), whose `paths` (file, folder, pattern) are followed."""
    mltable = path / "MLTable" if path.is_dir() else path
    if path.is_dir() and not mltable.is_file():
        raise DataError("a folder given as a data set must hold an MLTable file", file=str(path))
    if not mltable.is_file():
        raise DataError("no such file", file=str(path))
    if mltable.name != "MLTable":
        return [path]
    import yaml

    try:
        spec = yaml.safe_load(mltable.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DataError(f"bad YAML: {exc}", file=str(mltable)) from None
    entries = spec.get("paths") if isinstance(spec, dict) else None
    if not isinstance(entries, list) or not entries:
        raise DataError("an MLTable needs a list `paths` of {file: ...}, {folder: ...} or {pattern: ...}", file=str(mltable))
    files: list[Path] = []
    for i, entry in enumerate(entries):
        kind = next((k for k in ("file", "folder", "pattern") if isinstance(entry, dict) and k in entry), None)
        if kind is None:
            raise DataError(f"paths[{i}] must be one of file, folder or pattern", file=str(mltable))
        target = str(entry[kind])
        if "://" in target and not target.startswith("file://"):
            raise DataError(f"paths[{i}].{kind} {target!r}: only local paths are read here", file=str(mltable))
        target = target.removeprefix("file://")
        if kind == "file":
            found = [mltable.parent / target]
        elif kind == "folder":
            found = sorted((mltable.parent / target).rglob("*.jsonl"))
        else:
            found = sorted(mltable.parent.glob(target))
        missing = [f for f in found if not f.is_file()]
        if missing or not found:
            raise DataError(f"paths[{i}].{kind} {target!r}: no such file", file=str(mltable))
        files.extend(found)
    return files


def read_jsonl(path: str | Path, check_images: bool = True, decode: bool = False,
               root: str | Path | None = None, prefix: str | None = None) -> Dataset:
    """Read and validate a JSONL data set (or an MLTable's); every bad line is reported, not only the first.

    check_images reads each image's header (exists, is an image, size within the pixel limit);
    decode also decodes every pixel (finds truncated files; slower). Images must lie under root
    (default: each JSONL's folder); image_urls starting with prefix are taken relative to root."""
    path = Path(path)
    records, errors = [], []
    for file in jsonl_files(path):
        folder = file.parent
        with file.open(encoding="utf-8") as fh:
            for number, text in enumerate(fh, start=1):
                if not text.strip():
                    continue
                try:
                    records.append(parse_line(text, folder, check_images, decode,
                                              Path(root) if root else None, prefix))
                except (ValueError, DataError, ImageError) as exc:
                    errors.append(DataError(getattr(exc, "reason", str(exc)), file=str(file), line=number))
    if errors:
        if len(errors) == 1:
            raise errors[0]
        listed = "\n".join(f"  {e}" for e in errors[:20]) + (f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else "")
        raise DataError(f"{len(errors)} bad lines:\n{listed}", file=str(path))
    if not records:
        raise DataError("the data set has no images", file=str(path))
    return Dataset(records, source=str(path))


def write_jsonl(records: Iterable[ImageRecord], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record.to_json()) + "\n")
    return path
