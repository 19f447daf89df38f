"""Converters between Azure AutoML JSONL and COCO JSON, Pascal VOC XML and YOLO txt.

Readers return records whose image_url is relative to the folder of the JSONL they will be
written to; writers take a Dataset read from JSONL. Every reader checks that each image exists
and reads its size from the header. Coordinates are normalised to 7 decimals, so
A -> JSONL -> A -> JSONL gives the same JSONL. Boxes that reach past the image are clipped to it
(and counted in a warning); a box with nothing left inside the image is an error."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from autodetect.data.dataset import Box, Dataset, ImageRecord, read_jsonl, write_jsonl
from autodetect.data.images import read_size
from autodetect.errors import DataError, ImageError

log = logging.getLogger(__name__)

FORMATS = ("coco", "voc", "yolo")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
YOLO_NAME_FILES = ("data.yaml", "dataset.yaml", "classes.txt", "obj.names", "names.txt")
DECIMALS = 7  # exact for the usual image sizes (51/128 = 0.3984375); a pixel value round-trips


@dataclass
class _Problems:
    """Collects every problem of a conversion, so the user sees them all at once."""

    source: str
    errors: list[DataError] = field(default_factory=list)
    clipped: int = 0

    def add(self, reason: str, file: Path | str | None = None, line: int | None = None) -> None:
        self.errors.append(DataError(reason, file=str(file or self.source), line=line))

    def raise_if_any(self) -> None:
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            listed = "\n".join(f"  {e}" for e in self.errors[:20])
            more = f"\n  ... and {len(self.errors) - 20} more" if len(self.errors) > 20 else ""
            raise DataError(f"{len(self.errors)} problems:\n{listed}{more}", file=self.source)
        if self.clipped:
            log.warning("%s: %d boxes reached past their image and were clipped to it", self.source, self.clipped)


def normalised_box(label: str, x0: float, y0: float, x1: float, y1: float, width: int, height: int,
                   crowd: bool, problems: _Problems) -> Box:
    """A Box from pixel corners, clipped to the image; ValueError if nothing is left inside it."""
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise ValueError(f"box {[x0, y0, x1, y1]} of {label!r} has a non-finite coordinate")
    coords = [x0 / width, y0 / height, x1 / width, y1 / height]
    clipped = [round(min(max(c, 0.0), 1.0), DECIMALS) for c in coords]
    if clipped[0] >= clipped[2] or clipped[1] >= clipped[3]:
        raise ValueError(f"box {[x0, y0, x1, y1]} of {label!r} is empty, inverted or outside the {width}x{height} image")
    if any(abs(a - b) > 10 ** -DECIMALS for a, b in zip(coords, clipped)):
        problems.clipped += 1
    return Box(label, *clipped, is_crowd=crowd)


def _pixels(value: float) -> float | int:
    """A pixel coordinate as written to COCO/VOC: exact to the JSONL's decimals, an int when whole."""
    value = round(value, DECIMALS)
    return int(value) if value == int(value) else value


def _absolute(path: Path | str) -> Path:
    """Absolute and normalised, without following symlinks (as read_jsonl places images)."""
    return Path(os.path.abspath(path))


def _relative_url(image: Path, out_dir: Path) -> str:
    try:
        return _absolute(image).relative_to(_absolute(out_dir)).as_posix()
    except ValueError:
        raise DataError(f"image {image} is not inside the output folder {out_dir}; write the JSONL to a folder "
                        "that holds the images (image_url may not escape the data set root)") from None


def _image_size(image: Path, declared: tuple[int, int] | None, where: str, problems: _Problems) -> tuple[int, int] | None:
    """The image's size from its header, after checking it exists and matches the annotation's size."""
    try:
        width, height, _ = read_size(image)
    except ImageError as exc:
        problems.add(str(exc), where)
        return None
    if declared is not None and tuple(declared) != (width, height):
        problems.add(f"the annotation says {declared[0]}x{declared[1]} but {image} is {width}x{height}", where)
        return None
    return width, height


def _record(image: Path, out_dir: Path, boxes: list[Box], size: tuple[int, int]) -> ImageRecord:
    fmt = image.suffix.lower().lstrip(".")
    return ImageRecord(_relative_url(image, out_dir), _absolute(image), size[0], size[1], fmt, tuple(boxes))


