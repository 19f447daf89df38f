"""Server-side printing: the `Table` that `kubectl get` asks for, with a CRD's additionalPrinterColumns."""

from __future__ import annotations

import datetime
import re
from typing import Any

from apiserver.resources import ResourceType

NAME = {"name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": "Name must be unique within a namespace."}
AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp", "priority": 0}

# the columns a real server prints for the built-ins that people look at (besides Name and Age)
BUILTIN_COLUMNS = {
    "v1/pods": [{"name": "Status", "type": "string", "jsonPath": ".status.phase"},
                {"name": "Restarts", "type": "integer", "jsonPath": ".status.containerStatuses[0].restartCount"}],
    "batch/v1/jobs": [{"name": "Status", "type": "string",
                       "jsonPath": '.status.conditions[?(@.status=="True")].type'},
                      {"name": "Completions", "type": "integer", "jsonPath": ".status.succeeded"}],
    "apps/v1/deployments": [{"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
                            {"name": "Up-to-date", "type": "integer", "jsonPath": ".status.updatedReplicas"},
                            {"name": "Available", "type": "integer", "jsonPath": ".status.availableReplicas"}],
    "v1/services": [{"name": "Type", "type": "string", "jsonPath": ".spec.type"},
                    {"name": "Cluster-IP", "type": "string", "jsonPath": ".spec.clusterIP"}],
    "v1/namespaces": [{"name": "Status", "type": "string", "jsonPath": ".status.phase"}],
    "v1/events": [{"name": "Type", "type": "string", "jsonPath": ".type"},
                  {"name": "Reason", "type": "string", "jsonPath": ".reason"},
                  {"name": "Message", "type": "string", "jsonPath": ".message"}],
}

_STEP = re.compile(r"""\.([^.\[]+)|\[(\d+)\]|\[\?\(@\.([\w.]+)\s*==\s*["']([^"']*)["']\)\]""")


def json_path(obj: Any, path: str) -> Any:
    """The subset of kubectl's JSONPath printer columns use: `.a.b`, `[0]` and `[?(@.k=="v")]`."""
    values = [obj]
    for name, index, key, wanted in _STEP.findall(path):
        found = []
        for value in values:
            if name and isinstance(value, dict) and name in value:
                found.append(value[name])
            elif index and isinstance(value, list) and int(index) < len(value):
                found.append(value[int(index)])
            elif key and isinstance(value, list):
                found += [item for item in value
                          if isinstance(item, dict) and str(json_path(item, f".{key}")) == wanted]
        values = found
    return values[0] if len(values) == 1 else (values or None)


def human_duration(seconds: float) -> str:
    """As Kubernetes' duration.HumanDuration prints an age."""
    seconds = int(seconds)
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    return f"{hours // 24}d"


def _cell(obj: dict[str, Any], column: dict[str, Any], now: datetime.datetime) -> Any:
    value = json_path(obj, column["jsonPath"])
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    if column.get("type") == "date" and isinstance(value, str):
        try:
            then = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
        return human_duration((now - then).total_seconds())
    return value


def columns(rt: ResourceType) -> list[dict[str, Any]]:
    declared = list(rt.printer_columns) or [*BUILTIN_COLUMNS.get(rt.key, []), AGE]
    return [{"priority": 0, **column} for column in declared]


def table(rt: ResourceType, objects: list[dict[str, Any]], resource_version: str, include: str = "Metadata",
          ) -> dict[str, Any]:
    now = datetime.datetime.now(datetime.UTC)
    shown = columns(rt)
    definitions = [NAME] + [{"name": c["name"], "type": c.get("type", "string"), "format": c.get("format", ""),
                             "description": c.get("description", ""), "priority": c.get("priority", 0)}
                            for c in shown]
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": [obj["metadata"]["name"]] + [_cell(obj, c, now) for c in shown]}
        if include == "Object":
            row["object"] = obj
        elif include != "None":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": obj["metadata"]}
        rows.append(row)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version},
            "columnDefinitions": definitions, "rows": rows}
