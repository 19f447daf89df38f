"""Comparing the detections of one model from two runs (two runtimes, two batchings, two servers) without
depending on the last digits of the CPU's float kernels.

Both sides are cut at the same score floor. A detection well above the floor (at least `floor + margin`)
on either side must be matched, one to one, by a detection of the other side with the same label, a score
within `score_tol` and box corners within `box_tol`. A detection closer to the floor may have no match: its
twin on the other side may have scored a hair under the floor there. `margin` defaults to twice `score_tol`,
so a required detection's twin always lies above the floor."""

from __future__ import annotations

from typing import Any, Iterable

Row = tuple[str, float, tuple[float, float, float, float]]


def _row(detection: Any) -> Row:
    if isinstance(detection, dict):  # Azure's JSON: {"box": {topX, ...}, "label", "score"}
        box = detection["box"]
        return detection["label"], detection["score"], (box["topX"], box["topY"], box["bottomX"], box["bottomY"])
    return detection.label, detection.score, (detection.top_x, detection.top_y, detection.bottom_x, detection.bottom_y)


def match_detections(a: Iterable[Any], b: Iterable[Any], *, floor: float, score_tol: float = 1e-4,
                     box_tol: float = 2e-3, margin: float | None = None,
                     max_detections: int | None = None) -> tuple[list[Row], list[Row]]:
    """The detections of a, and of b, that are well above the floor and have no match on the other side.

    A side that holds max_detections detections was cut by rank, not only by score: its lowest score is then
    a floor too (the next detection down may have swapped places with it on the other side)."""
    left, right = [_row(d) for d in a], [_row(d) for d in b]
    for side in (left, right):
        if max_detections is not None and len(side) >= max_detections:
            floor = max(floor, min(score for _, score, _ in side))
    required = floor + (2 * score_tol if margin is None else margin)

    def distance(x: Row, y: Row) -> float | None:
        if x[0] != y[0] or abs(x[1] - y[1]) >= score_tol:
            return None
        corners = max(abs(p - q) for p, q in zip(x[2], y[2]))
        return corners if corners < box_tol else None

    pairs = sorted((d, i, j) for i, x in enumerate(left) for j, y in enumerate(right)
                   if (d := distance(x, y)) is not None)
    matched_left, matched_right = set(), set()
    for _, i, j in pairs:  # the closest pairs first, each detection used once
        if i not in matched_left and j not in matched_right:
            matched_left.add(i)
            matched_right.add(j)
    return ([x for i, x in enumerate(left) if i not in matched_left and x[1] >= required],
            [y for j, y in enumerate(right) if j not in matched_right and y[1] >= required])


def assert_same_detections(a: Iterable[Any], b: Iterable[Any], *, floor: float, **tolerances: Any) -> None:
    a, b = list(a), list(b)
    only_a, only_b = match_detections(a, b, floor=floor, **tolerances)
    assert not (only_a or only_b), (f"unmatched well above the floor {floor}: {only_a} in a, {only_b} in b\n"
                                    f"  a: {[_row(d) for d in a]}\n  b: {[_row(d) for d in b]}")
