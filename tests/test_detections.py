"""The tests' comparison of two runs' detections: strict well above the floor, lenient at it."""

import pytest

from autodetect.models.base import Detection
from detections import assert_same_detections, match_detections


def box(score: float, x: float = 0.1, label: str = "a") -> Detection:
    return Detection(label, score, x, 0.1, x + 0.3, 0.5)


def test_a_detection_at_the_floor_on_one_side_only_is_excused():
    assert_same_detections([box(0.9), box(0.0501, x=0.5)], [box(0.9)], floor=0.05)


def test_a_detection_well_above_the_floor_must_be_matched():
    with pytest.raises(AssertionError, match="unmatched"):
        assert_same_detections([box(0.9), box(0.2, x=0.5)], [box(0.9)], floor=0.05)
    assert match_detections([box(0.9)], [box(0.9, label="b")], floor=0.05) == (
        [("a", 0.9, (0.1, 0.1, 0.4, 0.5))], [("b", 0.9, (0.1, 0.1, 0.4, 0.5))])


def test_scores_and_corners_match_within_tolerances_one_to_one():
    assert_same_detections([box(0.9), box(0.9)], [box(0.90005), box(0.9, x=0.1005)], floor=0.05)
    with pytest.raises(AssertionError):  # two detections cannot share one twin
        assert_same_detections([box(0.9), box(0.9)], [box(0.9)], floor=0.05)
    with pytest.raises(AssertionError):
        assert_same_detections([box(0.9)], [box(0.9, x=0.11)], floor=0.05)


def test_a_side_cut_by_rank_raises_the_floor_to_its_lowest_score():
    full = [box(0.9), box(0.5, x=0.5)]
    swapped = [box(0.9), box(0.5, x=0.2)]  # the second place went to a near-equal neighbour
    assert_same_detections(full, swapped, floor=0.05, max_detections=2)
    with pytest.raises(AssertionError):
        assert_same_detections(full, swapped, floor=0.05)
