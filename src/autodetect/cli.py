"""The `autodetect` command. Each area registers its own subcommands (a `register(subparsers)`
in its commands module) and imports its heavy dependencies only when its command runs."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from autodetect import __version__
from autodetect.errors import AutodetectError

COMMAND_MODULES = (
    "autodetect.api.commands",  # crds
    "autodetect.data.commands",  # convert, dataset {stats,synth,validate}, visualize
    "autodetect.trainer.commands",  # train
    "autodetect.local.commands",  # run
    "autodetect.serving.commands",  # serve, predict, export
    "autodetect.operator.commands",  # operator
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autodetect", description="AutoML for object detection")
    parser.add_argument("--version", action="version", version=f"autodetect {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # a line per request from the HTTP client is debug detail
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        code = int(args.handler(args) or 0)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at exit
        return code
    except AutodetectError as exc:
        print(f"autodetect: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `... | head` closed the pipe: stop quietly, as a Unix tool does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print("autodetect: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
