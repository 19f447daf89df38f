"""Subcommands of this area (see autodetect.cli): convert, dataset {stats,synth,validate}, visualize."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from autodetect.data.convert import FORMATS
from autodetect.errors import AutodetectError, DataError


def register(subparsers: argparse._SubParsersAction) -> None:
    convert = subparsers.add_parser(
        "convert", help="convert COCO / Pascal VOC / YOLO to Azure AutoML JSONL, or back",
        description="--from FORMAT SOURCE --out out.jsonl reads COCO JSON (SOURCE: the .json), Pascal VOC (SOURCE: "
                    "a folder of .xml beside the images) or YOLO (SOURCE: a folder with images/, labels/, data.yaml); "
                    "image_url is written relative to the JSONL's folder, which must hold the images. "
                    "--to FORMAT SOURCE.jsonl --out PATH writes COCO (a .json file; file_name relative to its folder), VOC (a "
                    "folder; each .xml at its image's path relative to the JSONL, so OUT = the JSONL's folder puts "
                    "them beside the images) or YOLO (a folder: labels/, data.yaml, and images/ with --with-images).")
    direction = convert.add_mutually_exclusive_group(required=True)
    direction.add_argument("--from", dest="from_format", choices=FORMATS, help="convert FORMAT to JSONL")
    direction.add_argument("--to", dest="to_format", choices=FORMATS, help="convert JSONL to FORMAT")
    convert.add_argument("source", help="the data set to read")
    convert.add_argument("--out", required=True, help="the JSONL to write (--from), or the file / folder (--to)")
    convert.add_argument("--images", help="with --from: the images folder (COCO: default the JSON's folder; VOC: "
                                           "beside each .xml; YOLO: SOURCE/images)")
    convert.add_argument("--with-images", choices=("none", "link", "copy"), default="none",
                         help="with --to yolo: also link or copy the images into OUT/images")
    _root_options(convert)
    convert.set_defaults(handler=_convert)

    dataset = subparsers.add_parser("dataset", help="inspect, check or make a JSONL data set")
    actions = dataset.add_subparsers(dest="dataset_command", required=True, metavar="ACTION")
    stats = actions.add_parser("stats", help="images, boxes per class, box sizes")
    stats.add_argument("file", help="a JSONL data set")
    stats.add_argument("--json", action="store_true", help="print the figures as JSON")
    _root_options(stats)
    stats.set_defaults(handler=_stats)
    validate = actions.add_parser("validate", help="check every line and decode every image")
    validate.add_argument("file", help="a JSONL data set")
    validate.add_argument("--no-decode", action="store_true", help="read image headers only (faster)")
    _root_options(validate)
    validate.set_defaults(handler=_validate)
    synth = actions.add_parser("synth", help="write a synthetic data set (coloured shapes) a detector learns quickly")
    synth.add_argument("--out", required=True, help="folder for images/ and annotations.jsonl")
    synth.add_argument("--classes", type=int, default=3, help="number of classes, 1-6 (default 3)")
    synth.add_argument("--images", type=int, default=60, help="number of images (default 60)")
    synth.add_argument("--size", type=int, default=128, help="image width and height in pixels (default 128)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--max-boxes", type=int, default=3, help="at most this many objects an image (default 3)")
    synth.add_argument("--format", choices=("png", "jpg"), default="png")
    synth.set_defaults(handler=_synth)

    visualize = subparsers.add_parser(
        "visualize", help="draw boxes on an image to a PNG",
        description="--jsonl FILE [--image URL_OR_INDEX] draws an image's ground truth; "
                    "--image-file IMG --detections RESPONSE.json draws a scoring response.")
    visualize.add_argument("--jsonl", help="a JSONL data set")
    visualize.add_argument("--image", default="0", help="with --jsonl: the image_url or 0-based line index (default 0)")
    visualize.add_argument("--image-file", help="an image file")
    visualize.add_argument("--detections", help="a scoring response (JSON) for --image-file")
    visualize.add_argument("--min-score", type=float, default=0.0, help="draw detections scoring at least this")
    visualize.add_argument("--out", required=True, help="the PNG to write")
    visualize.set_defaults(handler=_visualize)


def _root_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", help="reading JSONL: the folder the images must lie under (default: the JSONL's "
                                       "folder), as spec.dataset.root")
    parser.add_argument("--image-url-prefix", help="reading JSONL: an image_url prefix (Azure's azureml://.../paths/"
                                                   "<folder>/) mapped onto the root, as spec.dataset.imageUrlPrefix")


def _summary(dataset) -> str:
    boxes = sum(len(r.boxes) for r in dataset.records)
    return f"{len(dataset)} images, {boxes} boxes, {len(dataset.classes)} classes ({', '.join(dataset.classes)})"


def _convert(args: argparse.Namespace) -> int:
    from autodetect.data.convert import convert_from_jsonl, convert_to_jsonl

    if args.from_format:
        if args.with_images != "none":
            raise AutodetectError("--with-images goes with --to yolo")
        if args.root or args.image_url_prefix:
            raise AutodetectError("--root and --image-url-prefix go with --to (they say how the JSONL is read)")
        dataset = convert_to_jsonl(args.from_format, args.source, args.out, args.images)
        print(f"wrote {args.out}: {_summary(dataset)}")
    else:
        if args.images:
            raise AutodetectError("--images goes with --from; with --to the images are where the JSONL says")
        if args.with_images != "none" and args.to_format != "yolo":
            raise AutodetectError("--with-images goes with --to yolo")
        out = convert_from_jsonl(args.to_format, args.source, args.out, args.with_images, args.root,
                                 args.image_url_prefix)
        print(f"wrote {args.to_format} to {out}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from autodetect.data.dataset import read_jsonl
    from autodetect.data.stats import dataset_stats, render_stats

    stats = dataset_stats(read_jsonl(args.file, root=args.root, prefix=args.image_url_prefix))
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        from rich.console import Console

        Console().print(render_stats(stats))
    return 0


def _validate(args: argparse.Namespace) -> int:
    from autodetect.data.dataset import read_jsonl

    dataset = read_jsonl(args.file, decode=not args.no_decode, root=args.root, prefix=args.image_url_prefix)
    print(f"OK {args.file}: {_summary(dataset)}")
    return 0


def _synth(args: argparse.Namespace) -> int:
    from autodetect.data.dataset import read_jsonl
    from autodetect.data.synth import synthesize

    path = synthesize(args.out, classes=args.classes, images=args.images, size=args.size, seed=args.seed,
                      boxes_per_image=(1, args.max_boxes), image_format=args.format)
    print(f"wrote {path}: {_summary(read_jsonl(path))}")
    return 0


def _visualize(args: argparse.Namespace) -> int:
    from autodetect.visualize import draw_detections, draw_ground_truth

    if args.jsonl and not (args.image_file or args.detections):
        out = draw_ground_truth(_pick(args.jsonl, args.image), args.out)
    elif args.image_file and args.detections and not args.jsonl:
        out = draw_detections(args.image_file, _read_json(args.detections), args.out, args.min_score,
                              source=args.detections)
    else:
        raise AutodetectError("visualize: give --jsonl FILE [--image URL_OR_INDEX], "
                              "or --image-file IMG with --detections RESPONSE.json")
    print(f"wrote {out}")
    return 0


def _pick(jsonl: str, image: str):
    from autodetect.data.dataset import read_jsonl

    dataset = read_jsonl(jsonl, check_images=False)  # only the chosen image is opened
    if image.isdigit():
        if int(image) >= len(dataset):
            raise DataError(f"image index {image} is past the last line ({len(dataset)} images)", file=jsonl)
        return dataset.records[int(image)]
    wanted = Path(os.path.abspath(Path(jsonl).parent / image))
    for record in dataset.records:
        if record.image_url == image or record.path == wanted:
            return record
    raise DataError(f"no line has image_url {image!r}", file=jsonl)


def _read_json(path: str) -> dict | list:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError("no such file", file=path) from None
    except json.JSONDecodeError as exc:
        raise DataError(f"bad JSON: {exc.msg} at column {exc.colno}", file=path, line=exc.lineno) from None
