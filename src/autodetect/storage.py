"""Storage URIs -> local paths. The one resolver every part uses (trainer, runner, serving).

file:///abs or file://rel (relative to the current directory), pvc://<claim>/<path> (the claim is
mounted at $AUTODETECT_PVC_ROOT/<claim>, /mnt/pvc by default, as the operator mounts it), and
http(s):// for read-only downloads into a cache. A bare path is taken as a local file."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from autodetect.errors import AutodetectError

PVC_ROOT_ENV = "AUTODETECT_PVC_ROOT"
CACHE_ENV = "AUTODETECT_CACHE"


def resolve_uri(uri: str, base: Path | None = None) -> Path:
    """A local path for uri; relative paths are taken relative to base (default: the cwd)."""
    base = base or Path.cwd()
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        raw = uri.removeprefix("file://") if parsed.scheme else uri
        path = Path(raw)
        return path if path.is_absolute() else (base / path)
    if parsed.scheme == "pvc":
        root = Path(os.environ.get(PVC_ROOT_ENV, "/mnt/pvc"))
        relative = Path(parsed.netloc) / parsed.path.lstrip("/")
        path = (root / relative).resolve()
        if not path.is_relative_to(root.resolve()):
            raise AutodetectError(f"{uri}: escapes the volume")
        return path
    if parsed.scheme in ("http", "https"):
        return download(uri)
    raise AutodetectError(f"{uri}: unsupported storage scheme {parsed.scheme!r} (file, pvc, http, https)")


def download(url: str) -> Path:
    """Fetch a URL once into the cache (named by the URL's hash) and return the local file."""
    cache = Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "autodetect"))
    target = cache / hashlib.sha256(url.encode()).hexdigest()[:16] / (Path(urlparse(url).path).name or "download")
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(target.suffix + ".partial")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as out:  # noqa: S310 (scheme checked)
            shutil.copyfileobj(response, out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise AutodetectError(f"{url}: download failed ({exc})") from None
    partial.replace(target)
    return target


def write_atomic(path: Path, text: str) -> None:
    """Readers never see a half-written file: write beside it, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