def _dataset(records: list[ImageRecord], source: str, problems: _Problems) -> Dataset:
    problems.raise_if_any()
    if not records:
        raise DataError("no images found", file=source)
    return Dataset(records, source=source)


def _size_of(record: ImageRecord) -> tuple[int, int]:
    if record.width and record.height:
        return record.width, record.height
    width, height, _ = read_size(record.path)
    return width, height


# ---------------------------------------------------------------- COCO


def read_coco(source: Path, out_jsonl: Path, images: Path | None = None) -> Dataset:
    """COCO JSON (bbox [x, y, w, h] in pixels, iscrowd, categories); images under `images`
    (default: the JSON's folder) by their file_name."""
    source, images = Path(source), Path(images) if images else Path(source).parent
    try:
        coco = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError("no such file", file=str(source)) from None
    except json.JSONDecodeError as exc:
        raise DataError(f"bad JSON: {exc.msg} at column {exc.colno}", file=str(source), line=exc.lineno) from None
    if not isinstance(coco, dict) or not all(isinstance(coco.get(k), list) for k in ("images", "annotations", "categories")):
        raise DataError("a COCO file needs the lists images, annotations and categories", file=str(source))
    problems = _Problems(str(source))

    names = {}
    for i, cat in enumerate(coco["categories"]):
        if not isinstance(cat, dict) or not isinstance(cat.get("name"), str) or "id" not in cat:
            problems.add(f"categories[{i}] needs an id and a name")
        else:
            names[cat["id"]] = cat["name"]
    entries, sizes = {}, {}
    for i, img in enumerate(coco["images"]):
        if not isinstance(img, dict) or "id" not in img or not isinstance(img.get("file_name"), str):
            problems.add(f"images[{i}] needs an id and a file_name")
            continue
        declared = (img.get("width"), img.get("height"))
        if declared == (None, None):
            declared = None
        elif not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in declared):
            problems.add(f"images[{i}] width and height must be positive integers, got {declared}")
            continue
        size = _image_size(images / img["file_name"], declared, f"{source} images[{i}]", problems)
        if size:
            entries[img["id"]], sizes[img["id"]] = img, size
    boxes: dict[object, list[Box]] = {key: [] for key in entries}
    listed = {img.get("id") for img in coco["images"] if isinstance(img, dict) and isinstance(img.get("id"), (int, str))}
    for i, ann in enumerate(coco["annotations"]):
        where = f"annotations[{i}]" + (f" (id {ann['id']})" if isinstance(ann, dict) and "id" in ann else "")
        try:
            if not isinstance(ann, dict):
                raise ValueError("must be an object")
            key = ann.get("image_id")
            if key not in entries:
                if key in listed:
                    continue  # its image is already reported
                raise ValueError(f"image_id {key!r} is not in images")
            if ann.get("category_id") not in names:
                raise ValueError(f"category_id {ann.get('category_id')!r} is not in categories")
            bbox = ann.get("bbox")
            if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
                raise ValueError(f"bbox must be [x, y, width, height] in pixels, got {bbox!r}")
            x, y, w, h = bbox
            boxes[key].append(normalised_box(names[ann["category_id"]], x, y, x + w, y + h, *sizes[key],
                                             bool(ann.get("iscrowd", 0)), problems))
        except (ValueError, TypeError) as exc:
            problems.add(f"{where}: {exc}")
    records = [_record(images / img["file_name"], out_jsonl.parent, boxes[key], sizes[key]) for key, img in entries.items()]
    return _dataset(records, str(source), problems)


def write_coco(dataset: Dataset, out: Path, images_root: Path | None = None) -> Path:
    """COCO JSON whose file_name is relative to images_root (default: out's folder)."""
    out = Path(out)
    images_root = _absolute(images_root or out.parent)
    categories = [{"id": i, "name": name, "supercategory": "none"} for i, name in enumerate(dataset.classes, start=1)]
    ids = {c["name"]: c["id"] for c in categories}
    coco: dict = {"images": [], "annotations": [], "categories": categories}
    for image_id, record in enumerate(dataset.records, start=1):
        width, height = _size_of(record)
        coco["images"].append({"id": image_id, "file_name": Path(os.path.relpath(record.path, images_root)).as_posix(),
                               "width": width, "height": height})
        for box in record.boxes:
            x, y = _pixels(box.top_x * width), _pixels(box.top_y * height)
            w, h = _pixels((box.bottom_x - box.top_x) * width), _pixels((box.bottom_y - box.top_y) * height)
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": image_id,
                                        "category_id": ids[box.label], "bbox": [x, y, w, h], "area": _pixels(w * h),
                                        "iscrowd": int(box.is_crowd)})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(coco, indent=1), encoding="utf-8")
    return out


