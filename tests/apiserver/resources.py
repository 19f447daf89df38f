"""The resource types the emulator serves: the built-ins an operator of autodetect touches (their discovery facts
come from kmock's bundled discovery of a real cluster), and whatever the CustomResourceDefinitions declare."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import kmock

from apiserver.schemas import CustomSchema

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
SUBRESOURCE_VERBS = {"status": ("get", "patch", "update"), "log": ("get",), "finalize": ("update",)}

# group/version/plural -> the subresources served (status is split from the main resource for these)
BUILTINS = {
    "v1/namespaces": ("status", "finalize"),
    "v1/pods": ("status", "log"),
    "v1/events": (),
    "v1/secrets": (),
    "v1/services": ("status",),
    "v1/serviceaccounts": (),
    "v1/configmaps": (),
    "v1/persistentvolumeclaims": ("status",),
    "batch/v1/jobs": ("status",),
    "apps/v1/deployments": ("status",),
    "autoscaling/v2/horizontalpodautoscalers": ("status",),
    "policy/v1/poddisruptionbudgets": ("status",),
    "events.k8s.io/v1/events": (),
    "coordination.k8s.io/v1/leases": (),
    "admissionregistration.k8s.io/v1/validatingwebhookconfigurations": (),
    "apiextensions.k8s.io/v1/customresourcedefinitions": ("status",),
}

# field selectors each built-in supports besides metadata.name and metadata.namespace
FIELDS = {
    "v1/pods": ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
                "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName"),
    "v1/events": ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
                  "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath",
                  "reason", "reportingComponent", "source", "type"),
    "events.k8s.io/v1/events": ("regarding.kind", "regarding.namespace", "regarding.name", "regarding.uid",
                                "regarding.apiVersion", "reason", "reportingController", "type"),
    "v1/secrets": ("type",),
    "v1/namespaces": ("status.phase",),
    "batch/v1/jobs": ("status.successful",),
}

# Names: most kinds take an RFC 1123 subdomain; these take stricter forms
LABEL_NAMES = {"v1/namespaces"}
DNS1035_NAMES = {"v1/services"}
SHORT_NAMES = {"batch/v1/jobs"}  # a Job's name becomes a label value of its pods: 63 characters at most


@dataclasses.dataclass(eq=False)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    subresources: tuple[str, ...] = ()
    schema: CustomSchema | None = None
    printer_columns: tuple[dict[str, Any], ...] = ()
    fields: frozenset[str] = frozenset({"metadata.name", "metadata.namespace"})
    custom: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        return f"{self.api_version}/{self.plural}"

    @property
    def storage(self) -> tuple[str, str]:
        """Where objects live: all served versions of one resource share it."""
        return self.group, self.plural

    @property
    def group_resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    def discovery(self) -> list[dict[str, Any]]:
        entry = {"name": self.plural, "singularName": self.singular, "namespaced": self.namespaced, "kind": self.kind,
                 "verbs": list(self.verbs)}
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        if self.categories:
            entry["categories"] = list(self.categories)
        return [entry] + [{"name": f"{self.plural}/{sub}", "singularName": "", "namespaced": self.namespaced,
                           "kind": self.kind, "verbs": list(SUBRESOURCE_VERBS[sub])} for sub in self.subresources]


@functools.cache
def builtin_types() -> tuple[ResourceType, ...]:
    bundled = kmock.KubernetesEmulator().resources
    bundled.load_bundled()
    types = []
    for key, subresources in BUILTINS.items():
        info = bundled[key]
        parts = key.split("/")
        group, version, plural = parts if len(parts) == 3 else ("", *parts)
        types.append(ResourceType(
            group=group, version=version, plural=plural, kind=info.kind, singular=info.singular or info.kind.lower(),
            namespaced=bool(info.namespaced), short_names=tuple(sorted(info.shortnames)),
            categories=tuple(sorted(info.categories)), verbs=tuple(sorted(info.verbs)), subresources=subresources,
            fields=frozenset({"metadata.name", "metadata.namespace", *FIELDS.get(key, ())})))
    return tuple(types)


def custom_types(crd: dict[str, Any]) -> list[ResourceType]:
    """The resource types one CustomResourceDefinition serves, one per served version."""
    spec, names = crd["spec"], crd["spec"]["names"]
    types = []
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        selectable = [f["jsonPath"].lstrip(".") for f in version.get("selectableFields") or ()]
        types.append(ResourceType(
            group=spec["group"], version=version["name"], plural=names["plural"], kind=names["kind"],
            singular=names.get("singular") or names["kind"].lower(), namespaced=spec["scope"] == "Namespaced",
            short_names=tuple(names.get("shortNames") or ()), categories=tuple(names.get("categories") or ()),
            subresources=tuple(sub for sub in ("status",) if sub in (version.get("subresources") or {})),
            schema=CustomSchema(schema) if schema else None,
            printer_columns=tuple(version.get("additionalPrinterColumns") or ()),
            fields=frozenset({"metadata.name", "metadata.namespace", *selectable}), custom=True))
    return types
