"""The client side of the scoring API: send one image, get Azure's response back."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import httpx

from autodetect.errors import AutodetectError


class ScoringFailed(AutodetectError):
    """The endpoint could not be reached or answered with an error."""


def scoring_url(endpoint: str) -> str:
    """The endpoint as given, or with /score appended when it names only the server."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ScoringFailed(f"{endpoint!r} is not an http(s) URL")
    return endpoint.rstrip("/") + "/score" if parts.path in ("", "/") else endpoint


def score_image(endpoint: str, image: Path, key: str | None = None, overrides: dict | None = None,
                timeout_s: float = 120.0) -> dict:
    """POST the image's bytes to the scoring endpoint; the parsed `{"filename", "boxes"}` response."""
    url = scoring_url(endpoint)
    try:
        data = Path(image).read_bytes()
    except OSError as exc:
        raise ScoringFailed(f"{image}: cannot read ({exc.strerror or exc})") from None
    headers = {"Content-Type": "application/octet-stream",
               "Content-Disposition": f'attachment; filename="{Path(image).name}"'}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    params = {k: v for k, v in (overrides or {}).items() if v is not None}
    try:
        response = httpx.post(url, content=data, headers=headers, params=params, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise ScoringFailed(f"{url}: {type(exc).__name__}: {exc}") from None
    if response.status_code != 200:
        try:
            reason = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            reason = response.text[:200]
        raise ScoringFailed(f"{url}: HTTP {response.status_code}: {reason}")
    return response.json()
