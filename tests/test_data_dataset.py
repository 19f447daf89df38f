"""Reading a JSONL data set: every bad input gets an error naming the file, the line and the reason."""

import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autodetect.data.dataset import read_jsonl
from autodetect.data.images import load_rgb
from autodetect.errors import DataError, ImageError

BOX = {"label": "can", "topX": 0.1, "topY": 0.2, "bottomX": 0.5, "bottomY": 0.9, "isCrowd": 0}


def png(path: Path, size=(64, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 130, 140)).save(path)
    return path


def line(image_url="images/a.png", **box_changes) -> str:
    box = {**BOX, **box_changes}
    box = {k: v for k, v in box.items() if v is not None}
    return json.dumps({"image_url": image_url, "image_details": {"format": "png"}, "label": [box]})


def write(tmp_path: Path, *lines: str) -> Path:
    png(tmp_path / "images" / "a.png")
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def error_of(path: Path, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        read_jsonl(path, **kwargs)
    return str(info.value)


def test_a_good_file_reads_with_sizes_from_the_image(tmp_path):
    dataset = read_jsonl(write(tmp_path, line(), line(label="bottle")))
    assert len(dataset) == 2 and dataset.classes == ["bottle", "can"]
    record = dataset.records[0]
    assert (record.width, record.height, record.format) == (64, 48, "png")
    assert record.path == tmp_path / "images" / "a.png"
    assert record.boxes[0].top_y == 0.2


def test_bad_json_names_file_and_line(tmp_path):
    path = write(tmp_path, line(), '{"image_url": "images/a.png", ')
    message = error_of(path)
    assert f"{path}:2:" in message and "bad JSON" in message


@pytest.mark.parametrize("change, reason", [
    ({"bottomX": 1.2}, "outside [0, 1]"),
    ({"topY": -0.1}, "outside [0, 1]"),
    ({"topX": 0.6}, "inverted"),
    ({"topY": 0.9}, "inverted"),
    ({"topX": None}, "missing topX"),
    ({"label": None}, "missing label"),
    ({"bottomY": "0.9"}, "must be a number"),
    ({"topX": float("nan")}, "outside [0, 1]"),
])
def test_bad_boxes_name_line_and_reason(tmp_path, change, reason):
    path = write(tmp_path, line(), line(**change))
    message = error_of(path)
    assert f"{path}:2:" in message and reason in message


def test_every_bad_line_is_reported_not_only_the_first(tmp_path):
    path = write(tmp_path, line(topX=2.0), line(), line(topX=0.7))
    message = error_of(path)
    assert "2 bad lines" in message and f"{path}:1:" in message and f"{path}:3:" in message


def test_missing_image_url_and_missing_image_file(tmp_path):
    path = write(tmp_path, json.dumps({"label": [BOX]}), line("images/none.png"))
    message = error_of(path)
    assert f"{path}:1: image_url is missing" in message
    assert f"{path}:2:" in message and "no such image" in message


def test_an_unreadable_image(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "bad.png").write_bytes(b"this is not a picture at all")
    path = write(tmp_path, line("images/bad.png"))
    assert f"{path}:1:" in error_of(path) and "not a readable image" in error_of(path)


def test_a_truncated_image_is_found_when_pixels_are_decoded(tmp_path):
    whole = Image.effect_noise((96, 96), 64).convert("RGB")
    png(tmp_path / "images" / "a.png")
    whole.save(tmp_path / "images" / "cut.png")
    data = (tmp_path / "images" / "cut.png").read_bytes()
    (tmp_path / "images" / "cut.png").write_bytes(data[: len(data) // 2])
    path = tmp_path / "t.jsonl"
    path.write_text(line() + "\n" + line("images/cut.png") + "\n")
    assert len(read_jsonl(path)) == 2  # the header alone is intact
    message = error_of(path, decode=True)
    assert f"{path}:2:" in message and "truncated or corrupt" in message


@pytest.mark.parametrize("options", [{}, {"progressive": True}, {"subsampling": 0}], ids=["baseline", "progressive", "444"])
def test_a_colour_jpeg_decodes_to_pils_pixels_and_a_cut_one_is_refused(tmp_path, options):
    """load_rgb decodes colour JPEGs with OpenCV (faster); the pixels are PIL's, EXIF orientation ignored as PIL does."""
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8))
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90": ignored by both decoders
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif, **options)
    data = out.getvalue()
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    (tmp_path / "a.jpg").write_bytes(data)
    for source in (data, tmp_path / "a.jpg"):
        decoded = load_rgb(source)
        assert decoded.shape == (120, 160, 3) and decoded.dtype == np.uint8
        assert np.array_equal(decoded, expected)
    for cut in (len(data) // 2, len(data) - 64):  # pixel data cut off (only the end marker gone still decodes)
        with pytest.raises(ImageError, match="truncated or corrupt"):
            load_rgb(data[:cut])


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [7000, 60000])  # over our limit; over PIL's own bomb limit
def test_a_decompression_bomb_is_refused_from_its_header(tmp_path, side):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "bomb.png").write_bytes(_png_header_only(side, side))
    path = write(tmp_path, line("images/bomb.png"))
    message = error_of(path)
    assert f"{path}:1:" in message and ("over the limit" in message or "decompression bomb" in message)


def test_image_urls_that_escape_the_root_are_refused(tmp_path):
    root = tmp_path / "data"
    outside = png(tmp_path / "outside.png")
    png(root / "images" / "a.png")
    path = root / "train.jsonl"
    path.write_text("\n".join([line("../outside.png"), line(str(outside)), line("images/../../outside.png"),
                               line("file://" + str(outside))]) + "\n")
    message = error_of(path)
    assert "4 bad lines" in message
    for number in (1, 2, 3, 4):
        assert f"{path}:{number}:" in message
    assert message.count(f"is outside the data set root {root}; widen the root with spec.dataset.root") == 4


def test_an_absolute_path_inside_the_root_and_a_symlinked_images_folder_are_fine(tmp_path):
    elsewhere = tmp_path / "disk"
    png(elsewhere / "b.png")
    root = tmp_path / "data"
    root.mkdir()
    os.symlink(elsewhere, root / "images")
    path = root / "train.jsonl"
    path.write_text(line("images/b.png") + "\n" + line(str(root / "images" / "b.png")) + "\n")
    assert [r.path for r in read_jsonl(path).records] == [root / "images" / "b.png"] * 2


def test_an_empty_file_and_a_missing_file(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    assert "no images" in error_of(tmp_path / "empty.jsonl")
    assert "no such file" in error_of(tmp_path / "none.jsonl")
