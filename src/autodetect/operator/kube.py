"""The one Kubernetes API client of the operator and of the trainer's reporter: credentials the standard way
(the in-cluster service account, else a kubeconfig), and a small REST layer over the official client for the
kinds we read and write. A create that answers 409 AlreadyExists is success (names are deterministic)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable

import kubernetes
from kubernetes.client.exceptions import ApiException

from autodetect.vocabulary import GROUP, VERSION

MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class Resource:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None, name: str | None = None, subresource: str | None = None) -> str:
        prefix = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        path = prefix + (f"/namespaces/{namespace}" if namespace else "") + f"/{self.plural}"
        return path + (f"/{name}" if name else "") + (f"/{subresource}" if subresource else "")


EXPERIMENTS = Resource(GROUP, VERSION, "detectionexperiments", "DetectionExperiment")
TRIALS = Resource(GROUP, VERSION, "detectiontrials", "DetectionTrial")
MODELS = Resource(GROUP, VERSION, "detectionmodels", "DetectionModel")
DETECTION_DEPLOYMENTS = Resource(GROUP, VERSION, "detectiondeployments", "DetectionDeployment")
JOBS = Resource("batch", "v1", "jobs", "Job")
PODS = Resource("", "v1", "pods", "Pod")
EVENTS = Resource("", "v1", "events", "Event")
SECRETS = Resource("", "v1", "secrets", "Secret")
SERVICES = Resource("", "v1", "services", "Service")
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
HPAS = Resource("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler")
PDBS = Resource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget")
BY_KIND = {r.kind: r for r in (EXPERIMENTS, TRIALS, MODELS, DETECTION_DEPLOYMENTS, JOBS, PODS, EVENTS, SECRETS,
                               SERVICES, DEPLOYMENTS, HPAS, PDBS)}


def changes(existing: Any, patch: Any) -> bool:
    """Whether a JSON merge patch would change existing, where fields that existing has beyond the patch's are the
    API server's defaults (a container's terminationMessagePath): maps merge key by key, a list of as many items
    is compared item by item, anything else is replaced."""
    if isinstance(patch, dict) and isinstance(existing, dict):
        return any(changes(existing.get(key), value) if value is not None else key in existing
                   for key, value in patch.items())
    if isinstance(patch, list) and isinstance(existing, list) and len(patch) == len(existing):
        return any(changes(old, new) for old, new in zip(existing, patch))
    return existing != patch


def load_configuration(kubeconfig: str | None = None) -> kubernetes.client.Configuration:
    """The in-cluster service account when running in a pod, else the kubeconfig (--kubeconfig, $KUBECONFIG,
    ~/.kube/config)."""
    configuration = kubernetes.client.Configuration()
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    else:
        kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return configuration


class Api:
    """get/list/create/patch/replace-status/delete of plain dicts; every error is reported to on_error (metrics)
    and raised, except a create's 409 AlreadyExists and a delete's or get's 404."""

    def __init__(self, configuration: kubernetes.client.Configuration,
                 on_error: Callable[[str, Resource, int], None] | None = None, connections: int = 32):
        configuration.connection_pool_maxsize = connections  # one kept-alive connection for each pass under way
        self.client = kubernetes.client.ApiClient(configuration)
        self.on_error = on_error or (lambda verb, resource, status: None)

    def close(self) -> None:
        self.client.close()

    def _call(self, verb: str, resource: Resource, method: str, path: str, body: Any = None,
              query: dict[str, Any] | None = None, content_type: str = "application/json") -> Any:
        try:
            method, url, headers, body, _ = self.client.param_serialize(
                method=method, resource_path=path, body=body, auth_settings=["BearerToken"],
                query_params=[(k, v) for k, v in (query or {}).items() if v is not None],
                header_params={"Accept": "application/json", "Content-Type": content_type})
            response = self.client.call_api(method, url, header_params=headers, body=body)
            response.read()
            if not 200 <= response.status < 300:
                raise ApiException(http_resp=response)
        except ApiException as exc:
            self.on_error(verb, resource, exc.status)
            raise
        return json.loads(response.data)

    def get(self, resource: Resource, namespace: str | None, name: str) -> dict | None:
        try:
            return self._call("get", resource, "GET", resource.path(namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, resource: Resource, namespace: str | None, labels: dict[str, str] | None = None) -> list[dict]:
        selector = ",".join(f"{key}={value}" for key, value in (labels or {}).items()) or None
        return self._call("list", resource, "GET", resource.path(namespace), query={"labelSelector": selector})["items"]

    def create(self, obj: dict) -> dict | None:
        """The created object, or None when one of that name exists already."""
        resource = BY_KIND[obj["kind"]]
        namespace = obj["metadata"].get("namespace")
        try:
            return self._call("create", resource, "POST", resource.path(namespace), body=obj)
        except ApiException as exc:
            if exc.status == 409:
                return None
            raise

    def patch(self, resource: Resource, namespace: str | None, name: str, patch: dict,
              subresource: str | None = None) -> dict:
        return self._call("patch", resource, "PATCH", resource.path(namespace, name, subresource), body=patch,
                          content_type=MERGE_PATCH)

    def ensure(self, made: dict, patch: dict) -> dict:
        """The object as wanted: `made` created where there is none, else `patch` (a merge patch) applied where it
        changes the stored object, never a write for nothing. Returns the object as stored."""
        resource, meta = BY_KIND[made["kind"]], made["metadata"]
        existing = self.get(resource, meta.get("namespace"), meta["name"])
        if existing is None:
            if (created := self.create(made)) is not None:
                return created
        elif not changes(existing, patch):
            return existing
        return self.patch(resource, meta.get("namespace"), meta["name"], patch)

    def replace_status(self, obj: dict) -> dict:
        """Write obj's status; 409 when the object changed since it was read (metadata.resourceVersion)."""
        resource = BY_KIND[obj["kind"]]
        meta = obj["metadata"]
        return self._call("update", resource, "PUT", resource.path(meta.get("namespace"), meta["name"], "status"),
                          body=obj)

    def delete(self, resource: Resource, namespace: str | None, name: str) -> None:
        try:
            self._call("delete", resource, "DELETE", resource.path(namespace, name),
                       body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"})
        except ApiException as exc:
            if exc.status != 404:
                raise
