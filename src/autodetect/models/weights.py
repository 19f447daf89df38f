"""Where pretrained weights come from, for `pretrained: true` (Azure's default).

In order: the file or URL a trial names in `pretrained_weights`; a file already in the weights folder
($AUTODETECT_WEIGHTS_DIR; on a cluster the operator points it at the artifacts volume, so that every trial
shares it; else ~/.cache/autodetect/weights); else the family's standard COCO weights, downloaded once from
their publisher, or from the mirror at $AUTODETECT_WEIGHTS_URL, and checked against the publisher's hash:

- ultralytics' released checkpoints, whose sha256 digests GitHub lists in the release's JSON;
- torchvision's published weights, whose file names carry the first digits of their sha256 (torch.hub's check).

A mirror serves each file at <base>/<file> and its digest at <base>/<file>.sha256 (sha256sum's format); a
torchvision file's name is checked as well. Concurrent trials take a file lock, so that one downloads while
the others wait; an interrupted download resumes (HTTP Range) on the next try."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx

from autodetect.errors import AutodetectError, WeightsDownloadFailed, WeightsUnavailable

WEIGHTS_DIR_ENV = "AUTODETECT_WEIGHTS_DIR"
WEIGHTS_URL_ENV = "AUTODETECT_WEIGHTS_URL"
ULTRALYTICS_TAG = "v8.3.0"  # the assets release that holds yolov5u, yolov8 and yolo11 checkpoints
ULTRALYTICS_DOWNLOADS = f"https://github.com/ultralytics/assets/releases/download/{ULTRALYTICS_TAG}"
ULTRALYTICS_RELEASE_API = f"https://api.github.com/repos/ultralytics/assets/releases/tags/{ULTRALYTICS_TAG}"
TIMEOUT = httpx.Timeout(30.0, read=120.0)
CHUNK = 1 << 20


@dataclass(frozen=True)
class Release:
    """A publisher's weights file, and where its published hash is."""

    file: str
    url: str
    sha256_prefix: str = ""  # torchvision's: the hex digits after the last '-' in the file name
    release_api: str = ""  # GitHub's: a release's JSON, whose assets carry "digest": "sha256:..."
    digest_file: bool = False  # a mirror's: <url>.sha256

    def mirrored(self, base: str) -> Release:
        return Release(self.file, f"{base.rstrip('/')}/{self.file}", self.sha256_prefix, digest_file=True)


def ultralytics_release(file: str) -> Release:
    return Release(file, f"{ULTRALYTICS_DOWNLOADS}/{file}", release_api=ULTRALYTICS_RELEASE_API)


def torchvision_release(model_name: str) -> Release:
    import torchvision

    url = torchvision.models.get_model_weights(model_name).DEFAULT.url
    file = url.rsplit("/", 1)[1]
    return Release(file, url, sha256_prefix=re.fullmatch(r".*-([0-9a-f]{8,})\.pth", file).group(1))


def weights_dir() -> Path:
    return Path(os.environ.get(WEIGHTS_DIR_ENV) or Path.home() / ".cache" / "autodetect" / "weights")


def pretrained_weights_path(hyperparameters: dict[str, Any], release: Release, *also: str) -> Path | None:
    """The local file of the pretrained weights a trial asks for, or None with `pretrained: false`. Besides
    release.file, a file named as one of `also` in the weights folder is taken. Raises WeightsUnavailable,
    naming the file and the folder, when none can be had."""
    if not hyperparameters.get("pretrained"):
        return None
    model_name = hyperparameters["model_name"]
    if uri := hyperparameters.get("pretrained_weights"):
        return _named_file(model_name, uri)
    folder = weights_dir()
    for name in (release.file, *also):
        if (folder / name).is_file():
            return folder / name
    mirror = os.environ.get(WEIGHTS_URL_ENV)
    try:
        return fetch(release.mirrored(mirror) if mirror else release, folder)
    except WeightsUnavailable as exc:  # its class says whether a retry may help
        raise type(exc)(
            f"pretrained weights for {model_name} are unavailable: {exc}. Put {release.file} in {folder} "
            f"(${WEIGHTS_DIR_ENV}), set ${WEIGHTS_URL_ENV} to a mirror that serves it, point the hyperparameter "
            f"pretrained_weights at a weights file, or set pretrained: false to train from scratch") from None


