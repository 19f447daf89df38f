"""What the API server's own strategies do to the built-in kinds we serve: defaults on create, the status a new
object starts with, and the validation rules that an operator meets first (names, labels, Job and Deployment
rules, immutable fields)."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import itertools
import re
from typing import Any

from apiserver.schemas import Cause

SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
QUALIFIED = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")

SUBDOMAIN_RULE = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                  "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                  "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
LABEL_RULE = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
              "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
              "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
DNS1035_RULE = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
                "character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for "
                "validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")
VALUE_RULE = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must "
              "start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used "
              "for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
KEY_RULE = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
            "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
            "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")

_cluster_ips = (str(ipaddress.ip_address("10.96.0.10") + n) for n in itertools.count())


def name_causes(key: str, name: str) -> list[Cause]:
    from apiserver.resources import DNS1035_NAMES, LABEL_NAMES, SHORT_NAMES
    if key in LABEL_NAMES:
        pattern, rule, limit = LABEL, LABEL_RULE, 63
    elif key in DNS1035_NAMES:
        pattern, rule, limit = DNS1035, DNS1035_RULE, 63
    else:
        pattern, rule, limit = SUBDOMAIN, SUBDOMAIN_RULE, 63 if key in SHORT_NAMES else 253
    causes = []
    if len(name) > limit:
        causes.append(("metadata.name", f'Invalid value: "{name}": must be no more than {limit} characters'))
    if not pattern.match(name):
        causes.append(("metadata.name", f'Invalid value: "{name}": {rule}'))
    return causes


def _key_causes(field: str, key: str) -> list[Cause]:
    prefix, _, name = key.rpartition("/")
    causes = []
    if prefix and (len(prefix) > 253 or not SUBDOMAIN.match(prefix)):
        causes.append((field, f'Invalid value: "{key}": prefix part {SUBDOMAIN_RULE}'))
    if not name or len(name) > 63 or not QUALIFIED.match(name):
        causes.append((field, f'Invalid value: "{key}": {KEY_RULE}'))
    return causes


def metadata_causes(meta: dict[str, Any], old: dict[str, Any] | None) -> list[Cause]:
    causes: list[Cause] = []
    for key, value in (meta.get("labels") or {}).items():
        causes += _key_causes("metadata.labels", key)
        if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
            causes.append(("metadata.labels", f'Invalid value: "{value}": {VALUE_RULE}'))
    for key in meta.get("annotations") or {}:
        causes += _key_causes("metadata.annotations", key)
    for index, ref in enumerate(meta.get("ownerReferences") or ()):
        for field in ("apiVersion", "kind", "name", "uid"):
            if not ref.get(field):
                causes.append((f"metadata.ownerReferences[{index}].{field}", "Required value"))
    if sum(1 for ref in meta.get("ownerReferences") or () if ref.get("controller")) > 1:
        causes.append(("metadata.ownerReferences", "Invalid value: []: Only one reference can have Controller set "
                                                   "to true"))
    if old is not None and (old.get("metadata") or {}).get("deletionTimestamp"):
        new = set(meta.get("finalizers") or ()) - set(old["metadata"].get("finalizers") or ())
        if new:
            causes.append(("metadata.finalizers", f"Forbidden: no new finalizers can be added if the object is being "
                                                  f"deleted, found new finalizers {sorted(new)}"))
    return causes


def _pod_spec_defaults(spec: dict[str, Any], restart: str = "Always") -> None:
    spec.setdefault("restartPolicy", restart)
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    for container in [*(spec.get("containers") or ()), *(spec.get("initContainers") or ())]:
        image = container.get("image", "")
        tag = image.rsplit("/", 1)[-1]
        latest = ":" not in tag or tag.endswith(":latest")
        container.setdefault("imagePullPolicy", "Always" if latest and "@" not in image else "IfNotPresent")
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        container.setdefault("resources", {})


def prepare_create(key: str, obj: dict[str, Any]) -> None:
    """Defaults and the starting status the real strategies give a new object (uid already stamped)."""
    meta, spec = obj["metadata"], obj.get("spec")
    if key == "v1/namespaces":
        meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
        obj["spec"] = {"finalizers": ["kubernetes"]}
        obj["status"] = {"phase": "Active"}
    elif key == "v1/pods":
        spec = obj.setdefault("spec", {})
        _pod_spec_defaults(spec)
        spec.setdefault("serviceAccountName", "default")
        spec.setdefault("serviceAccount", spec["serviceAccountName"])
        obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
    elif key == "batch/v1/jobs" and isinstance(spec, dict):
        uid, name = meta["uid"], meta["name"]
        own = {"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
               "controller-uid": uid, "job-name": name}
        if not spec.get("manualSelector"):
            spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
        template = spec.setdefault("template", {})
        template.setdefault("metadata", {}).setdefault("labels", {}).update(own)
        _pod_spec_defaults(template.setdefault("spec", {}), restart="Never")
        for field, value in (("parallelism", 1), ("completions", 1), ("backoffLimit", 6),
                             ("completionMode", "NonIndexed"), ("suspend", False),
                             ("podReplacementPolicy", "TerminatingOrFailed"), ("manualSelector", None)):
            if value is not None:
                spec.setdefault(field, value)
        obj["status"] = {}
    elif key == "apps/v1/deployments" and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        spec.setdefault("strategy", {"type": "RollingUpdate",
                                     "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        _pod_spec_defaults(spec.setdefault("template", {}).setdefault("spec", {}))
        obj["status"] = {}
    elif key == "v1/services" and isinstance(spec, dict):
        spec.setdefault("type", "ClusterIP")
        if spec.get("clusterIP") != "None":
            spec["clusterIP"] = spec.get("clusterIP") or next(_cluster_ips)
        spec["clusterIPs"] = [spec["clusterIP"]]
        spec.setdefault("sessionAffinity", "None")
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
        for port in spec.get("ports") or ():
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
        obj["status"] = {"loadBalancer": {}}
    elif key == "v1/persistentvolumeclaims":
        obj["status"] = {"phase": "Pending"}
    elif key in ("autoscaling/v2/horizontalpodautoscalers", "policy/v1/poddisruptionbudgets"):
        obj["status"] = {}


def prepare_update(key: str, obj: dict[str, Any], old: dict[str, Any]) -> None:
    """What an update may leave out and the server fills: defaults, as on every write (so that writing back what
    was read, less its defaults, is no change), and allocated values from the stored object."""
    spec = obj.get("spec")
    if key == "v1/pods" and isinstance(spec, dict):
        _pod_spec_defaults(spec)
    elif key in ("apps/v1/deployments", "batch/v1/jobs") and isinstance(spec, dict):
        _pod_spec_defaults(spec.setdefault("template", {}).setdefault("spec", {}),
                           restart="Never" if key == "batch/v1/jobs" else "Always")
    if key == "v1/services" and isinstance(obj.get("spec"), dict):
        for field in ("clusterIP", "clusterIPs"):
            if field not in obj["spec"] and field in (old.get("spec") or {}):
                obj["spec"][field] = old["spec"][field]


def prepare_write(key: str, obj: dict[str, Any]) -> list[Cause]:
    """On every write: Secret's stringData folded into data, base64 checked."""
    if key != "v1/secrets":
        return []
    obj.setdefault("type", "Opaque")
    causes = []
    data = obj.get("data") or {}
    for name, value in (obj.pop("stringData", None) or {}).items():
        data[name] = base64.b64encode(str(value).encode()).decode()
    for name, value in data.items():
        if not SECRET_KEY.match(name):
            causes.append((f"data[{name}]", f'Invalid value: "{name}": a valid config key must consist of '
                                            f"alphanumeric characters, '-', '_' or '.'"))
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError):
            causes.append((f"data[{name}]", "Invalid value: \"<secret contents redacted>\": illegal base64 data"))
    if data:
        obj["data"] = data
    return causes


