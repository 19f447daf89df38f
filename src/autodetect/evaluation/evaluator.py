"""The one mAP evaluator every model family is scored by, so that trials are comparable.

Matching is faster-coco-eval's (the COCO matcher): greedy by descending score, one ground truth
per detection, same class only, IoU >= threshold. `isCrowd` ground truths are ignored as COCO
ignores them: a detection matched to one is neither a true nor a false positive, and an
unmatched one is not a miss. Nothing here re-implements matching; the VOC numbers are computed
from faster-coco-eval's own per-detection matches.

Metric types (Azure's `validation_metric_type`) and what each returns; the primary metric is
always "mean_average_precision", AP at `iou_threshold` (Azure's `validation_iou_threshold`):
- "voc": primary = VOC all-point interpolated AP (VOC2010+). Also precision, recall and
  per_label_average_precision (VOC).
- "coco": primary = COCO 101-point interpolated AP at iou_threshold; also
  "mean_average_precision_50_95" (COCO AP@[.5:.95]), precision, recall, per-label AP (COCO).
- "coco_voc": primary and per-label AP from VOC, plus "mean_average_precision_50_95" and
  "mean_average_precision_coco" (COCO 101-point AP at iou_threshold).
- "none": {}.

Means are over the classes that have (non-crowd) ground truth; a class without any is left out
of the mean and is null in per_label_average_precision (its AP is undefined). If no class has ground
truth, every number is 0.0. Every detection given is scored: COCO's cap of 100 detections per
image is raised to the largest count given (they were already capped by box_detections_per_image).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster

from autodetect.data.dataset import Box, ImageRecord
from autodetect.errors import DataError, SpecError
from autodetect.models.base import Detection

METRIC_TYPES = ("none", "voc", "coco", "coco_voc")
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)


def evaluate(records: Sequence[ImageRecord], predictions: Sequence[Sequence[Detection]], classes: Sequence[str],
             metric_type: str = "voc", iou_threshold: float = 0.5) -> dict:
    """Score `predictions[i]` (normalised boxes) against `records[i]`; returns a flat JSON-able dict.

    precision and recall are at iou_threshold, over the detections given, micro-averaged over
    classes: precision = TP / (TP + FP), recall = TP / (non-crowd ground truths), where TP is a
    detection matched to a non-crowd ground truth of its class and FP one matched to nothing
    (detections matched to crowd boxes are not counted). 0.0 when the denominator is 0.
    """
    if metric_type not in METRIC_TYPES:
        raise SpecError("validation_metric_type", f"{metric_type!r} is not one of {', '.join(METRIC_TYPES)}")
    if not 0.0 <= iou_threshold <= 1.0:
        raise SpecError("validation_iou_threshold", f"{iou_threshold} is outside [0, 1]")
    if len(records) != len(predictions):
        raise ValueError(f"{len(records)} images but {len(predictions)} prediction lists")
    if metric_type == "none":
        return {}

    gt, dt, max_dets = _coco_datasets(records, predictions, list(classes))
    at_iou = _run(gt, dt, [iou_threshold], max_dets, with_matches=True)
    tp, fp, n_gt, voc_ap = _voc(at_iou, gt, dt, len(classes))
    coco_ap = [_coco_ap(at_iou.eval["precision"][:, :, k]) for k in range(len(classes))]

    result: dict = {}
    per_label = voc_ap if metric_type != "coco" else coco_ap
    result["mean_average_precision"] = _mean(per_label)
    if metric_type in ("coco", "coco_voc"):
        standard = _run(gt, dt, COCO_IOU_THRESHOLDS, max_dets, with_matches=False)
        result["mean_average_precision_50_95"] = _mean(
            [_coco_ap(standard.eval["precision"][:, :, k]) for k in range(len(classes))])
    if metric_type == "coco_voc":
        result["mean_average_precision_coco"] = _mean(coco_ap)
    result["precision"] = tp / (tp + fp) if tp + fp else 0.0
    result["recall"] = tp / n_gt if n_gt else 0.0
    result["per_label_average_precision"] = dict(zip(classes, per_label))  # None (null): no ground truth
    return result


def voc_average_precision(is_true_positive: Sequence[bool], n_ground_truth: int) -> float:
    """All-point interpolated AP (VOC2010+) of detections sorted by descending score."""
    hits = np.asarray(is_true_positive, dtype=bool)
    tp, fp = np.cumsum(hits), np.cumsum(~hits)
    recall = np.concatenate(([0.0], tp / n_ground_truth, [1.0]))
    precision = np.concatenate(([0.0], tp / np.maximum(tp + fp, 1), [0.0]))
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # the precision envelope
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def _coco_datasets(records: Sequence[ImageRecord], predictions: Sequence[Sequence[Detection]],
                   classes: list[str]) -> tuple[COCO, COCO, int]:
    """COCO ground truth and detections in pixels; image i has id i+1, class k has id k+1."""
    category = {name: k + 1 for k, name in enumerate(classes)}
    images, gt_anns, dt_anns = [], [], []
    for index, (record, detections) in enumerate(zip(records, predictions)):
        width, height = record.width or 1, record.height or 1  # 1x1 when unknown: IoU does not depend on scale
        images.append({"id": index + 1, "width": width, "height": height})
        for box in record.boxes:
            if box.label not in category:
                raise DataError(f"ground-truth label {box.label!r} is not one of the model's classes {classes}",
                                file=str(record.path))
            gt_anns.append(_annotation(len(gt_anns) + 1, index + 1, category[box.label], width, height, box,
                                       iscrowd=int(box.is_crowd)))
        for det in detections:
            if det.label not in category:
                raise ValueError(f"predicted label {det.label!r} is not one of the classes {classes}")
            dt_anns.append(_annotation(len(dt_anns) + 1, index + 1, category[det.label], width, height, det,
                                       iscrowd=0, score=float(det.score)))
    categories = [{"id": k, "name": name} for name, k in category.items()]
    gt = COCO({"images": images, "categories": categories, "annotations": gt_anns}, print_function=_silent)
    dt = COCO({"images": images, "categories": categories, "annotations": dt_anns}, print_function=_silent)
    max_dets = max([100] + [len(d) for d in predictions])
    return gt, dt, max_dets


def _annotation(ann_id: int, image_id: int, category_id: int, width: int, height: int, box: Box | Detection,
                **extra) -> dict:
    x, y = box.top_x * width, box.top_y * height
    w, h = (box.bottom_x - box.top_x) * width, (box.bottom_y - box.top_y) * height
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": [x, y, w, h], "area": w * h,
            **extra}


def _silent(*_args, **_kwargs) -> None:
    pass


def _run(gt: COCO, dt: COCO, iou_thresholds, max_dets: int, with_matches: bool) -> COCOeval_faster:
    run = COCOeval_faster(gt, dt, "bbox", print_function=_silent, extra_calc=with_matches)
    params = run.params
    params.iouThrs = np.asarray(iou_thresholds, dtype=float)
    params.areaRng, params.areaRngLbl, params.maxDets = [[0.0, 1e10]], ["all"], [max_dets]
    run.evaluate()
    run.accumulate()
    if with_matches and not run.matched:
        raise RuntimeError("faster-coco-eval did not return its matches")
    return run


def _voc(run: COCOeval_faster, gt: COCO, dt: COCO, n_classes: int) -> tuple[int, int, int, list[float | None]]:
    """From the matches at one IoU threshold: total TP, FP, non-crowd ground truths, and VOC AP per class."""
    matched_gt = {int(d): int(g) for d, g in (key.split("_", 1) for key in run.eval["matched"])}
    per_class: list[list[tuple[float, bool]]] = [[] for _ in range(n_classes)]
    for ann_id, ann in dt.anns.items():  # ids ascend in (image, detection) order: ties break as COCO's do
        gt_id = matched_gt.get(ann_id)
        if gt_id is not None and gt.anns[gt_id]["iscrowd"]:
            continue  # matched to a crowd box: ignored
        per_class[ann["category_id"] - 1].append((ann["score"], gt_id is not None))
    n_gt = [0] * n_classes
    for ann in gt.anns.values():
        if not ann["iscrowd"]:
            n_gt[ann["category_id"] - 1] += 1
    ap: list[float | None] = []
    for dets, count in zip(per_class, n_gt):
        order = np.argsort([-score for score, _ in dets], kind="mergesort")
        ap.append(voc_average_precision([dets[i][1] for i in order], count) if count else None)
    tp = sum(hit for dets in per_class for _, hit in dets)
    fp = sum(len(dets) for dets in per_class) - tp
    return tp, fp, sum(n_gt), ap


def _coco_ap(precision: np.ndarray) -> float | None:
    """COCO AP of one class from its [T, R, A, M] slice of eval["precision"]; None (-1 there) without ground truth."""
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else None


def _mean(values: Sequence[float | None]) -> float:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else 0.0
