"""The mAP evaluator against cases whose answers are worked out by hand (in the comments).

Images are 100x100 px; boxes are written in pixels (x1, y1, x2, y2) and normalised here."""

import json
import math
from pathlib import Path

import pytest

from autodetect.data.dataset import Box, ImageRecord
from autodetect.errors import DataError, SpecError
from autodetect.evaluation import evaluate, voc_average_precision
from autodetect.models.base import Detection

A = (0, 0, 50, 50)  # a 50x50 box in the top-left corner
B = (60, 60, 90, 90)  # a 30x30 box, disjoint from A


def image(*boxes: tuple, name: str = "img.jpg", size: tuple[int | None, int | None] = (100, 100)) -> ImageRecord:
    """boxes: (label, (x1, y1, x2, y2)) or (label, coords, "crowd")."""
    width, height = size
    scale_w, scale_h = width or 100, height or 100
    parsed = tuple(Box(label, c[0] / scale_w, c[1] / scale_h, c[2] / scale_w, c[3] / scale_h, is_crowd=bool(rest))
                   for label, c, *rest in boxes)
    return ImageRecord(name, Path(name), width, height, "jpg", parsed)


def det(label: str, score: float, c: tuple, scale: int = 100) -> Detection:
    return Detection(label, score, c[0] / scale, c[1] / scale, c[2] / scale, c[3] / scale)


def test_perfect_predictions_score_one_everywhere():
    records = [image(("a", A), ("b", B)), image(("b", A))]
    predictions = [[det("a", 0.9, A), det("b", 0.8, B)], [det("b", 0.7, A)]]
    result = evaluate(records, predictions, ["a", "b"], "coco_voc")
    assert result == {"mean_average_precision": 1.0, "mean_average_precision_50_95": 1.0,
                      "mean_average_precision_coco": 1.0, "precision": 1.0, "recall": 1.0,
                      "per_label_average_precision": {"a": 1.0, "b": 1.0}}
    json.dumps(result)


def test_one_class_half_found():
    # 2 ground truths of "a", one found (score .9). Ranked list: TP -> precision 1 at recall .5.
    # VOC all-point: 0.5 * 1 = 0.5. COCO 101-point: recall points 0.00..0.50 (51 of 101) have precision 1,
    # the other 50 have 0 -> 51/101.
    records = [image(("a", A)), image(("a", B))]
    predictions = [[det("a", 0.9, A)], []]
    voc = evaluate(records, predictions, ["a"], "voc")
    assert voc["mean_average_precision"] == pytest.approx(0.5)
    assert voc["precision"] == 1.0 and voc["recall"] == 0.5
    coco = evaluate(records, predictions, ["a"], "coco")
    assert coco["mean_average_precision"] == pytest.approx(51 / 101)


def test_false_positive_ranked_above_a_true_positive():
    # 2 ground truths. Ranked: TP(.9), FP(.8), TP(.7).
    # precision 1, 1/2, 2/3 at recall .5, .5, 1. Envelope: 1 up to recall .5, 2/3 up to 1.
    # VOC: .5*1 + .5*2/3 = 5/6. COCO: 51 points at 1 + 50 points at 2/3 -> (51 + 100/3) / 101.
    # precision = 2 TP / 3 detections; recall = 2/2.
    records = [image(("a", A), ("a", B))]
    predictions = [[det("a", 0.9, A), det("a", 0.8, (0, 60, 20, 80)), det("a", 0.7, B)]]
    voc = evaluate(records, predictions, ["a"], "voc")
    assert voc["mean_average_precision"] == pytest.approx(5 / 6)
    assert voc["precision"] == pytest.approx(2 / 3) and voc["recall"] == 1.0
    coco = evaluate(records, predictions, ["a"], "coco")
    assert coco["mean_average_precision"] == pytest.approx((51 + 100 / 3) / 101)


def test_duplicate_detection_of_one_box_is_a_false_positive():
    # 1 ground truth, two detections on it: the higher-scored matches, the other is a FP.
    # Ranked TP, FP -> recall reaches 1 at precision 1: AP 1.0; precision 1/2.
    records = [image(("a", A))]
    result = evaluate(records, [[det("a", 0.9, A), det("a", 0.8, A)]], ["a"])
    assert result["mean_average_precision"] == 1.0
    assert result["precision"] == 0.5 and result["recall"] == 1.0