def _selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or ():
        key, op, values = expression.get("key"), expression.get("operator"), expression.get("values") or []
        if (op == "In" and labels.get(key) not in values) or (op == "NotIn" and labels.get(key) in values) or \
                (op == "Exists" and key not in labels) or (op == "DoesNotExist" and key in labels):
            return False
    return True


def validate(key: str, obj: dict[str, Any], old: dict[str, Any] | None) -> list[Cause]:
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    causes: list[Cause] = []
    if key == "batch/v1/jobs":
        restart = ((spec.get("template") or {}).get("spec") or {}).get("restartPolicy")
        if restart not in ("OnFailure", "Never"):
            causes.append(("spec.template.spec.restartPolicy",
                           f'Unsupported value: "{restart}": supported values: "OnFailure", "Never"'))
        if old is not None:
            for field in ("template", "selector", "completionMode", "podFailurePolicy"):
                if spec.get(field) != (old.get("spec") or {}).get(field):
                    causes.append((f"spec.{field}", "Invalid value: ...: field is immutable"))
    elif key == "apps/v1/deployments":
        selector = spec.get("selector")
        labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        if not selector:
            causes.append(("spec.selector", "Required value"))
        elif not _selector_matches(selector, labels):
            causes.append(("spec.template.metadata.labels",
                           f"Invalid value: {labels}: `selector` does not match template `labels`"))
        if old is not None and selector != (old.get("spec") or {}).get("selector"):
            causes.append(("spec.selector", "Invalid value: ...: field is immutable"))
    elif key == "v1/services" and old is not None:
        if spec.get("clusterIP") != (old.get("spec") or {}).get("clusterIP"):
            causes.append(("spec.clusterIP", "Invalid value: ...: field is immutable"))
    return causes
