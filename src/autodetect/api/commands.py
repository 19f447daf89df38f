"""Subcommands of this area (see autodetect.cli): crds."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    crds = subparsers.add_parser(
        "crds", help="print the CustomResourceDefinitions of the four kinds",
        description="Print the four CRDs as one multi-document YAML (pipe it to `kubectl apply -f -`), "
                    "or with --out DIR write one file per kind.")
    crds.add_argument("--out", metavar="DIR", help="write <plural>.autodetect.dev.yaml files into DIR")
    crds.set_defaults(handler=_crds)

    imports = subparsers.add_parser("import", help="turn another platform's job into a DetectionExperiment")
    sources = imports.add_subparsers(dest="import_source", required=True, metavar="SOURCE")
    azure = sources.add_parser("azure", help="an Azure ML AutoML image object detection job (CLI v2 YAML)",
                               description="Writes the equivalent DetectionExperiment and lists, on stderr, "
                                           "what could not be carried over.")
    azure.add_argument("job", help="the Azure job YAML (type: automl, task: image_object_detection)")
    azure.add_argument("--out", help="the DetectionExperiment YAML to write (default: stdout)")
    azure.add_argument("--name", help="metadata.name (default: from experiment_name)")
    azure.set_defaults(handler=_import_azure)


def _crds(args: argparse.Namespace) -> int:
    from autodetect.api.crds import all_crds, render, write

    if args.out is None:
        sys.stdout.write(render(all_crds()))
    else:
        for path in write(args.out):
            print(path)
    return 0


def _import_azure(args: argparse.Namespace) -> int:
    from pathlib import Path

    import yaml

    from autodetect.api.azure import import_azure_job
    from autodetect.api.loader import parse_resource, read_yaml
    from autodetect.api.v1alpha1 import DetectionExperiment

    job = Path(args.job)
    experiment, dropped = import_azure_job(read_yaml(job), str(job), args.name, job.parent)
    parse_resource(experiment, DetectionExperiment, str(job))  # what is written is valid as it stands
    text = yaml.safe_dump(experiment, sort_keys=False)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    for item in dropped:
        print(f"not carried over: {item}", file=sys.stderr)
    return 0
