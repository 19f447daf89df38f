"""The synthetic data set: valid JSONL, seeded, and boxes that fit their drawn shapes."""

import numpy as np
import pytest

from autodetect.data.dataset import read_jsonl
from autodetect.data.images import load_rgb
from autodetect.data.synth import COLOURS, SHAPES, synthesize
from autodetect.errors import SpecError


def test_output_passes_full_validation(tmp_path):
    path = synthesize(tmp_path, classes=4, images=12, size=(96, 80), seed=5, boxes_per_image=(1, 3))
    assert path == tmp_path / "annotations.jsonl"
    dataset = read_jsonl(path, decode=True)
    assert len(dataset) == 12
    assert set(dataset.classes) <= set(SHAPES[:4]) and len(dataset.classes) >= 3
    for record in dataset.records:
        assert (record.width, record.height) == (96, 80)
        assert 1 <= len(record.boxes) <= 3
        for box in record.boxes:
            assert 0.19 <= box.bottom_x - box.top_x <= 0.46


def test_the_same_seed_gives_the_same_data(tmp_path):
    a = synthesize(tmp_path / "a", images=3, size=64, seed=1)
    b = synthesize(tmp_path / "b", images=3, size=64, seed=1)
    c = synthesize(tmp_path / "c", images=3, size=64, seed=2)
    assert a.read_text() == b.read_text() != c.read_text()
    assert (tmp_path / "a/images/0002.png").read_bytes() == (tmp_path / "b/images/0002.png").read_bytes()


def test_jpeg_output(tmp_path):
    dataset = read_jsonl(synthesize(tmp_path, images=2, size=64, image_format="jpg"), decode=True)
    assert [r.image_url for r in dataset.records] == ["images/0000.jpg", "images/0001.jpg"]
    assert dataset.records[0].format == "jpeg"


def test_each_box_holds_its_class_colour_and_the_background_is_plain(tmp_path):
    dataset = read_jsonl(synthesize(tmp_path, classes=3, images=8, size=128, seed=0))
    for record in dataset.records:
        pixels = load_rgb(record.path).astype(int)
        inside = np.zeros(pixels.shape[:2], bool)
        for box in record.boxes:
            x0, y0, x1, y1 = (round(v * 128) for v in (box.top_x, box.top_y, box.bottom_x, box.bottom_y))
            inside[y0:y1, x0:x1] = True
            centre = pixels[(y0 + y1) // 2, (x0 + x1) // 2]  # squares and circles are solid at the centre
            assert np.abs(centre - COLOURS[SHAPES.index(box.label)]).max() < 30
            # the box is tight: the shape reaches within a pixel of each side
            region = np.abs(pixels[y0:y1, x0:x1] - COLOURS[SHAPES.index(box.label)]).max(axis=2) < 40
            assert region[:2].any() and region[-2:].any() and region[:, :2].any() and region[:, -2:].any()
        background = pixels[~inside]
        assert background.std(axis=0).max() < 25 and np.ptp(background.mean(axis=1)) < 80


@pytest.mark.parametrize("kwargs, field", [({"classes": 7}, "classes"), ({"images": 0}, "images"),
                                           ({"size": 16}, "size"), ({"boxes_per_image": (3, 1)}, "boxes_per_image")])
def test_impossible_arguments_are_refused(tmp_path, kwargs, field):
    with pytest.raises(SpecError, match=field):
        synthesize(tmp_path, **kwargs)
