"""The patch types of PATCH requests: JSON Patch (RFC 6902, through `jsonpatch`), JSON merge patch (RFC 7386), and
strategic merge patch for the built-in kinds (lists of named items merged by their merge key, the `$patch` and
`$retainKeys` directives)."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import jsonpointer

from apiserver.errors import bad_request, unprocessable

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

# field name -> merge key of its list items, as the built-in types declare `patchMergeKey` (the fields we serve)
MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name", "env": "name",
    "volumes": "name", "volumeMounts": "mountPath", "volumeDevices": "devicePath", "imagePullSecrets": "name",
    "conditions": "type", "ownerReferences": "uid", "hostAliases": "ip", "resourceClaims": "name",
    "topologySpreadConstraints": "topologyKey", "secrets": "name",
}
# primitive lists merged as sets (`patchStrategy: merge` on a list of strings)
MERGED_SETS = {"finalizers"}


def json_patch(document: dict[str, Any], operations: Any) -> dict[str, Any]:
    if not isinstance(operations, list):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    try:
        return jsonpatch.apply_patch(document, operations)
    except jsonpatch.JsonPatchTestFailed as error:
        raise unprocessable(f"the server rejected our request due to an error in our request: {error}") from None
    except (jsonpatch.JsonPatchConflict, jsonpointer.JsonPointerException) as error:
        raise unprocessable(f"the server rejected our request due to an error in our request: {error}") from None
    except jsonpatch.InvalidJsonPatch as error:
        raise bad_request(str(error)) from None


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {key: copy.deepcopy(value) for key, value in patch.items() if key != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = dict(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [item for item in result.get(field) or [] if item not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and isinstance(result.get(key), list):
            result[key] = _merge_list(key, result[key], value)
        else:
            merged = strategic_merge_patch(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
    if retain is not None:
        result = {key: value for key, value in result.items() if key in retain}
    return result


def _merge_list(field: str, current: list[Any], patch: list[Any]) -> list[Any]:
    if field in MERGED_SETS:
        return current + [item for item in patch if item not in current]
    key = MERGE_KEYS.get(field)
    if field == "ports" and all(isinstance(item, dict) for item in patch):
        key = "containerPort" if any("containerPort" in item for item in patch + current) else "port"
    if key is None or not all(isinstance(item, dict) for item in patch):
        if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
            return [item for item in patch if not (isinstance(item, dict) and "$patch" in item)]
        return copy.deepcopy(patch)
    merged = [dict(item) if isinstance(item, dict) else item for item in current]
    for item in patch:
        if item.get("$patch") == "replace":  # `[{$patch: replace}, ...]`: the list is replaced by the rest
            return [copy.deepcopy(i) for i in patch if "$patch" not in i]
        index = next((i for i, old in enumerate(merged) if isinstance(old, dict) and old.get(key) == item.get(key)),
                     None)
        if item.get("$patch") == "delete":
            if index is not None:
                del merged[index]
        elif index is None:
            merged.append(strategic_merge_patch({}, item))
        else:
            merged[index] = strategic_merge_patch(merged[index], item)
    return merged
