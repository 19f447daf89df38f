"""One mAP evaluator for every model family, so that trials are comparable."""

from autodetect.evaluation.evaluator import METRIC_TYPES, evaluate, voc_average_precision

__all__ = ["METRIC_TYPES", "evaluate", "voc_average_precision"]