def _named_file(model_name: str, uri: str) -> Path:
    from autodetect.storage import resolve_uri

    try:
        path = resolve_uri(uri)
    except AutodetectError as exc:
        raise WeightsUnavailable(f"pretrained weights for {model_name}: pretrained_weights {uri!r} could not be "
                                 f"fetched ({exc})") from None
    if not path.is_file():
        raise WeightsUnavailable(f"pretrained weights for {model_name}: pretrained_weights {uri!r}: no such file {path}")
    return path


def fetch(release: Release, folder: Path) -> Path:
    """release.file in folder, downloaded and checked first unless it is there; one process downloads at a time."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / release.file
    with _locked(folder / f".{release.file}.lock"), httpx.Client(timeout=TIMEOUT, follow_redirects=True) as client:
        if target.is_file():  # another trial downloaded it while this one waited
            return target
        expected = _published_sha256(client, release)
        partial = folder / f".{release.file}.partial"
        _download(client, release.url, partial)
        digest = _sha256(partial)
        if not digest.startswith(expected):
            partial.unlink()
            raise WeightsUnavailable(f"{release.url}: its sha256 is {digest}, not the published {expected}; "
                                     f"the download was discarded")
        os.replace(partial, target)
    return target


def _published_sha256(client: httpx.Client, release: Release) -> str:
    if release.release_api:
        assets = _get(client, release.release_api).json().get("assets", [])
        digest = next((a.get("digest") or "" for a in assets if a.get("name") == release.file), "")
        if not re.fullmatch(r"sha256:[0-9a-fA-F]{64}", digest):
            raise WeightsUnavailable(f"{release.release_api} publishes no sha256 digest for {release.file}")
        return digest.removeprefix("sha256:").lower()
    if release.digest_file:
        published = (_get(client, f"{release.url}.sha256").text.split() or [""])[0].lower()
        if not re.fullmatch(r"[0-9a-f]{64}", published):
            raise WeightsUnavailable(f"{release.url}.sha256 holds no sha256 digest")
        if not published.startswith(release.sha256_prefix):
            raise WeightsUnavailable(f"{release.url}.sha256 says {published}, but the file's name says "
                                     f"{release.sha256_prefix}")
        return published
    if not release.sha256_prefix:
        raise WeightsUnavailable(f"{release.url}: no published hash to check it against")
    return release.sha256_prefix


def _get(client: httpx.Client, url: str) -> httpx.Response:
    try:
        response = client.get(url)
        response.raise_for_status()
        return response
    except httpx.HTTPError as exc:
        raise _failure(exc)(f"{url} could not be fetched ({_why(exc)})") from None


def _download(client: httpx.Client, url: str, partial: Path) -> None:
    """Into partial, resuming what an interrupted try left there when the server supports ranges (a body cut
    short is an error here; one without a length is caught by the hash)."""
    have = partial.stat().st_size if partial.exists() else 0
    try:
        with client.stream("GET", url, headers={"Range": f"bytes={have}-"} if have else {}) as response:
            if response.status_code == 416:  # the partial file is already whole
                return
            response.raise_for_status()
            with partial.open("ab" if response.status_code == 206 else "wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
    except httpx.HTTPError as exc:
        failure = _failure(exc)
        then = "; a retry resumes it" if failure is WeightsDownloadFailed else ""
        raise failure(f"{url} could not be downloaded ({_why(exc)}){then}") from None


def _failure(exc: httpx.HTTPError) -> type[WeightsUnavailable]:
    """A 4xx (no such file, no access) is the configuration's fault; anything else may pass on a retry."""
    status = exc.response.status_code if isinstance(exc, httpx.HTTPStatusError) else None
    return WeightsUnavailable if status and 400 <= status < 500 and status not in (408, 429) else WeightsDownloadFailed


def _why(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
