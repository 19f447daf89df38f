"""Load a resource from YAML, validating all of it; errors name the failing field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from autodetect.api.v1alpha1 import KINDS
from autodetect.errors import SpecError

R = TypeVar("R", bound=BaseModel)


def _field_path(loc: tuple) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def parse_resource(obj: object, expected: type[R] | None = None, source: str = "<input>") -> R:
    """Validate a parsed YAML/JSON object as one of the four kinds (or the expected one)."""
    if not isinstance(obj, dict):
        raise SpecError(source, "a resource must be a mapping")
    from autodetect.api.azure import is_azure_job

    if is_azure_job(obj):
        raise SpecError(source, f"this is an Azure ML AutoML job, not an autodetect resource; convert it with "
                                f"`autodetect import azure {source} --out experiment.yaml`")
    kind = obj.get("kind")
    cls = expected or KINDS.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise SpecError(f"{source}: kind", f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    try:
        return cls.model_validate(obj)  # type: ignore[return-value]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = _field_path(first["loc"]) + first.get("ctx", {}).get("field", "")
        message = first["msg"].removeprefix("Value error, ")
        raise SpecError(f"{source}: {field}", message) from None


def read_yaml(path: str | Path) -> Any:
    """A YAML file's one document; a missing or malformed file is a SpecError naming it."""
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(str(path), "no such file") from None
    except yaml.YAMLError as exc:
        raise SpecError(str(path), f"not valid YAML: {exc}") from None


def load_resource(path: str | Path, expected: type[R] | None = None) -> R:
    return parse_resource(read_yaml(path), expected, str(path))