# ---------------------------------------------------------------- Pascal VOC


def read_voc(source: Path, out_jsonl: Path, images: Path | None = None) -> Dataset:
    """A folder of VOC .xml files (searched recursively). Each names its image by <filename>,
    looked up beside the .xml, or under `images` in the same relative folder.
    `difficult` boxes are kept as ordinary boxes; VOC has no crowd flag."""
    source = Path(source)
    if not source.is_dir():
        raise DataError("a VOC source is a folder of .xml files", file=str(source))
    images = Path(images) if images else source
    problems, records = _Problems(str(source)), []
    for xml_path in sorted(source.rglob("*.xml")):
        image_dir = images / xml_path.parent.relative_to(source)
        try:
            record = _voc_record(xml_path, image_dir, out_jsonl.parent, problems)
        except ValueError as exc:
            problems.add(str(exc), xml_path)
            continue
        except ET.ParseError as exc:
            problems.add(f"bad XML: {exc}", xml_path, exc.position[0])
            continue
        if record:
            records.append(record)
    records.sort(key=lambda r: r.image_url)
    return _dataset(records, str(source), problems)


def _voc_record(xml_path: Path, image_dir: Path, out_dir: Path, problems: _Problems) -> ImageRecord | None:
    root = ET.parse(xml_path).getroot()
    filename = root.findtext("filename")
    if not filename:
        raise ValueError("<filename> is missing")
    size = root.find("size")
    if size is None:
        raise ValueError("<size> is missing")
    width, height = (_voc_number(size, key, "size") for key in ("width", "height"))
    if width != int(width) or height != int(height) or width <= 0 or height <= 0:
        raise ValueError(f"<size> must hold positive whole width and height, got {width}x{height}")
    boxes = []
    for i, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise ValueError(f"object[{i}]/name is missing")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise ValueError(f"object[{i}]/bndbox is missing")
        corners = [_voc_number(bndbox, key, f"object[{i}]/bndbox") for key in ("xmin", "ymin", "xmax", "ymax")]
        try:
            boxes.append(normalised_box(name, *corners, int(width), int(height), False, problems))
        except ValueError as exc:
            raise ValueError(f"object[{i}]: {exc}") from None
    image = _voc_image(xml_path, root, image_dir, filename)
    size = _image_size(image, (int(width), int(height)), str(xml_path), problems)
    return _record(image, out_dir, boxes, size) if size else None


def _voc_image(xml_path: Path, root: ET.Element, image_dir: Path, filename: str) -> Path:
    """Where the image is, as Azure's converter finds it: the --images folder (or beside the .xml), the XML's own
    <path>, then <folder>/<filename> beside the annotations folder (Azure's annotations/ beside images/)."""
    folder = (root.findtext("folder") or "").strip()
    written = (root.findtext("path") or "").strip()
    candidates = [image_dir / filename]
    if written:
        candidates.append(Path(written))
    for base in (xml_path.parent.parent, xml_path.parent):
        candidates += [base / folder / filename] if folder else []
    candidates.append(xml_path.parent.parent / "images" / filename)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = ", ".join(dict.fromkeys(str(c) for c in candidates))
    raise ValueError(f"no such image {filename!r} (tried {tried}); give the images folder with --images")


def _voc_number(parent: ET.Element, key: str, where: str) -> float:
    text = parent.findtext(key)
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"{where}/{key} must be a number, got {text!r}")
    return value


