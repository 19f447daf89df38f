"""torchvision detectors (Faster R-CNN, RetinaNet, SSDlite) behind the Detector interface.

Models are built without any download (weights=None, weights_backbone=None); pretrained weights
come from models.weights. Training is a plain loop over the JSONL records: Azure's optimizers,
learning-rate schedules, layer freezing and gradient accumulation, a checkpoint after each epoch."""

from __future__ import annotations

import copy
import logging
import math
import os
import random
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autodetect.data.dataset import Dataset, ImageRecord
from autodetect.data.images import load_rgb
from autodetect.errors import SpecError, WeightsUnavailable
from autodetect.models.base import Detection, Detector, EpochHook, PredictOptions, epoch_progress
from autodetect.models.weights import pretrained_weights_path, torchvision_release

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
WEIGHTS_FILE = "model.pth"
SSD_SIZE = 320
ONNX_SCORE_THRESHOLD = 0.01  # baked into an exported graph; callers filter higher per request


def _kind(model_name: str) -> str:
    return model_name.split("_", 1)[0].removesuffix("320")  # fasterrcnn | retinanet | ssdlite


def threshold_kwargs(model_name: str, score: float, nms: float, detections: int) -> dict[str, Any]:
    if _kind(model_name) == "fasterrcnn":
        return {"box_score_thresh": score, "box_nms_thresh": nms, "box_detections_per_img": detections}
    return {"score_thresh": score, "nms_thresh": nms, "detections_per_img": detections}


def build_model(hyperparameters: dict[str, Any], num_classes: int) -> nn.Module:
    """An untrained torchvision detector; num_classes includes the background class."""
    from torchvision.models import detection

    name = hyperparameters["model_name"]
    kwargs = threshold_kwargs(name, hyperparameters["box_score_threshold"], hyperparameters["nms_iou_threshold"],
                              hyperparameters["box_detections_per_image"])
    if _kind(name) != "ssdlite":
        kwargs |= {"min_size": hyperparameters["min_size"], "max_size": hyperparameters["max_size"]}
    return getattr(detection, name)(weights=None, weights_backbone=None, num_classes=num_classes, **kwargs)


def set_thresholds(model: nn.Module, model_name: str, options: PredictOptions) -> None:
    holder = model.roi_heads if _kind(model_name) == "fasterrcnn" else model
    holder.score_thresh, holder.nms_thresh = options.score_threshold, options.iou_threshold
    holder.detections_per_img = options.max_detections


def backbone_layers(model: nn.Module) -> list[list[nn.Module]]:
    """The backbone's layers in input order, as layers_to_freeze counts them (a norm joins its conv)."""
    backbone = model.backbone
    if hasattr(backbone, "body"):  # FPN backbones: resnet50 or mobilenet_v3 features
        children = list(backbone.body.children())
    else:  # SSDlite: mobilenet_v3 features split in two stages
        children = [module for stage in backbone.features for module in stage.children()]
    layers: list[list[nn.Module]] = []
    for child in children:
        if next(child.parameters(), None) is None:
            continue
        if isinstance(child, nn.BatchNorm2d) and layers:
            layers[-1].append(child)
        else:
            layers.append([child])
    return layers


def lr_factor(hyperparameters: dict[str, Any], step: int, steps_per_epoch: int) -> float:
    """The learning-rate multiplier after `step` optimizer steps, as Azure AutoML schedules it.

    warmup_cosine: linear warm-up from 0 over warmup_cosine_lr_warmup_epochs, then
    0.5 * (1 + cos(pi * 2 * cycles * progress)) over the remaining steps.
    step: multiplied by step_lr_gamma every step_lr_step_size epochs."""
    if hyperparameters["learning_rate_scheduler"] == "step":
        return hyperparameters["step_lr_gamma"] ** (step // (hyperparameters["step_lr_step_size"] * steps_per_epoch))
    warmup = hyperparameters["warmup_cosine_lr_warmup_epochs"] * steps_per_epoch
    total = hyperparameters["number_of_epochs"] * steps_per_epoch
    if step < warmup:
        return step / max(1.0, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * hyperparameters["warmup_cosine_lr_cycles"] * 2.0 * progress)))


def make_optimizer(hyperparameters: dict[str, Any], params: list[nn.Parameter]) -> torch.optim.Optimizer:
    hp, lr = hyperparameters, hyperparameters["learning_rate"]
    if hp["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=hp["momentum"], weight_decay=hp["weight_decay"],
                               nesterov=hp["nesterov"] and hp["momentum"] > 0)
    adam = torch.optim.Adam if hp["optimizer"] == "adam" else torch.optim.AdamW
    return adam(params, lr=lr, betas=(hp["beta1"], hp["beta2"]), weight_decay=hp["weight_decay"], amsgrad=hp["ams_gradient"])


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.require(image, np.uint8, ["C", "W"])).permute(2, 0, 1).float().div_(255.0)


