"""Boxes drawn to a PNG: ground truth from a JSONL line, detections from a scoring response."""

import numpy as np
import pytest
from PIL import Image

from autodetect.data.dataset import read_jsonl
from autodetect.data.images import load_rgb
from autodetect.errors import DataError
from autodetect.visualize import colour_of, draw_detections, draw_ground_truth


@pytest.fixture
def plain(tmp_path):
    path = tmp_path / "plain.png"
    Image.new("RGB", (160, 120), (128, 128, 128)).save(path)
    return path


def changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return np.abs(before.astype(int) - after.astype(int)).max(axis=2) > 0


RESPONSE = {"filename": "plain.png", "boxes": [
    {"box": {"topX": 0.25, "topY": 0.5, "bottomX": 0.75, "bottomY": 0.9}, "label": "can", "score": 0.97},
    {"box": {"topX": 0.05, "topY": 0.05, "bottomX": 0.2, "bottomY": 0.2}, "label": "milk", "score": 0.3}]}


def test_detections_are_outlined_in_their_class_colour(tmp_path, plain):
    out = draw_detections(plain, RESPONSE, tmp_path / "out.png")
    after, before = load_rgb(out), load_rgb(plain)
    assert after.shape == before.shape
    diff = changed(before, after)
    # the left edge of the can box (x = 0.25 * 159), halfway down it, is drawn in the can colour
    assert diff[int(0.7 * 119), round(0.25 * 159)] and tuple(after[int(0.7 * 119), round(0.25 * 159)]) == colour_of("can")
    assert not diff[int(0.7 * 119), 80]  # the inside of the box is left alone
    assert diff[:30, :40].any()  # the milk box


def test_min_score_and_the_list_form(tmp_path, plain):
    out = draw_detections(str(plain), [RESPONSE], tmp_path / "out.png", min_score=0.5)
    diff = changed(load_rgb(plain), load_rgb(out))
    assert not diff[:30, :40].any() and diff[60:, 30:130].any()


@pytest.mark.parametrize("response, reason", [
    ({"filename": "x"}, "expected a scoring response"),
    ([RESPONSE, RESPONSE], "a response for 2 images"),
    ({"boxes": [{"label": "can", "score": 1}]}, r"boxes\[0\] needs a box"),
    ({"boxes": [{"box": {"topX": 0.1, "topY": 0.1, "bottomX": 0.2}, "label": "can", "score": 1}]}, r"boxes\[0\]: missing"),
])
def test_bad_responses_are_named(tmp_path, plain, response, reason):
    with pytest.raises(DataError, match=reason):
        draw_detections(plain, response, tmp_path / "out.png")


def test_ground_truth_of_a_jsonl_line(tmp_path):
    from autodetect.data.synth import synthesize

    record = read_jsonl(synthesize(tmp_path / "d", classes=2, images=1, size=128, seed=0)).records[0]
    out = draw_ground_truth(record, tmp_path / "gt.png")
    diff = changed(load_rgb(record.path), load_rgb(out))
    for box in record.boxes:
        x0, y1 = round(box.top_x * 127), round((box.top_y + box.bottom_y) / 2 * 127)
        assert diff[y1, x0 - 1: x0 + 2].any()
    assert not diff[~_near_boxes(record)].any()


def _near_boxes(record) -> np.ndarray:
    """Pixels inside boxes grown by a caption's height above (where drawing may land)."""
    near = np.zeros((128, 128), bool)
    for b in record.boxes:
        near[max(0, int(b.top_y * 127) - 20): int(b.bottom_y * 127) + 3,
             max(0, int(b.top_x * 127) - 2): int(b.bottom_x * 127) + 60] = True
    return near