def write_voc(dataset: Dataset, out_dir: Path) -> Path:
    """One .xml per image under out_dir, in the image's folder relative to the JSONL
    (so `read_voc(out_dir, images=<JSONL folder>)` finds the images again)."""
    folder = Path(dataset.source) if Path(dataset.source).is_dir() else Path(dataset.source).parent
    # Under the JSONL's folder, or their common folder when a wider root let them lie beside it.
    root = Path(os.path.commonpath([_absolute(folder), *(r.path for r in dataset.records)]))
    crowd = 0
    for record in dataset.records:
        width, height = _size_of(record)
        relative = record.path.relative_to(root)  
        ann = ET.Element("annotation")
        ET.SubElement(ann, "folder").text = relative.parent.as_posix()
        ET.SubElement(ann, "filename").text = relative.name
        size = ET.SubElement(ann, "size")
        for key, value in (("width", width), ("height", height), ("depth", 3)):
            ET.SubElement(size, key).text = str(value)
        for box in record.boxes:
            crowd += box.is_crowd
            obj = ET.SubElement(ann, "object")
            ET.SubElement(obj, "name").text = box.label
            ET.SubElement(obj, "difficult").text = "0"
            bndbox = ET.SubElement(obj, "bndbox")
            for key, value in (("xmin", box.top_x * width), ("ymin", box.top_y * height),
                               ("xmax", box.bottom_x * width), ("ymax", box.bottom_y * height)):
                ET.SubElement(bndbox, key).text = str(_pixels(value))
        ET.indent(ann)
        target = out_dir / relative.with_suffix(".xml")
        target.parent.mkdir(parents=True, exist_ok=True)
        ET.ElementTree(ann).write(target, encoding="unicode", xml_declaration=False)
    if crowd:
        log.warning("%d isCrowd boxes were written as ordinary boxes: VOC has no crowd flag", crowd)
    return out_dir


# ---------------------------------------------------------------- YOLO


