"""Ultralytics YOLO (yolov5, yolov8, yolo11) behind the Detector interface.

Training is ultralytics' own loop (a DetectionTrainer subclass), offline and confined to the
workdir; evaluation is ours (the trainer's hook calls `predict`), so ultralytics' validator,
plots and final validation are switched off. How Azure's hyperparameters map:

- learning_rate -> lr0; optimizer sgd/adam/adamw -> SGD/Adam/AdamW; momentum, weight_decay as is
  (nbs = batch x gradient_accumulation_step, so ultralytics neither rescales weight_decay nor
  accumulates more than asked); nesterov (ultralytics always builds SGD with nesterov=True; we set
  it on the built optimizer); beta1/beta2/ams_gradient on Adam/AdamW (ultralytics uses momentum as beta1).
- learning_rate_scheduler: Azure's own curves replace ultralytics' linear/cosine ones.
  warmup_cosine: linear warmup over warmup_cosine_lr_warmup_epochs (ultralytics' per-iteration
  warmup, capped to leave one epoch), then 0.5 * (1 + cos(2 pi cycles progress)); step:
  gamma ** (epoch // step_size), no warmup.
- number_of_epochs -> epochs, training_batch_size -> batch, image_size -> imgsz,
  layers_to_freeze -> freeze, multi_scale -> multi_scale 0.5 (Azure's +/- 50%),
  random_seed -> seed, number_of_workers -> workers (ultralytics uses 0 on the CPU).
- early stopping is the trainer's (ultralytics' patience is off).
- On CUDA, AMP runs in bf16 where supported (fp32 otherwise): ultralytics' fp16 AMP check
  would download yolo26n.pt.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from copy import deepcopy
from functools import partial
from pathlib import Path
from typing import Any, Callable

# Before ultralytics is imported: no network, settings out of $HOME, quiet logs (the trainer reports).
os.environ.setdefault("YOLO_OFFLINE", "1")
_SCRATCH = Path(tempfile.gettempdir()) / f"autodetect-ultralytics-{os.getuid()}"
os.environ.setdefault("YOLO_CONFIG_DIR", str(_SCRATCH))
os.environ.setdefault("MPLCONFIGDIR", str(_SCRATCH / "matplotlib"))  # ultralytics imports matplotlib
os.environ.setdefault("YOLO_VERBOSE", "False")
os.environ["ULTRALYTICS_SAFE_LOAD"] = "1"  # every checkpoint ultralytics loads (resume too) is weights-only

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from ultralytics.data.augment import LetterBox  # noqa: E402
from ultralytics.data.utils import IMG_FORMATS  # noqa: E402
from ultralytics.models.yolo.detect import DetectionTrainer  # noqa: E402
from ultralytics.nn import tasks as _tasks  # noqa: E402
from ultralytics.nn.tasks import DetectionModel, torch_safe_load  # noqa: E402
from ultralytics.utils.nms import non_max_suppression  # noqa: E402
from ultralytics.utils.ops import scale_boxes  # noqa: E402
from ultralytics.utils import torch_utils  # noqa: E402
from ultralytics.utils.torch_utils import intersect_dicts  # noqa: E402

from autodetect.data.convert import yolo_label_line  # noqa: E402
from autodetect.data.dataset import Dataset, ImageRecord  # noqa: E402
from autodetect.errors import DataError, SpecError, WeightsUnavailable  # noqa: E402
from autodetect.models.base import Detection, Detector, EpochHook, PredictOptions, epoch_progress  # noqa: E402

# ultralytics resets torch's CPU threads to min(8, cores - 1) when it picks the device; keep the count the
# process was given (OMP_NUM_THREADS, which the local runner sets per trial), so parallel trials share the cores.
torch_utils.NUM_THREADS = torch.get_num_threads()
_tasks.SAFE_LOAD = True  # also when ultralytics was imported before the environment said so
from autodetect.models.weights import pretrained_weights_path, ultralytics_release  # noqa: E402

WEIGHTS_FILE = "model.pt"
SIZE_LETTERS = {"small": "s", "medium": "m", "large": "l", "xlarge": "x"}
OPTIMIZERS = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}
RUN_NAME = "run"  # ultralytics writes workdir/ultralytics/run/{weights/last.pt, results.csv, args.yaml}


def model_config(model_name: str, model_size: str) -> str:
    """The ultralytics model YAML, e.g. ("yolov8", "small") -> "yolov8s.yaml" (yolov5 is ultralytics' anchor-free v5u)."""
    if model_name not in ("yolov5", "yolov8", "yolo11"):
        raise SpecError("hyperparameters.model_name", f"{model_name!r} is not an ultralytics YOLO model")
    if model_size not in SIZE_LETTERS:
        raise SpecError("hyperparameters.model_size", f"{model_size!r} is not one of {', '.join(SIZE_LETTERS)}")
    return f"{model_name}{SIZE_LETTERS[model_size]}.yaml"


def pretrained_file_name(model_name: str, model_size: str) -> str:
    """The released ultralytics checkpoint of that architecture (yolov5 ones carry the 'u' suffix)."""
    stem = Path(model_config(model_name, model_size)).stem
    return f"{stem}u.pt" if model_name == "yolov5" else f"{stem}.pt"


def lr_factor(hp: dict[str, Any], epochs: int) -> Callable[[int], float]:
    """Azure's learning-rate curve as a factor of learning_rate per (0-based) epoch."""
    if hp["learning_rate_scheduler"] == "step":
        return partial(_step_factor, hp["step_lr_gamma"], hp["step_lr_step_size"])
    return partial(_cosine_factor, hp["warmup_cosine_lr_cycles"], hp["warmup_cosine_lr_warmup_epochs"], epochs)


def _step_factor(gamma: float, step_size: int, epoch: int) -> float:
    return gamma ** (epoch // step_size)


def _cosine_factor(cycles: float, warmup: int, epochs: int, epoch: int) -> float:
    progress = max(0, epoch - warmup) / max(1, epochs - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(2.0 * math.pi * cycles * progress)))


def default_device() -> str:
    return "0" if torch.cuda.is_available() else "cpu"


def train_args(hp: dict[str, Any], data_yaml: Path, project: Path, device: str) -> dict[str, Any]:
    """ultralytics train arguments for resolved Azure hyperparameters (see the module docstring)."""
    batch = hp["training_batch_size"]
    cuda = device != "cpu"
    return {
        "task": "detect", "mode": "train",
        "model": model_config(hp["model_name"], hp["model_size"]), "data": str(data_yaml),
        "epochs": hp["number_of_epochs"], "batch": batch, "imgsz": hp["image_size"],
        "optimizer": OPTIMIZERS[hp["optimizer"]], "lr0": hp["learning_rate"],
        "momentum": hp["momentum"], "weight_decay": hp["weight_decay"],
        "nbs": batch * hp["gradient_accumulation_step"],
        "warmup_epochs": hp["warmup_cosine_lr_warmup_epochs"] if hp["learning_rate_scheduler"] == "warmup_cosine" else 0,
        "freeze": hp["layers_to_freeze"] or None, "multi_scale": 0.5 if hp["multi_scale"] else 0.0,
        "seed": hp["random_seed"], "workers": hp["number_of_workers"], "device": device,
        "amp": ("bf16" if torch.cuda.is_bf16_supported() else False) if cuda else False,
        "pretrained": False,  # weights are loaded by us, before training (see YoloDetector.fit)
        "patience": 0, "val": False, "plots": False, "save": True,
        "project": str(project.resolve()), "name": RUN_NAME, "exist_ok": True, "verbose": False,
        "save_dir": str(project.resolve() / RUN_NAME),  # also on resume, should the workdir have moved
    }


def label_lines(record: ImageRecord, class_index: dict[str, int], source: str) -> list[str]:
    """YOLO txt lines (class cx cy w h, normalised); crowd boxes are left out as COCO training does."""
    lines = []
    for box in record.boxes:
        if box.is_crowd:
            continue
        if box.label not in class_index:
            raise DataError(f"{record.image_url}: label {box.label!r} is not one of the model's classes "
                            f"{sorted(class_index)}", file=source)
        lines.append(yolo_label_line(box, class_index[box.label]))
    return lines


def write_yolo_dataset(train: Dataset, validation: Dataset, classes: list[str], root: Path) -> Path:
    """ultralytics' layout under root (images as symlinks, labels as txt) and its data.yaml."""
    class_index = {name: i for i, name in enumerate(classes)}
    splits = {"train": train, "val": validation if len(validation) else train}
    for split, dataset in splits.items():
        images, labels = root / split / "images", root / split / "labels"
        for folder in (images, labels):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
        for i, record in enumerate(dataset.records):
            suffix = record.path.suffix.lower() or f".{record.format or ''}"
            if suffix.lstrip(".") not in IMG_FORMATS:
                raise DataError(f"{record.image_url}: image format {suffix!r} cannot be trained on", file=dataset.source)
            (images / f"{i:06d}{suffix}").symlink_to(record.path.resolve())
            lines = label_lines(record, class_index, dataset.source)
            (labels / f"{i:06d}.txt").write_text("".join(f"{line}\n" for line in lines))
    data_yaml = root / "data.yaml"
    data_yaml.write_text(yaml.safe_dump({"path": str(root.resolve()), "train": "train/images", "val": "val/images",
                                         "names": dict(enumerate(classes))}))
    return data_yaml


def pretrained_weights(hp: dict[str, Any]) -> Path | None:
    """The local weights file `pretrained: true` asks for (None without); WeightsUnavailable when there is none."""
    return pretrained_weights_path(hp, ultralytics_release(pretrained_file_name(hp["model_name"], hp["model_size"])))


def build_model(hp: dict[str, Any], classes: list[str], weights: Path | None) -> DetectionModel:
    """A fresh model of the configured architecture; every tensor that fits the weights file, if one is given,
    comes from it (ultralytics' transfer: all but the class-count-dependent head layers)."""
    config = model_config(hp["model_name"], hp["model_size"])
    model = DetectionModel(config, nc=len(classes), verbose=False)
    model.names = dict(enumerate(classes))
    if weights is not None:
        try:
            ckpt = safe_checkpoint(weights)
            source = (ckpt.get("ema") or ckpt["model"]).float()
        except WeightsUnavailable:
            raise
        except Exception as exc:  # any unreadable file: name it rather than surface ultralytics' internals
            raise WeightsUnavailable(f"{weights} is not an ultralytics checkpoint ({exc})") from None
        matched, total = len(intersect_dicts(source.state_dict(), model.state_dict())), len(model.state_dict())
        if matched < total // 2:
            raise WeightsUnavailable(f"{weights} does not fit {config}: only {matched} of {total} tensors match")
        model.load(source, verbose=False)
    return model


class _Trainer(DetectionTrainer):
    """ultralytics' detection trainer with Azure's optimizer and schedule, and without its own validation."""

    def __init__(self, hyperparameters: dict[str, Any], overrides: dict[str, Any]):
        self.hp = hyperparameters
        super().__init__(overrides=overrides)

    def _setup_scheduler(self):
        self.lf = lr_factor(self.hp, self.epochs)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda=self.lf)

    def build_optimizer(self, model, name="auto", lr=0.001, momentum=0.9, decay=1e-5, iterations=1e5):
        optimizer = super().build_optimizer(model, name, lr, momentum, decay, iterations)
        for group in optimizer.param_groups:
            if "nesterov" in group:
                group["nesterov"] = self.hp["nesterov"]
            if "betas" in group:
                group["betas"] = (self.hp["beta1"], self.hp["beta2"])
                group["amsgrad"] = self.hp["ams_gradient"]
        return optimizer

    def validate(self):
        return {}, None  # the hook evaluates with autodetect's evaluator

    def final_eval(self):
        pass  # no re-validation of best.pt, and last.pt keeps its optimizer state


