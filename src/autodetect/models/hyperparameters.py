"""Azure AutoML's object-detection hyperparameters: names, both spellings, types, ranges and
per-family defaults. The one place that says what a trial may set; the trainer and the search
space both validate through `resolve`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autodetect.errors import SpecError

YOLO_MODELS = ("yolov5", "yolov8", "yolo11")
TORCHVISION_MODELS = (
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_resnet50_fpn_v2",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
    "retinanet_resnet50_fpn",
    "retinanet_resnet50_fpn_v2",
    "ssdlite320_mobilenet_v3_large",
)
MODEL_NAMES = YOLO_MODELS + TORCHVISION_MODELS
MODEL_SIZES = ("small", "medium", "large", "xlarge")
YOLO, TORCHVISION = "ultralytics", "torchvision"
BOTH = frozenset({YOLO, TORCHVISION})


def family_of(model_name: str) -> str:
    if model_name in YOLO_MODELS:
        return YOLO
    if model_name in TORCHVISION_MODELS:
        return TORCHVISION
    raise SpecError("model_name", f"unknown model {model_name!r}; known: {', '.join(MODEL_NAMES)}")


@dataclass(frozen=True)
class Param:
    name: str  # Azure's current (v2) spelling, used everywhere inside autodetect
    type: type
    default: Any  # a value, or a dict family -> value where Azure's defaults differ
    families: frozenset[str] = BOTH
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    aliases: tuple[str, ...] = ()  # the seed's (v1) spellings
    excluded_models: tuple[str, ...] = ()  # models of a family that do not take it

    def default_for(self, family: str) -> Any:
        return self.default[family] if isinstance(self.default, dict) else self.default

    def takes(self, model_name: str) -> bool:
        return family_of(model_name) in self.families and model_name not in self.excluded_models


def _p(name: str, type_: type, default: Any, **kw: Any) -> Param:
    return Param(name, type_, default, **kw)


_SSD = ("ssdlite320_mobilenet_v3_large",)
PARAMS: dict[str, Param] = {
    p.name: p
    for p in [
        _p("model_name", str, {YOLO: "yolov5", TORCHVISION: "fasterrcnn_resnet50_fpn"}, choices=MODEL_NAMES),
        _p("pretrained", bool, True),
        _p("pretrained_weights", str, None),
        _p("learning_rate", float, {YOLO: 0.01, TORCHVISION: 0.005}, low=0.0, high=1.0),
        _p("optimizer", str, "sgd", choices=("sgd", "adam", "adamw")),
        _p("momentum", float, 0.9, low=0.0, high=1.0),
        _p("weight_decay", float, 1e-4, low=0.0, high=1.0),
        _p("nesterov", bool, True),
        _p("beta1", float, 0.9, low=0.0, high=1.0),
        _p("beta2", float, 0.999, low=0.0, high=1.0),
        _p("ams_gradient", bool, False, aliases=("amsgrad",)),
        _p("learning_rate_scheduler", str, "warmup_cosine", choices=("warmup_cosine", "step"), aliases=("lr_scheduler",)),
        _p("warmup_cosine_lr_cycles", float, 0.45, low=0.0, high=1.0),
        _p("warmup_cosine_lr_warmup_epochs", int, 2, low=0),
        _p("step_lr_gamma", float, 0.5, low=0.0, high=1.0),
        _p("step_lr_step_size", int, 5, low=1),
        _p("number_of_epochs", int, {YOLO: 30, TORCHVISION: 15}, low=1),
        _p("training_batch_size", int, {YOLO: 16, TORCHVISION: 2}, low=1),
        _p("validation_batch_size", int, {YOLO: 16, TORCHVISION: 1}, low=1),
        _p("gradient_accumulation_step", int, 1, low=1),
        _p("layers_to_freeze", int, 0, low=0),
        _p("early_stopping", bool, True),
        _p("early_stopping_patience", int, 5, low=1),
        _p("early_stopping_delay", int, 5, low=0),
        _p("evaluation_frequency", int, 1, low=1),
        _p("checkpoint_frequency", int, 1, low=1),
        _p("number_of_workers", int, 0, low=0),
        _p("random_seed", int, 0, low=0),
        _p("validation_metric_type", str, "voc", choices=("none", "voc", "coco", "coco_voc")),
        _p("validation_iou_threshold", float, 0.5, low=0.0, high=1.0),
        _p("box_score_threshold", float, {YOLO: 0.1, TORCHVISION: 0.3}, low=0.0, high=1.0),
        _p("nms_iou_threshold", float, 0.5, low=0.0, high=1.0),
        _p("box_detections_per_image", int, 100, low=1, aliases=("box_detections_per_img",)),
        # YOLO only
        _p("image_size", int, 640, families=frozenset({YOLO}), low=32, aliases=("img_size",)),
        _p("model_size", str, "medium", families=frozenset({YOLO}), choices=MODEL_SIZES),
        _p("multi_scale", bool, False, families=frozenset({YOLO})),
        # torchvision only (SSDlite has a fixed 320 input)
        _p("min_size", int, 600, families=frozenset({TORCHVISION}), low=32, excluded_models=_SSD),
        _p("max_size", int, 1333, families=frozenset({TORCHVISION}), low=32, excluded_models=_SSD),
    ]
}
ALIASES: dict[str, str] = {alias: p.name for p in PARAMS.values() for alias in (p.name, *p.aliases)}


def canonical_name(name: str, where: str = "hyperparameters") -> str:
    try:
        return ALIASES[name]
    except KeyError:
        raise SpecError(f"{where}.{name}", f"unknown hyperparameter {name!r}") from None


def coerce(name: str, value: Any, where: str = "hyperparameters") -> Any:
    """Check one canonical hyperparameter's value against its type and range; return it typed."""
    p, field = PARAMS[name], f"{where}.{name}"
    if value is None and p.default is None:
        return None
    if p.type is bool:
        if not isinstance(value, bool):
            raise SpecError(field, f"expected true or false, got {value!r}")
    elif p.type is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise SpecError(field, f"expected an integer, got {value!r}")
        value = int(value)
    elif p.type is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(field, f"expected a number, got {value!r}")
        value = float(value)
    elif not isinstance(value, str):
        raise SpecError(field, f"expected a string, got {value!r}")
    if p.choices is not None and value not in p.choices:
        raise SpecError(field, f"{value!r} is not one of {', '.join(map(str, p.choices))}")
    if p.low is not None and value < p.low:
        raise SpecError(field, f"{value!r} is below the minimum {p.low}")
    if p.high is not None and value > p.high:
        raise SpecError(field, f"{value!r} is above the maximum {p.high}")
    return value