def to_target(record: ImageRecord, width: int, height: int, class_index: dict[str, int], flip: bool) -> dict[str, torch.Tensor]:
    """Pixel boxes and 1-based labels (0 is background); crowd boxes are left out of training."""
    boxes = [b for b in record.boxes if not b.is_crowd]
    xyxy = torch.tensor([[b.top_x, b.top_y, b.bottom_x, b.bottom_y] for b in boxes], dtype=torch.float32).reshape(-1, 4)
    if flip:
        xyxy = torch.stack([1.0 - xyxy[:, 2], xyxy[:, 1], 1.0 - xyxy[:, 0], xyxy[:, 3]], dim=1)
    xyxy *= torch.tensor([width, height, width, height], dtype=torch.float32)
    labels = torch.tensor([class_index[b.label] + 1 for b in boxes], dtype=torch.int64)
    return {"boxes": xyxy, "labels": labels}


class TrainingImages(torch.utils.data.Dataset):
    """Decoded images and targets, flipped horizontally at random (p = 0.5)."""

    def __init__(self, dataset: Dataset, classes: list[str]):
        self.records = dataset.records
        self.class_index = {name: i for i, name in enumerate(classes)}

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        record = self.records[i]
        image = load_rgb(record.path)
        flip = bool(torch.rand(()) < 0.5)
        if flip:
            image = image[:, ::-1]
        height, width = image.shape[:2]
        return to_tensor(image), to_target(record, width, height, self.class_index, flip)


def _collate(batch: list) -> tuple:
    return tuple(zip(*batch))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _save_atomically(obj: Any, path: Path) -> None:
    partial = path.with_name(path.name + ".partial")
    torch.save(obj, partial)
    os.replace(partial, path)


