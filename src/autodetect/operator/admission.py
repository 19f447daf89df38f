"""What the cluster refuses when a resource is applied (the validating webhook) and what the operator refuses
of a resource that got in without it: pydantic's validation of the four kinds (the field named), what a
cluster needs beyond a local run, and changes to a running experiment's spec beyond what may change."""

from __future__ import annotations

from typing import Any

from autodetect.api import DetectionExperiment, parse_resource
from autodetect.api.v1alpha1 import KINDS, MUTABLE_SPEC_FIELDS
from autodetect.errors import SpecError
from autodetect.tuning.engine import spec_changes


def _source(obj: dict[str, Any]) -> str:
    metadata = obj.get("metadata") or {}
    return f"{obj.get('kind', 'resource')} {metadata.get('namespace', '')}/{metadata.get('name', '')}"


def check_experiment(obj: dict[str, Any]) -> DetectionExperiment:
    """The experiment, valid for a cluster; SpecError names the failing field."""
    experiment = parse_resource(obj, DetectionExperiment, _source(obj))
    if not experiment.spec.artifacts.uri.startswith("pvc://"):
        raise SpecError(f"{_source(obj)}: spec.artifacts.uri", f"{experiment.spec.artifacts.uri!r}: on a cluster the "
                        "artifacts need a volume that outlives the trial pods: pvc://<claim>/<path>")
    return experiment


def check(obj: dict[str, Any], old: dict[str, Any] | None = None) -> None:
    """Raise SpecError for an object the cluster must refuse (old: the stored object, on an update)."""
    kind = obj.get("kind")
    if kind == "DetectionExperiment":
        experiment = check_experiment(obj)
        if old and old.get("spec"):
            before = parse_resource(old, DetectionExperiment, _source(old))
            if changed := spec_changes(before.spec, experiment.spec):
                allowed = " and ".join(f"spec.{field}" for field in MUTABLE_SPEC_FIELDS)
                raise SpecError(f"{_source(obj)}: {', '.join(changed)}",
                                f"may not change once the experiment exists; only {allowed} may")
    elif kind in KINDS:
        parse_resource(obj, KINDS[kind], _source(obj))
