"""`autodetect train --trial trial.yaml [--workdir DIR] [--resume]`: run one DetectionTrial from a file, reporting to
files (the embedded default); `autodetect train --trial-ref NAMESPACE/NAME`: run the DetectionTrial of that name on
a cluster, reporting to its status (the trial pod's command; see autodetect.operator.reporter).

Exit status: 0 Succeeded or Pruned, 1 Failed, 2 bad input (spec, hyperparameters, data, weights)."""

from __future__ import annotations

import argparse
from pathlib import Path

TRIALS_DIR = Path("runs/trials")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train one trial (a DetectionTrial YAML) and write its artifact",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--trial", type=Path, help="DetectionTrial YAML")
    source.add_argument("--trial-ref", metavar="NAMESPACE/NAME", help="a DetectionTrial on the cluster")
    parser.add_argument("--workdir", type=Path, help="checkpoints, metrics and status (default: runs/trials/<name>)")
    parser.add_argument("--resume", action="store_true", help="continue after the last finished epoch, if any")
    parser.set_defaults(handler=train)


def train(args: argparse.Namespace) -> int:
    if args.trial_ref:
        from autodetect.operator.reporter import train_from_ref

        return train_from_ref(args.trial_ref)
    from autodetect.api import DetectionTrial, load_resource
    from autodetect.trainer.reporter import LocalReporter
    from autodetect.trainer.trainer import run_trial

    trial = load_resource(args.trial, DetectionTrial)
    workdir = args.workdir or TRIALS_DIR / trial.metadata.name
    reporter = LocalReporter(workdir, keep_previous=args.resume)
    return run_trial(trial, workdir, reporter, args.resume).exit_code
