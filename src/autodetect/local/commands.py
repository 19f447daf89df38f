"""Subcommands of this area (see autodetect.cli)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    run = subparsers.add_parser(
        "run", help="run an experiment's trials on this machine (the embedded default)",
        description="Run a DetectionExperiment with each trial as a local process: trials sampled from its "
                    "search space, run in parallel, pruned early, the best registered as a DetectionModel under "
                    "RUNS_DIR/<experiment>/model. Ctrl-C stops cleanly; running it again resumes.")
    run.add_argument("experiment", type=Path, help="a DetectionExperiment YAML file")
    run.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where runs keep their state (default: runs)")
    run.add_argument("--parallel", type=_positive, default=None,
                     help="at most this many trials at once (default: spec.limits.maxConcurrentTrials); "
                          "never more than the CPU count, or with GPUs the GPU slots")
    run.add_argument("--trials-per-gpu", type=_positive, default=1,
                     help="trials packed on one GPU (each trial sees one GPU through CUDA_VISIBLE_DEVICES)")
    run.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from autodetect.local.runner import run_experiment

    return run_experiment(args.experiment, args.runs_dir, args.parallel, args.trials_per_gpu)
