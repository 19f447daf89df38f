"""Bearer-key authentication. Keys come from a file (one a line; where a Kubernetes Secret is
mounted) and/or the AUTODETECT_API_KEYS environment variable (comma-separated; where a Secret
is exposed as env). Keys are compared in constant time, against every key, so neither the match
nor its position leaks through timing."""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from autodetect.errors import SpecError
from autodetect.serving.errors import Unauthorized

ENV_KEYS = "AUTODETECT_API_KEYS"


def load_keys(keys_file: Path | None = None, env: dict[str, str] | None = None) -> frozenset[str]:
    """The union of the keys in keys_file (blank lines and #-comments skipped) and in $AUTODETECT_API_KEYS."""
    keys: set[str] = set()
    if keys_file is not None:
        try:
            lines = Path(keys_file).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise SpecError("keys_file", f"{keys_file}: cannot read ({exc.strerror or exc})") from None
        keys.update(s for s in (line.strip() for line in lines) if s and not s.startswith("#"))
    env_value = (os.environ if env is None else env).get(ENV_KEYS, "")
    keys.update(s for s in (part.strip() for part in env_value.split(",")) if s)
    return frozenset(keys)


def check_bearer(authorization: str | None, keys: frozenset[str]) -> None:
    """Raise Unauthorized unless the Authorization header is `Bearer <one of keys>`."""
    if not authorization:
        raise Unauthorized("missing Authorization header; send 'Authorization: Bearer <key>'")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <key>'")
    given = token.strip().encode()
    matches = [hmac.compare_digest(given, key.encode()) for key in keys]  # no short-circuit
    if not any(matches):
        raise Unauthorized("invalid API key")
