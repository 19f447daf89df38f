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


def _crds(args: argparse.Namespace) -> int:
    from autodetect.api.crds import all_crds, render, write

    if args.out is None:
        sys.stdout.write(render(all_crds()))
    else:
        for path in write(args.out):
            print(path)
    return 0