class YoloDetector(Detector):
    family = "ultralytics"

    def __init__(self, hyperparameters: dict[str, Any], classes: list[str], model: torch.nn.Module | None = None):
        super().__init__(hyperparameters, classes)
        model_config(hyperparameters["model_name"], hyperparameters["model_size"])  # refuse a bad name or size now
        self.model = model  # the ultralytics DetectionModel (during training: the trainer's EMA)

    @property
    def input_size(self) -> dict[str, int]:
        return {"image_size": self.hyperparameters["image_size"]}

    # -- training ---------------------------------------------------------------------------

    def fit(self, train: Dataset, validation: Dataset, workdir: Path, on_epoch_end: EpochHook, resume: bool) -> None:
        root = Path(workdir) / "ultralytics"
        last, finished = root / RUN_NAME / "weights" / "last.pt", root / "finished"
        if resume and (finished.exists() or _finished_epochs(last) >= self.hyperparameters["number_of_epochs"]):
            self.model = _load_model(last)
            return
        resuming = resume and last.exists()
        if resuming:
            safe_checkpoint(last)  # refuse a planted last.pt before ultralytics' resume reads it
        weights = None if resuming else pretrained_weights(self.hyperparameters)  # fail before any work
        data_yaml = write_yolo_dataset(train, validation, self.classes, root / "data")
        finished.unlink(missing_ok=True)
        args = train_args(self.hyperparameters, data_yaml, root, default_device())
        trainer = _Trainer(self.hyperparameters, {**args, "resume": str(last)} if resuming else args)
        if not resuming:  # built after the trainer seeded torch; handed over as YOLO.train does
            trainer.model = build_model(self.hyperparameters, self.classes, weights)

        def after_epoch(t: _Trainer) -> None:  # after ultralytics saved this epoch's last.pt
            losses = {name: float(value) for name, value in (t.tloss or {}).items()}
            losses["loss"] = sum(losses.values())
            self.model = t.ema.ema
            if on_epoch_end(t.epoch + 1, losses, self):
                t.stop = True

        progress = None

        def before_epoch(t: _Trainer) -> None:
            nonlocal progress
            progress = epoch_progress(t.epoch + 1, len(t.train_loader))

        trainer.add_callback("on_train_epoch_start", before_epoch)
        trainer.add_callback("on_train_batch_end", lambda t: progress.update())
        trainer.add_callback("on_train_epoch_end", lambda t: progress.close())
        trainer.add_callback("on_fit_epoch_end", after_epoch)
        trainer.train()
        self.model = trainer.ema.ema
        finished.touch()

    # -- inference --------------------------------------------------------------------------

    def predict(self, images: list[np.ndarray], options: PredictOptions) -> list[list[Detection]]:
        model = self._require_model()
        stride = int(model.stride.max())
        size = math.ceil(self.hyperparameters["image_size"] / stride) * stride
        letterbox = LetterBox((size, size), auto=False, stride=stride)
        device = next(model.parameters()).device
        batch_size = self.hyperparameters["validation_batch_size"]
        results: list[list[Detection]] = []
        was_training = model.training
        model.eval()
        try:
            for start in range(0, len(images), batch_size):
                chunk = images[start:start + batch_size]
                batch = np.stack([letterbox(image=_rgb(image)) for image in chunk])  # RGB in, as trained
                x = torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).float().div_(255)
                with torch.no_grad():
                    kept = non_max_suppression(model(x), options.score_threshold, options.iou_threshold,
                                               max_det=options.max_detections)
                results.extend(self._detections(det, image.shape, size) for det, image in zip(kept, chunk))
        finally:
            model.train(was_training)
        return results

    def _detections(self, det: torch.Tensor, shape: tuple[int, ...], size: int) -> list[Detection]:
        height, width = shape[:2]
        boxes = scale_boxes((size, size), det[:, :4].clone(), (height, width)).cpu().numpy()
        scores, labels = det[:, 4].cpu().numpy(), det[:, 5].cpu().numpy().astype(int)
        return [Detection(self.classes[c], float(s), float(x1 / width), float(y1 / height), float(x2 / width),
                          float(y2 / height)) for (x1, y1, x2, y2), s, c in zip(boxes, scores, labels)]

    # -- artifacts --------------------------------------------------------------------------

    def save(self, directory: Path) -> str:
        """An ultralytics-format checkpoint (fp32, so a reload predicts exactly the same); `YOLO(path)` reads it too."""
        model = deepcopy(self._require_model()).float().cpu().eval()
        model.criterion = None
        model.names = dict(enumerate(self.classes))
        model.args = {"task": "detect", "imgsz": self.hyperparameters["image_size"]}
        Path(directory).mkdir(parents=True, exist_ok=True)
        torch.save({"model": model, "train_args": model.args}, Path(directory) / WEIGHTS_FILE)
        return WEIGHTS_FILE

    @classmethod
    def load(cls, directory: Path, card: dict[str, Any]) -> "YoloDetector":
        model = _load_model(Path(directory) / card.get("weights", WEIGHTS_FILE))
        return cls(card["hyperparameters"], card["classes"], model=model.to("cuda" if torch.cuda.is_available() else "cpu"))

    def export_onnx(self, path: Path) -> Path:
        """ONNX with input "images" (N x 3 x H x W, RGB in [0, 1], letterboxed with grey 114, dynamic N/H/W) and
        output "output0" (N x (4 + classes) x anchors: cx, cy, w, h in input pixels, then class scores); no NMS."""
        from ultralytics import YOLO

        path = Path(path)
        with tempfile.TemporaryDirectory() as tmp:
            weights = Path(tmp) / self.save(Path(tmp))
            exported = YOLO(str(weights), task="detect").export(
                format="onnx", imgsz=self.hyperparameters["image_size"], dynamic=True, simplify=False,
                half=False, nms=False, device="cpu", verbose=False)
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(exported, path)
        return path

    def _require_model(self) -> torch.nn.Module:
        if self.model is None:
            raise RuntimeError("the detector has no weights yet: fit or load it first")
        return self.model


def _rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got shape {image.shape} dtype {image.dtype}")
    return image


def safe_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint loaded weights-only (no pickled code runs); WeightsUnavailable naming the file otherwise."""
    try:
        ckpt = torch_safe_load(str(path), safe_only=True)[0]
    except Exception as exc:
        raise WeightsUnavailable(f"{path}: refused to load it: not a weights-only ultralytics checkpoint ({exc}). "
                                 "Delete the file if it is not yours; a trial retrains without it") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("ema") or ckpt.get("model"), torch.nn.Module):
        raise WeightsUnavailable(f"{path}: not an ultralytics checkpoint (no model in it)")
    return ckpt


def _finished_epochs(last: Path) -> int:
    if not last.exists():
        return 0
    return int(safe_checkpoint(last).get("epoch", -1)) + 1


def _load_model(weights: Path) -> torch.nn.Module:
    ckpt = safe_checkpoint(weights)
    return (ckpt.get("ema") or ckpt["model"]).float().eval()