def read_yolo(source: Path, out_jsonl: Path, images: Path | None = None) -> Dataset:
    """A YOLO folder: images/ and labels/ side by side (or the .txt beside each image), one
    `class cx cy w h` line per box (normalised; a polygon line is taken as its bounding box),
    class names from data.yaml (names:) or classes.txt / obj.names. An image with no .txt has no boxes."""
    source = Path(source)
    if not source.is_dir():
        raise DataError("a YOLO source is a folder (images/, labels/, data.yaml)", file=str(source))
    names = yolo_names(source)
    images = Path(images) if images else (source / "images" if (source / "images").is_dir() else source)
    labels = source / "labels" if (source / "labels").is_dir() else images
    if not images.is_dir():
        raise DataError("no such images folder", file=str(images))
    problems, records, used = _Problems(str(source)), [], set()
    for image in sorted(p for p in images.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        txt = labels / image.relative_to(images).with_suffix(".txt")
        used.add(txt.resolve())
        size = _image_size(image, None, str(image), problems)
        if size:
            boxes = _yolo_boxes(txt, names, *size, problems) if txt.is_file() else []
            records.append(_record(image, out_jsonl.parent, boxes, size))
    for txt in sorted(labels.rglob("*.txt")):
        if txt.resolve() not in used and txt.name not in YOLO_NAME_FILES:
            problems.add("a label file with no image beside it (or under images/)", txt)
    return _dataset(records, str(source), problems)


def yolo_names(source: Path) -> list[str]:
    """Class names of a YOLO folder, from data.yaml/dataset.yaml (names: list or {id: name}) or a names file."""
    for candidate in YOLO_NAME_FILES:
        path = source / candidate
        if not path.is_file():
            continue
        if path.suffix == ".yaml":
            try:
                names = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("names")
            except (yaml.YAMLError, AttributeError) as exc:
                raise DataError(f"not a YAML mapping ({exc.__class__.__name__})", file=str(path)) from None
            if isinstance(names, dict) and sorted(names) == list(range(len(names))):
                return [str(names[i]) for i in range(len(names))]
            if isinstance(names, list) and names:
                return [str(n) for n in names]
            raise DataError("names: must be a list, or a mapping of ids 0..n-1 to names", file=str(path))
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    raise DataError(f"no class names: put a data.yaml with names: (or a classes.txt) in {source}", file=str(source))


def _yolo_boxes(txt: Path, names: list[str], width: int, height: int, problems: _Problems) -> list[Box]:
    boxes = []
    for number, line in enumerate(txt.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            values = [float(v) for v in line.split()]
            if not all(math.isfinite(v) for v in values):
                raise ValueError(f"a non-finite number in {line!r}")
            if len(values) != 5 and (len(values) < 7 or len(values) % 2 == 0):
                raise ValueError(f"expected `class cx cy w h` (or a polygon `class x1 y1 x2 y2 ...`), got {line!r}")
            if values[0] != int(values[0]) or not 0 <= values[0] < len(names):
                raise ValueError(f"class {values[0]:g} is not one of the {len(names)} names (0..{len(names) - 1})")
            if len(values) == 5:
                cx, cy, w, h = values[1:]
                corners = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
            else:
                xs, ys = values[1::2], values[2::2]
                corners = [min(xs), min(ys), max(xs), max(ys)]
            boxes.append(normalised_box(names[int(values[0])], corners[0] * width, corners[1] * height,
                                        corners[2] * width, corners[3] * height, width, height, False, problems))
        except ValueError as exc:
            problems.add(str(exc), txt, number)
    return boxes


def _number_text(value: float) -> str:
    return f"{value:.{DECIMALS + 1}f}".rstrip("0").rstrip(".") or "0"  # a centre needs one more decimal


def yolo_label_line(box: Box, class_id: int) -> str:
    """One YOLO txt line: class cx cy w h, normalised."""
    values = ((box.top_x + box.bottom_x) / 2, (box.top_y + box.bottom_y) / 2,
              box.bottom_x - box.top_x, box.bottom_y - box.top_y)
    return " ".join([str(class_id), *map(_number_text, values)])


def write_yolo(dataset: Dataset, out_dir: Path, images: str = "none") -> Path:
    """labels/<image path>.txt and data.yaml under out_dir, image paths taken relative to the folder
    that holds all the images. images="link" or "copy" also puts the images in out_dir/images, which
    makes out_dir a data set ultralytics reads as it is; with "none", read it back with
    `read_yolo(out_dir, images=<that folder>)`."""
    if images not in ("none", "link", "copy"):
        raise ValueError(f"images must be none, link or copy, not {images!r}")
    out_dir = Path(out_dir)
    common = Path(os.path.commonpath([r.path.parent for r in dataset.records]))
    ids = {name: i for i, name in enumerate(dataset.classes)}
    crowd = 0
    for record in dataset.records:
        relative = record.path.relative_to(common)
        crowd += sum(box.is_crowd for box in record.boxes)
        lines = [yolo_label_line(box, ids[box.label]) for box in record.boxes]
        target = out_dir / "labels" / relative.with_suffix(".txt")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        if images != "none":
            copy = out_dir / "images" / relative
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.unlink(missing_ok=True)
            if images == "link":
                copy.symlink_to(record.path)
            else:
                shutil.copyfile(record.path, copy)
    data = {"names": dict(enumerate(dataset.classes))}
    if images != "none":
        data.update(path=str(_absolute(out_dir)), train="images", val="images")
    (out_dir / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    if crowd:
        log.warning("%d isCrowd boxes were written as ordinary boxes: YOLO has no crowd flag", crowd)
    return out_dir


# ---------------------------------------------------------------- entry points

READERS = {"coco": read_coco, "voc": read_voc, "yolo": read_yolo}


def convert_to_jsonl(fmt: str, source: str | Path, out: str | Path, images: str | Path | None = None) -> Dataset:
    """Read a COCO/VOC/YOLO data set and write it as JSONL at out (image_url relative to out's folder)."""
    if fmt not in READERS:
        raise DataError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    out = Path(out)
    dataset = READERS[fmt](Path(source), out, Path(images) if images else None)
    write_jsonl(dataset.records, out)
    return dataset


def convert_from_jsonl(fmt: str, jsonl: str | Path, out: str | Path, images: str = "none",
                       root: str | Path | None = None, prefix: str | None = None) -> Path:
    """Write a JSONL data set as COCO (out: a .json file), VOC or YOLO (out: a folder)."""
    dataset = read_jsonl(jsonl, root=root, prefix=prefix)
    if fmt == "coco":
        return write_coco(dataset, Path(out))
    if fmt == "voc":
        return write_voc(dataset, Path(out))
    if fmt == "yolo":
        return write_yolo(dataset, Path(out), images)
    raise DataError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
