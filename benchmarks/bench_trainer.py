"""The trainer's overhead over ultralytics, and (where CUDA is) training throughput.

1. Wall time of a whole YOLO trial through autodetect (`run_trial`: data loading, ultralytics'
   training loop, our evaluation every epoch, the best artifact) against `YOLO(cfg).train(...)`
   called directly on the same data, epochs, image size, batch and optimizer, with ultralytics'
   own validation on (as ours evaluates) at the same thresholds as ours (box_score_threshold, 100 boxes,
   not its defaults conf 0.001 and 300 boxes). Ultralytics still validates best.pt once more at the end:
   one pass more than ours, left in and named here. Runs alternate (direct, ours, no-val, no-val, ours,
   direct, ...) so that drift in a shared machine's load falls on all. Target: ours / direct <= 1.05.
   ultralytics with val=False is printed too (it still validates the last epoch and best.pt).
2. With CUDA (or --throughput on): training images/s of yolov8n (yolov8n.yaml, through
   ultralytics) and fasterrcnn_resnet50_fpn (through build_detector), from the second epoch on.

    python benchmarks/bench_trainer.py                   # a couple of minutes on a small CPU
    python benchmarks/bench_trainer.py --images 256 --imgsz 640 --epochs 5 --batch 16   # on a GPU
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import autodetect.models.yolo as yolo  # first: sets ultralytics' offline environment before it is imported
import torch
from autodetect.api import DetectionTrial, parse_resource
from autodetect.data.dataset import read_jsonl
from autodetect.data.synth import synthesize
from autodetect.models.hyperparameters import resolve
from autodetect.trainer.trainer import run_trial


class QuietReporter:
    def report(self, epoch, metrics):
        pass

    def should_stop(self):
        return False

    def finish(self, phase, final_metric, artifact_uri, message=""):
        self.phase, self.message = phase, message


def hyperparameters(args: argparse.Namespace, model_name: str = "yolov8", model_size: str = "small") -> dict:
    return {"model_name": model_name, "model_size": model_size, "pretrained": False, "image_size": args.imgsz,
            "number_of_epochs": args.epochs, "training_batch_size": args.batch,
            "validation_batch_size": args.batch, "number_of_workers": args.workers, "early_stopping": False}


def ours(args, train_jsonl: Path, val_jsonl: Path, work: Path) -> float:
    trial = parse_resource({
        "apiVersion": "autodetect.dev/v1alpha1", "kind": "DetectionTrial", "metadata": {"name": "bench"},
        "spec": {"experiment": "bench", "hyperparameters": hyperparameters(args),
                 "dataset": {"training": {"uri": str(train_jsonl)}, "validation": {"uri": str(val_jsonl)}},
                 "artifacts": {"uri": f"file://{work}/artifacts/"}}}, DetectionTrial)
    reporter = QuietReporter()
    start = time.perf_counter()
    run_trial(trial, work / "trial", reporter, resume=False)
    seconds = time.perf_counter() - start
    if reporter.phase != "Succeeded":
        sys.exit(f"our trial ended {reporter.phase}: {reporter.message}")
    return seconds


def direct(args, train_jsonl: Path, val_jsonl: Path, work: Path, val: bool = True) -> float:
    from ultralytics import YOLO

    start = time.perf_counter()
    train, validation = read_jsonl(train_jsonl), read_jsonl(val_jsonl)
    data_yaml = yolo.write_yolo_dataset(train, validation, train.classes, work / "data")
    hp = resolve(hyperparameters(args))
    # like with like: ultralytics validates at ours' thresholds (its defaults, conf 0.001 and 300 boxes, cost more)
    train_args = {**yolo.train_args(hp, data_yaml, work, yolo.default_device()), "val": val,
                  "conf": hp["box_score_threshold"], "max_det": hp["box_detections_per_image"]}
    for key in ("task", "mode", "model", "pretrained"):
        train_args.pop(key)
    YOLO(yolo.model_config(hp["model_name"], hp["model_size"]), task="detect").train(pretrained=False, **train_args)
    return time.perf_counter() - start


def overhead(args, work: Path) -> None:
    train_jsonl = synthesize(work / "train", classes=3, images=args.images, size=args.image_px, seed=1)
    val_jsonl = synthesize(work / "val", classes=3, images=args.val_images, size=args.image_px, seed=2)
    paths = {"direct": direct, "ours": ours, "no-val": partial(direct, val=False)}
    times: dict[str, list[float]] = {name: [] for name in paths}
    order = [name for _ in range(args.repeats) for name in ("direct", "ours", "no-val", "no-val", "ours", "direct")]
    order = order[:3 * args.repeats]
    for i, name in enumerate(order):
        run = paths[name](args, train_jsonl, val_jsonl, work / f"{name}{i}")
        times[name].append(run)
        print(f"  run {i + 1}/{len(order)}: {name:6s} {run:7.1f} s", flush=True)
    print(f"\nyolov8 small, {args.images} train / {args.val_images} val images of {args.image_px} px, imgsz {args.imgsz}, "
          f"batch {args.batch}, {args.epochs} epochs, device {yolo.default_device()}, torch threads {torch.get_num_threads()}")
    print(f"{'path':44s} {'mean s':>8s} {'min s':>8s}")
    labels = {"direct": "ultralytics YOLO(cfg).train, val on", "ours": "autodetect run_trial (evaluates every epoch)",
              "no-val": "ultralytics, val=False (last epoch + best.pt)"}
    for name in ("direct", "ours", "no-val"):
        print(f"{labels[name]:44s} {statistics.mean(times[name]):8.1f} {min(times[name]):8.1f}")
    ratio_mean = statistics.mean(times["ours"]) / statistics.mean(times["direct"])
    ratio_min = min(times["ours"]) / min(times["direct"])
    verdict = "meets" if ratio_min <= 1.05 else "misses"
    print(f"{'ratio ours / direct':44s} {ratio_mean:8.3f} {ratio_min:8.3f}   ({verdict} the 1.05 target)")


def yolov8n_images_per_second(args, work: Path, train_jsonl: Path) -> float:
    from ultralytics import YOLO

    train = read_jsonl(train_jsonl)
    data_yaml = yolo.write_yolo_dataset(train, train, train.classes, work / "data")
    model, starts, seconds = YOLO("yolov8n.yaml", task="detect"), {}, []
    model.add_callback("on_train_epoch_start", lambda t: starts.__setitem__(t.epoch, time.perf_counter()))
    model.add_callback("on_train_epoch_end", lambda t: seconds.append(time.perf_counter() - starts[t.epoch]))
    cuda = torch.cuda.is_available()
    model.train(data=str(data_yaml), epochs=args.throughput_epochs, imgsz=args.throughput_imgsz,
                batch=args.throughput_batch, device="0" if cuda else "cpu", val=False, plots=False,
                amp="bf16" if cuda else False,  # fp16 AMP's check would download weights
                pretrained=False, project=str(work), name="n", exist_ok=True, workers=args.workers)
    return len(train) / statistics.mean(seconds[1:] or seconds)


def fasterrcnn_images_per_second(args, train_jsonl: Path, work: Path) -> float:
    from autodetect.models.registry import build_detector

    train = read_jsonl(train_jsonl)
    hp = resolve({"model_name": "fasterrcnn_resnet50_fpn", "pretrained": False,
                  "number_of_epochs": args.throughput_epochs, "training_batch_size": args.throughput_batch,
                  "number_of_workers": args.workers, "min_size": args.throughput_imgsz,
                  "max_size": args.throughput_imgsz})
    stamps = [time.perf_counter()]

    def stamp(epoch, losses, detector) -> bool:
        stamps.append(time.perf_counter())
        return False

    build_detector(hp, train.classes).fit(train, train, work, stamp, False)
    epochs = [b - a for a, b in zip(stamps[1:], stamps[2:])] or [stamps[1] - stamps[0]]  # from the 2nd epoch
    return len(train) / statistics.mean(epochs)


def throughput(args, work: Path) -> None:
    train_jsonl = synthesize(work / "train", classes=3, images=args.throughput_images, size=args.throughput_imgsz, seed=3)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(f"\ntraining throughput on {device}: {args.throughput_images} images of {args.throughput_imgsz} px, "
          f"batch {args.throughput_batch}, {args.throughput_epochs} epochs (first epoch not counted)")
    print(f"{'model':28s} {'images/s':>9s}")
    print(f"{'yolov8n':28s} {yolov8n_images_per_second(args, work / 'yolov8n', train_jsonl):9.1f}", flush=True)
    print(f"{'fasterrcnn_resnet50_fpn':28s} {fasterrcnn_images_per_second(args, train_jsonl, work / 'frcnn'):9.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=24, help="training images")
    parser.add_argument("--val-images", type=int, default=8, help="validation images")
    parser.add_argument("--image-px", type=int, default=128, help="side of the synthetic images")
    parser.add_argument("--imgsz", type=int, default=96, help="image_size / imgsz of training")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each path (alternating)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="data loader workers (ultralytics uses 0 on a CPU)")
    parser.add_argument("--throughput", choices=("auto", "on", "off"), default="auto",
                        help="measure images/s: auto = only where CUDA is available")
    parser.add_argument("--throughput-images", type=int, default=512)
    parser.add_argument("--throughput-imgsz", type=int, default=640)
    parser.add_argument("--throughput-batch", type=int, default=16)
    parser.add_argument("--throughput-epochs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as tmp:
        overhead(args, Path(tmp) / "overhead")
        if args.throughput == "on" or (args.throughput == "auto" and torch.cuda.is_available()):
            throughput(args, Path(tmp) / "throughput")


if __name__ == "__main__":
    main()
