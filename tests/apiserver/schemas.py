"""What the API server does to an object against its schema before it stores it.

Custom resources (a CRD version's structural `openAPIV3Schema`): unknown fields are pruned (kept under
`x-kubernetes-preserve-unknown-fields`), nulls of non-nullable fields dropped, defaults applied, then the object is
validated: the OpenAPI constraints with `jsonschema`, and the `x-kubernetes-validations` CEL rules with `cel-python`.

Built-in kinds: the Kubernetes 1.35 OpenAPI schemas that `kubernetes-validate` ships, for pruning unknown fields and
for type and required-field checks.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable, Iterator
from importlib import resources
from typing import Any

import celpy
import jsonschema
import referencing

PRESERVE = "x-kubernetes-preserve-unknown-fields"
OBJECT_META_FIELDS = frozenset({
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation", "creationTimestamp",
    "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences", "finalizers",
    "managedFields"})
KUBERNETES = "1.35"

Cause = tuple[str, str]  # (field path, message), as in a 422's details.causes


def field_path(parts: Iterator[Any] | list[Any]) -> str:
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _show(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, (dict, list)) else f'"{_type_name(value)}"'


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)


def prune(value: Any, node: dict[str, Any], resolve: Callable[[dict[str, Any]], dict[str, Any]],
          path: list[Any], dropped: list[str], structural: bool) -> Any:
    """Drop the fields a schema does not name; `structural`: an object node with no properties keeps nothing."""
    node = resolve(node)
    if isinstance(value, dict):
        props, extra = node.get("properties"), node.get("additionalProperties")
        preserve = node.get(PRESERVE, False)
        if props is None and not isinstance(extra, dict) and (preserve or not structural):
            return value
        for key in list(value):
            if props is not None and key in props:
                value[key] = prune(value[key], props[key], resolve, [*path, key], dropped, structural)
            elif isinstance(extra, dict):
                value[key] = prune(value[key], extra, resolve, [*path, key], dropped, structural)
            elif not preserve:
                dropped.append(field_path([*path, key]))
                del value[key]
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for index, item in enumerate(value):
            value[index] = prune(item, node["items"], resolve, [*path, index], dropped, structural)
    return value


def drop_nulls(value: Any, node: dict[str, Any]) -> Any:
    """A null where the schema does not say `nullable` is dropped before defaulting, as the server does."""
    if isinstance(value, dict):
        props, extra = node.get("properties") or {}, node.get("additionalProperties")
        for key in list(value):
            sub = props.get(key) or (extra if isinstance(extra, dict) else None)
            if sub is None:
                continue
            if value[key] is None and not sub.get("nullable"):
                del value[key]
            else:
                drop_nulls(value[key], sub)
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for item in value:
            drop_nulls(item, node["items"])
    return value


def apply_defaults(value: Any, node: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        props, extra = node.get("properties") or {}, node.get("additionalProperties")
        for key, sub in props.items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
        for key in value:
            sub = props.get(key) or (extra if isinstance(extra, dict) else None)
            if sub is not None:
                apply_defaults(value[key], sub)
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for item in value:
            apply_defaults(item, node["items"])
    return value


def to_jsonschema(node: dict[str, Any]) -> dict[str, Any]:
    """A structural schema node as draft-4 JSON schema: `nullable`, int-or-string, no Kubernetes extensions."""
    out = {key: value for key, value in node.items() if not key.startswith("x-kubernetes-") and key != "nullable"}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    if "properties" in node:
        out["properties"] = {name: to_jsonschema(sub) for name, sub in node["properties"].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            out[key] = to_jsonschema(node[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in node:
            out[key] = [to_jsonschema(sub) for sub in node[key]]
    if "not" in node:
        out["not"] = to_jsonschema(node["not"])
    return out


def _cause(error: jsonschema.ValidationError) -> Cause:
    path = list(error.absolute_path)
    field, value, bound = field_path(path), error.instance, error.validator_value
    where = field or "<root>"
    match error.validator:
        case "required":
            missing = next((name for name in bound if not isinstance(value, dict) or name not in value), "")
            return field_path([*path, missing]), "Required value"
        case "enum":
            supported = ", ".join(json.dumps(v) for v in bound if v is not None)
            return field, f"Unsupported value: {json.dumps(value)}: supported values: {supported}"
        case "type":
            wanted = bound if isinstance(bound, str) else next(b for b in bound if b != "null")
            return field, (f"Invalid value: {json.dumps(_type_name(value))}: {where} in body must be of type {wanted}: "
                           f"{json.dumps(_type_name(value))}")
        case "minimum" | "maximum":
            exclusive = error.schema.get(f"exclusive{error.validator.title()}") is True
            relation = {"minimum": "greater than", "maximum": "less than"}[error.validator]
            return field, (f"Invalid value: {_show(value)}: {where} in body should be {relation}"
                           f"{'' if exclusive else ' or equal to'} {bound}")
        case "minLength":
            return field, f"Invalid value: {_show(value)}: {where} in body should be at least {bound} chars long"
        case "maxLength":
            return field, f"Too long: may not be more than {bound} bytes"
        case "minItems":
            return field, f"Invalid value: {len(value)}: {where} in body should have at least {bound} items"
        case "maxItems":
            return field, f"Too many: {len(value)}: must have at most {bound} items"
        case "pattern":
            return field, f"Invalid value: {_show(value)}: {where} in body should match '{bound}'"
        case _:
            return field, f"Invalid value: {_show(value)}: {error.message}"


def changed_causes(validator: jsonschema.Validator, obj: dict[str, Any], old: dict[str, Any] | None) -> list[Cause]:
    """Validate the top-level parts that changed (a status write re-checks the status only), as the server's
    validation ratcheting lets an unchanged part stand."""
    schema = validator.schema
    causes = [(key, "Required value") for key in schema.get("required", ()) if key not in obj]
    for key, sub in (schema.get("properties") or {}).items():
        if key in obj and key != "metadata" and (old is None or obj[key] != old.get(key)):
            causes += [_cause(error) for error in validator.descend(obj[key], sub, path=key)]
    return causes


@functools.lru_cache(maxsize=512)
def _cel_program(rule: str) -> celpy.Runner:
    environment = celpy.Environment()
    return environment.program(environment.compile(rule))


def _cel_rules(value: Any, old: Any, node: dict[str, Any], path: list[Any], causes: list[Cause]) -> None:
    for rule in node.get("x-kubernetes-validations") or ():
        uses_old = "oldSelf" in rule["rule"]
        if uses_old and old is None:
            continue  # a transition rule only judges an update of a value that existed
        bindings = {"self": celpy.json_to_cel(value)}
        if uses_old:
            bindings["oldSelf"] = celpy.json_to_cel(old)
        try:
            passed = bool(_cel_program(rule["rule"]).evaluate(bindings))
            message = rule.get("message") or f"failed rule: {rule['rule']}"
        except celpy.CELEvalError as error:
            passed, message = False, f"{error.args[0] if error.args else error}"
        if not passed:
            where = path + [p for p in rule.get("fieldPath", "").lstrip(".").split(".") if p]
            causes.append((field_path(where), f"Invalid value: {_show(value)}: {message}"))
    if isinstance(value, dict):
        props, extra = node.get("properties") or {}, node.get("additionalProperties")
        for key, sub_value in value.items():
            sub = props.get(key) or (extra if isinstance(extra, dict) else None)
            if sub is not None:
                _cel_rules(sub_value, old.get(key) if isinstance(old, dict) else None, sub, [*path, key], causes)
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for index, item in enumerate(value):
            _cel_rules(item, None, node["items"], [*path, index], causes)


class CustomSchema:
    """One served version of a CRD: what the server does to a custom resource before storing it."""

    def __init__(self, schema: dict[str, Any]):
        self.schema = schema
        self.validator = jsonschema.Draft4Validator(to_jsonschema(schema))
        self.has_rules = "x-kubernetes-validations" in json.dumps(schema)

    def admit(self, obj: dict[str, Any], old: dict[str, Any] | None) -> tuple[dict[str, Any], list[str], list[Cause]]:
        """Prune, drop nulls, default, validate (in place); returns (object, dropped fields, causes of refusal)."""
        dropped: list[str] = []
        metadata = obj.pop("metadata", None)  # the server's own ObjectMeta, not the CRD's `type: object`
        obj = prune(obj, self.schema, lambda node: node, [], dropped, structural=True)
        apply_defaults(drop_nulls(obj, self.schema), self.schema)
        if isinstance(metadata, dict):
            for key in sorted(set(metadata) - OBJECT_META_FIELDS):
                dropped.append(f"metadata.{key}")
                del metadata[key]
            obj["metadata"] = metadata
        causes = changed_causes(self.validator, obj, old)
        if self.has_rules and not causes:
            _cel_rules(obj, old, self.schema, [], causes)
        return obj, dropped, causes


class BuiltinSchemas:
    """The OpenAPI schemas of the built-in kinds, as kubernetes-validate ships them for one Kubernetes release
    (`shared()` loads them once per process)."""

    @staticmethod
    @functools.cache
    def shared() -> BuiltinSchemas:
        return BuiltinSchemas()

    def __init__(self, version: str = KUBERNETES):
        self.folder = resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{version}.0-local"
        definitions = json.loads((self.folder / "_definitions.json").read_text())
        self.defs = definitions["$defs"]
        self.registry = referencing.Resource.from_contents(definitions) @ referencing.Registry()
        self._validators: dict[tuple[str, str], tuple[dict[str, Any], jsonschema.Validator] | None] = {}

    def _resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = {**self.defs[node["$ref"].split("#/$defs/", 1)[1]], **{k: v for k, v in node.items() if k != "$ref"}}
        return node

    def _schema(self, api_version: str, kind: str) -> tuple[dict[str, Any], jsonschema.Validator] | None:
        key = (api_version, kind)
        if key not in self._validators:
            group, _, version = api_version.rpartition("/")
            prefix = group.split(".", 1)[0] + "-" if group else ""
            path = self.folder / f"{kind.lower()}-{prefix}{version}.json"
            if not path.is_file():
                self._validators[key] = None
            else:
                schema = json.loads(path.read_text())
                validator = jsonschema.Draft202012Validator(schema, registry=self.registry)
                self._validators[key] = (schema, validator)
        return self._validators[key]

    def admit(self, obj: dict[str, Any], old: dict[str, Any] | None) -> tuple[dict[str, Any], list[str], list[Cause]]:
        found = self._schema(obj.get("apiVersion", ""), obj.get("kind", ""))
        if found is None:
            return obj, [], []
        schema, validator = found
        dropped: list[str] = []
        obj = prune(obj, schema, self._resolve, [], dropped, structural=False)
        # status is the controllers' to fill (the API server defaults what they have not yet written, such as an
        # HPA's desiredReplicas): its required fields are not checked
        return obj, dropped, [cause for cause in changed_causes(validator, obj, old)
                              if not (str(cause[0]).startswith("status") and cause[1] == "Required value")]