@pytest.mark.parametrize("height, threshold, found", [
    (26, 0.5, True),  # IoU = 50*26 / (50*50) = 0.52 >= 0.5
    (24, 0.5, False),  # IoU = 0.48 < 0.5
    (26, 0.55, False),  # 0.52 < 0.55: the threshold given is the one used
    (24, 0.45, True),
])
def test_iou_just_below_and_above_the_threshold(height, threshold, found):
    records = [image(("a", A))]
    result = evaluate(records, [[det("a", 0.9, (0, 0, 50, height))]], ["a"], iou_threshold=threshold)
    expected = 1.0 if found else 0.0
    assert result["mean_average_precision"] == expected
    assert result["precision"] == expected and result["recall"] == expected


def test_detection_on_a_crowd_box_is_neither_true_nor_false_positive():
    # Image 1: "a" at A and a crowd "a" at B. The crowd hit scores highest; were it a FP, AP would be
    # 1/2 (ranked FP, TP). Ignored, the list is TP alone: AP 1, precision 1/1.
    # Image 2: only a crowd box, undetected: not a miss, so recall stays 1/1.
    records = [image(("a", A), ("a", B, "crowd")), image(("a", B, "crowd"))]
    predictions = [[det("a", 0.95, B), det("a", 0.9, A)], []]
    result = evaluate(records, predictions, ["a"], "coco_voc")
    assert result["mean_average_precision"] == 1.0
    assert result["mean_average_precision_coco"] == 1.0
    assert result["precision"] == 1.0 and result["recall"] == 1.0


def test_detection_near_but_off_a_crowd_box_is_still_a_false_positive():
    # The crowd box is ignored only for detections that match it; one elsewhere is a FP
    # ranked above the TP: precision 0 then 1/2 at recall 1 -> AP 1/2.
    records = [image(("a", A), ("a", B, "crowd"))]
    result = evaluate(records, [[det("a", 0.95, (0, 60, 20, 80)), det("a", 0.9, A)]], ["a"])
    assert result["mean_average_precision"] == pytest.approx(0.5)
    assert result["precision"] == 0.5


def test_classes_are_averaged_and_a_class_without_ground_truth_is_left_out():
    # "a": 1 GT, found -> AP 1. "b": 2 GT, one found -> AP 1/2 (VOC). "c": no GT -> not in the mean.
    # mAP = (1 + 1/2) / 2 = 3/4. precision = 2 TP / 2; recall = 2 / 3.
    records = [image(("a", A), ("b", B)), image(("b", A))]
    predictions = [[det("a", 0.9, A), det("b", 0.8, B)], []]
    result = evaluate(records, predictions, ["a", "b", "c"])
    assert result["per_label_average_precision"] == {"a": 1.0, "b": 0.5, "c": None}
    assert result["mean_average_precision"] == pytest.approx(0.75)
    assert result["precision"] == 1.0 and result["recall"] == pytest.approx(2 / 3)


def test_wrong_class_is_a_false_positive_of_its_class_and_a_miss_of_the_other():
    # A "b" detection on an "a" box: "a" missed (AP 0), "b" has no GT (left out); precision 0/1.
    result = evaluate([image(("a", A))], [[det("b", 0.9, A)]], ["a", "b"])
    assert result["mean_average_precision"] == 0.0
    assert result["per_label_average_precision"] == {"a": 0.0, "b": None}
    assert result["precision"] == 0.0 and result["recall"] == 0.0


def test_empty_predictions_and_empty_images_give_zero_not_nan():
    records = [image(("a", A)), image()]
    for metric_type in ("voc", "coco", "coco_voc"):
        result = evaluate(records, [[], []], ["a"], metric_type)
        numbers = [v for k, v in result.items() if k != "per_label_average_precision"]
        assert numbers and all(v == 0.0 and not math.isnan(v) for v in numbers)
        assert result["per_label_average_precision"] == {"a": 0.0}
    # no ground truth and no detections anywhere
    assert evaluate([image(), image()], [[], []], ["a"])["mean_average_precision"] == 0.0
    assert evaluate([], [], ["a"], "coco")["mean_average_precision_50_95"] == 0.0


def test_an_image_without_ground_truth_makes_its_detections_false_positives():
    # Image 2 has no boxes; its detection (ranked first) is a FP: ranked FP, TP -> AP 1/2.
    records = [image(("a", A)), image()]
    result = evaluate(records, [[det("a", 0.8, A)], [det("a", 0.9, A)]], ["a"])
    assert result["mean_average_precision"] == pytest.approx(0.5)
    assert result["precision"] == 0.5 and result["recall"] == 1.0