def resolve(given: dict[str, Any], where: str = "hyperparameters") -> dict[str, Any]:
    """Canonicalise spellings, refuse unknown or inapplicable names and bad values, fill defaults.

    Returns every hyperparameter the chosen model takes, under its canonical name."""
    canonical: dict[str, tuple[str, Any]] = {}  # canonical name -> (the spelling given, value)
    for name, value in given.items():
        key = canonical_name(name, where)
        if key in canonical:
            raise SpecError(f"{where}.{name}", f"given twice (as {canonical[key][0]!r} and {name!r})")
        canonical[key] = (name, value)
    model_name = coerce("model_name", canonical.get("model_name", ("", PARAMS["model_name"].default[YOLO]))[1], where)
    family = family_of(model_name)
    resolved = {"model_name": model_name}
    for key, (name, value) in canonical.items():
        if key != "model_name":
            if not PARAMS[key].takes(model_name):
                raise SpecError(f"{where}.{name}", f"model {model_name!r} does not take {name!r}")
            resolved[key] = coerce(key, value, where)
    for p in PARAMS.values():
        if p.takes(model_name) and p.name not in resolved:
            resolved[p.name] = p.default_for(family)
    if resolved["learning_rate"] <= 0:
        raise SpecError(f"{where}.learning_rate", "must be greater than 0")
    return resolved
