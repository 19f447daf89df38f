"""Serve the emulator on its own: `python -m apiserver --crds crds --kubeconfig /tmp/kubeconfig` (from tests/).

For a benchmark whose operator runs in another process, or for a look with kubectl. Stops on Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from apiserver import Emulator


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m apiserver", description=__doc__.splitlines()[0])
    parser.add_argument("--crds", type=Path, action="append", default=[], help="a CRD file or a folder of them")
    parser.add_argument("--kubeconfig", type=Path, required=True, help="where to write the kubeconfig")
    parser.add_argument("--user", default="operator", help="the token, and so the user in the request log")
    parser.add_argument("--port", type=int, default=None, help="default: a free one")
    parser.add_argument("--no-builtin-validation", action="store_true",
                        help="skip the Kubernetes schemas of the built-in kinds (faster)")
    args = parser.parse_args()
    files = [f for path in args.crds for f in (sorted(path.glob("*.yaml")) if path.is_dir() else [path])]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    emulator = Emulator(crds=files, validate_builtins=not args.no_builtin_validation)
    with emulator.serve(port=args.port):
        emulator.kubeconfig(args.kubeconfig, user=args.user)
        print(f"serving {emulator.url} (kubeconfig {args.kubeconfig})", flush=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