def test_metric_types_select_what_is_returned():
    # The half-found case: VOC AP 1/2, COCO AP 51/101.
    records, predictions = [image(("a", A)), image(("a", B))], [[det("a", 0.9, A)], []]
    voc = evaluate(records, predictions, ["a"], "voc")
    coco = evaluate(records, predictions, ["a"], "coco")
    both = evaluate(records, predictions, ["a"], "coco_voc")
    assert set(voc) == {"mean_average_precision", "precision", "recall", "per_label_average_precision"}
    assert set(coco) == set(voc) | {"mean_average_precision_50_95"}
    assert set(both) == set(coco) | {"mean_average_precision_coco"}
    assert voc["mean_average_precision"] == pytest.approx(0.5)
    assert coco["mean_average_precision"] == coco["per_label_average_precision"]["a"] == pytest.approx(51 / 101)
    assert both["mean_average_precision"] == pytest.approx(0.5)  # coco_voc: the primary is VOC's
    assert both["mean_average_precision_coco"] == pytest.approx(51 / 101)
    assert evaluate(records, predictions, ["a"], "none") == {}
    with pytest.raises(SpecError, match="validation_metric_type"):
        evaluate(records, predictions, ["a"], "map")
    with pytest.raises(SpecError, match="validation_iou_threshold"):
        evaluate(records, predictions, ["a"], iou_threshold=1.5)


def test_box_matched_at_half_but_not_at_three_quarters_lowers_the_50_95_number():
    # IoU = 50*31 / (50*50) = 0.62: a TP at thresholds .50, .55, .60, a miss at .65 ... .95,
    # so AP@[.5:.95] = 3/10 while AP@.5 stays 1; at iou_threshold .75 the primary is 0.
    records = [image(("a", A))]
    loose = [[det("a", 0.9, (0, 0, 50, 31))]]
    result = evaluate(records, loose, ["a"], "coco")
    assert result["mean_average_precision"] == 1.0
    assert result["mean_average_precision_50_95"] == pytest.approx(0.3)
    assert evaluate(records, [[det("a", 0.9, A)]], ["a"], "coco")["mean_average_precision_50_95"] == 1.0
    assert evaluate(records, loose, ["a"], "coco", iou_threshold=0.75)["mean_average_precision"] == 0.0


def test_unknown_image_size_falls_back_and_scale_does_not_change_iou():
    # Same normalised boxes on a 640x480 image, on an image of unknown size: same answer.
    box = (0, 0, 0.5, 0.5)
    pred = [[Detection("a", 0.9, 0, 0, 0.5, 0.26)]]  # IoU 0.52 in any scale
    for size in ((640, 480), (None, None)):
        record = ImageRecord("x.jpg", Path("x.jpg"), *size, "jpg", (Box("a", *box),))
        assert evaluate([record], pred, ["a"])["mean_average_precision"] == 1.0


def test_bad_input_is_refused_clearly():
    records = [image(("a", A), name="cats/1.jpg")]
    with pytest.raises(DataError, match=r"cats/1\.jpg.*'a'"):
        evaluate(records, [[]], ["b"])
    with pytest.raises(ValueError, match="'z'"):
        evaluate(records, [[det("z", 0.9, A)]], ["a"])
    with pytest.raises(ValueError, match="1 images but 2"):
        evaluate(records, [[], []], ["a"])


def test_voc_average_precision_by_hand():
    assert voc_average_precision([], 3) == 0.0
    assert voc_average_precision([True, True], 2) == 1.0
    # FP then TP, 1 GT: precision 1/2 at recall 1 -> 1/2
    assert voc_average_precision([False, True], 1) == pytest.approx(0.5)
    # TP, FP, FP, TP with 4 GT: P=1@R=.25, P=.5@R=.5 -> .25*1 + .25*.5 = .375
    assert voc_average_precision([True, False, False, True], 4) == pytest.approx(0.375)
    # FP, TP, TP with 2 GT: P=1/2@R=1/2, P=2/3@R=1; the envelope lifts 1/2 to 2/3 -> 2/3 (not 7/12)
    assert voc_average_precision([False, True, True], 2) == pytest.approx(2 / 3)