class TorchvisionDetector(Detector):
    family = "torchvision"

    def __init__(self, hyperparameters: dict[str, Any], classes: list[str], weights: Path | None = None):
        """Built untrained, then loaded from `weights` (an artifact) or else from the pretrained
        weights the hyperparameters ask for (WeightsUnavailable when they cannot be had)."""
        super().__init__(hyperparameters, classes)
        self.model_name = hyperparameters["model_name"]
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        _seed_everything(hyperparameters["random_seed"])  # the initial weights follow the seed too
        self.model = build_model(hyperparameters, len(self.classes) + 1)
        self._lock = threading.Lock()  # predict() sets thresholds on the shared model
        if weights is not None:
            self.model.load_state_dict(_load_weights_only(weights))
            self.pretrained = False
        else:
            path = pretrained_weights_path(hyperparameters, torchvision_release(self.model_name), f"{self.model_name}.pth")
            if path is not None:
                _load_pretrained(self.model, path, self.model_name)
            self.pretrained = path is not None
        self._frozen_norms = self._freeze()
        self.model.to(self.device)

    @property
    def input_size(self) -> dict[str, int]:
        if _kind(self.model_name) == "ssdlite":
            return {"image_size": SSD_SIZE}
        return {"min_size": self.hyperparameters["min_size"], "max_size": self.hyperparameters["max_size"]}

    def _freeze(self) -> list[nn.Module]:
        """Freeze the first layers_to_freeze backbone layers; with pretrained resnet/mobilenet FPN
        backbones also freeze every backbone norm, as torchvision does. Returns the norms to keep in eval."""
        layers, count = backbone_layers(self.model), self.hyperparameters["layers_to_freeze"]
        if count > len(layers):
            raise SpecError("hyperparameters.layers_to_freeze", f"{count} is more than the {len(layers)} backbone layers of {self.model_name}")
        frozen = [module for layer in layers[:count] for module in layer]
        if self.pretrained and _kind(self.model_name) != "ssdlite":
            frozen += [m for m in self.model.backbone.body.modules() if isinstance(m, nn.BatchNorm2d)]
        for module in frozen:
            module.requires_grad_(False)
        return [m for module in frozen for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def fit(self, train: Dataset, validation: Dataset, workdir: Path, on_epoch_end: EpochHook, resume: bool) -> None:
        hp = self.hyperparameters
        _seed_everything(hp["random_seed"])
        loader = torch.utils.data.DataLoader(
            TrainingImages(train, self.classes), batch_size=hp["training_batch_size"], shuffle=True,
            collate_fn=_collate, num_workers=hp["number_of_workers"],
            generator=torch.Generator().manual_seed(hp["random_seed"]))
        steps_per_epoch = math.ceil(len(loader) / hp["gradient_accumulation_step"])
        optimizer = make_optimizer(hp, [p for p in self.model.parameters() if p.requires_grad])
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(hp, step, steps_per_epoch))
        workdir.mkdir(parents=True, exist_ok=True)
        checkpoint, first = workdir / CHECKPOINT, 1
        if resume and checkpoint.exists():
            state = _load_weights_only(checkpoint)  # the optimizer moves its own
            self.model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"])
            loader.generator.set_state(state["loader_rng"])
            first = state["epoch"] + 1
            log.info("resuming after epoch %d", state["epoch"])
            # the hook may not have finished for that epoch before the kill; it skips what it has done
            if on_epoch_end(state["epoch"], state["losses"], self):
                return
        for epoch in range(first, hp["number_of_epochs"] + 1):
            losses = self._train_epoch(loader, optimizer, scheduler, epoch)
            if epoch % hp["checkpoint_frequency"] == 0 or epoch == hp["number_of_epochs"]:
                _save_atomically({"epoch": epoch, "losses": losses, "model": self.model.state_dict(),
                                  "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                  "rng": torch.get_rng_state(), "loader_rng": loader.generator.get_state()}, checkpoint)
            if on_epoch_end(epoch, losses, self):
                return

    def _train_epoch(self, loader, optimizer, scheduler, epoch: int) -> dict[str, float]:
        accumulate = self.hyperparameters["gradient_accumulation_step"]
        self.model.train()
        for norm in self._frozen_norms:
            norm.eval()
        sums: dict[str, float] = {}
        progress = epoch_progress(epoch, len(loader))
        optimizer.zero_grad()
        for i, (images, targets) in enumerate(loader, start=1):
            images = [image.to(self.device) for image in images]
            targets = [{k: v.to(self.device) for k, v in t.items()} for t in targets]
            loss_dict = self.model(images, targets)
            loss = sum(loss_dict.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"epoch {epoch}: the loss is {loss.item()} (try a lower learning_rate)")
            (loss / accumulate).backward()
            if i % accumulate == 0 or i == len(loader):
                optimizer.step()
                optimizer.zero_grad()
                scheduler.step()
            for key, value in (("loss", loss), *loss_dict.items()):
                sums[key] = sums.get(key, 0.0) + value.item()
            progress.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            progress.update()
        progress.close()
        return {key: total / len(loader) for key, total in sums.items()}

    def predict(self, images: list[np.ndarray], options: PredictOptions) -> list[list[Detection]]:
        if not images:
            return []
        with self._lock, torch.inference_mode():
            self.model.eval()
            set_thresholds(self.model, self.model_name, options)
            outputs = self.model([to_tensor(image).to(self.device) for image in images])
        return [self._detections(output, image.shape[1], image.shape[0]) for output, image in zip(outputs, images)]

    def _detections(self, output: dict[str, torch.Tensor], width: int, height: int) -> list[Detection]:
        boxes = (output["boxes"].cpu() / torch.tensor([width, height, width, height])).clamp_(0.0, 1.0).tolist()
        return [Detection(self.classes[label - 1], score, *box)
                for box, label, score in zip(boxes, output["labels"].tolist(), output["scores"].tolist())]

    def save(self, directory: Path) -> str:
        directory.mkdir(parents=True, exist_ok=True)
        _save_atomically(self.model.state_dict(), directory / WEIGHTS_FILE)
        return WEIGHTS_FILE

    @classmethod
    def load(cls, directory: Path, card: dict[str, Any]) -> "TorchvisionDetector":
        return cls(card["hyperparameters"], card["classes"], weights=Path(directory) / card.get("weights", WEIGHTS_FILE))

    def export_onnx(self, path: Path) -> Path:
        """ONNX (opset 17): input `image`, float32 [3, H, W] in [0, 1], any H and W; outputs `boxes`
        (pixels, xyxy), `labels` (1-based index into classes) and `scores`, at most
        box_detections_per_image, scores above ONNX_SCORE_THRESHOLD, NMS at nms_iou_threshold."""
        model = copy.deepcopy(self.model).cpu().eval()
        hp = self.hyperparameters
        set_thresholds(model, self.model_name, PredictOptions(ONNX_SCORE_THRESHOLD, hp["nms_iou_threshold"], hp["box_detections_per_image"]))
        size = SSD_SIZE if _kind(self.model_name) == "ssdlite" else hp["min_size"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            torch.onnx.export(_OnnxOutputs(model), (torch.rand(3, size, size),), str(path), opset_version=17, dynamo=False,
                              input_names=["image"], output_names=["boxes", "labels", "scores"],
                              dynamic_axes={"image": {1: "height", 2: "width"}, "boxes": {0: "detections"},
                                            "labels": {0: "detections"}, "scores": {0: "detections"}})
        return path


class _OnnxOutputs(nn.Module):
    """One image in, (boxes, labels, scores) out in that order whatever the model's dict order."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        output = self.model([image])[0]
        return output["boxes"], output["labels"], output["scores"]


def _load_pretrained(model: nn.Module, path: Path, model_name: str) -> None:
    """Load every tensor whose name and shape match (a COCO checkpoint's class head does not)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file means the same to the user
        raise WeightsUnavailable(f"{path}: not a readable torch weights file ({exc.__class__.__name__}: {exc})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):  # a training checkpoint
        state = state["model"]
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and getattr(v, "shape", None) == own[k].shape}
    if not usable:
        raise WeightsUnavailable(f"{path}: no tensor in it fits {model_name}; are these {model_name} weights?")
    model.load_state_dict(usable, strict=False)
    log.info("pretrained weights: %d of %d tensors loaded from %s", len(usable), len(own), path)


def _load_weights_only(path: Path) -> Any:
    """torch.load with weights_only (no pickled code runs); WeightsUnavailable naming the file otherwise."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise WeightsUnavailable(f"{path}: refused to load it: not a weights-only checkpoint "
                                 f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
