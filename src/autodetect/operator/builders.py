"""Pure builders of the objects the operator sends to Kubernetes: each returns a plain dict, from the typed
resources and the engine's decisions, and reads nothing else (no client, no clock unless given)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlparse

from autodetect.api.v1alpha1 import DetectionDeployment, DetectionExperiment, DetectionModel, DetectionTrial
from autodetect.storage import PVC_ROOT_ENV
from autodetect.tuning.events import Event
from autodetect.tuning.trials import STOP_GRACE_S
from autodetect.vocabulary import DEPLOYMENT_LABEL, EXIT_BAD_INPUT, EXPERIMENT_LABEL, GROUP, TRIAL_LABEL

PVC_ROOT = "/mnt/pvc"
TRAINER_CONTAINER = "trainer"
WEIGHTS_DIR = ".weights"  # under the artifacts folder: pretrained weights, downloaded once for every trial
TRIALS_WORK_DIR = ".trials"  # under the artifacts folder: each trial's checkpoints, kept across its retries
COMPONENT = f"{GROUP}/operator"
MESSAGE_LIMIT = 1024  # an Event's message is cut here, as the API server would


@dataclass(frozen=True)
class TrialPodSettings:
    """What the operator's installation decides for every trial pod (the chart's values)."""

    service_account: str = "autodetect-trial"
    run_as_user: int = 10001  # the images' user


def meta(obj: Any) -> dict[str, Any]:
    return obj.metadata.model_dump(mode="json", exclude_none=True) if hasattr(obj, "metadata") else obj["metadata"]


def owner_reference(owner: Any) -> dict[str, Any]:
    """A controller ownerReference: the owner's deletion deletes the dependent (garbage collection)."""
    m = meta(owner)
    kind = owner.kind if hasattr(owner, "kind") else owner["kind"]
    api_version = owner.apiVersion if hasattr(owner, "apiVersion") else owner["apiVersion"]
    return {"apiVersion": api_version, "kind": kind, "name": m["name"], "uid": m["uid"], "controller": True,
            "blockOwnerDeletion": True}


def resource_dict(resource: Any, *, owner: Any = None, with_status: bool = False) -> dict[str, Any]:
    """A typed resource as the object to create: its metadata reduced to what a create may carry."""
    body = resource.model_dump(mode="json", exclude_none=True, exclude=None if with_status else {"status"})
    kept = {k: v for k, v in body["metadata"].items() if k in ("name", "namespace", "labels", "annotations") and v}
    if owner is not None:
        kept["ownerReferences"] = [owner_reference(owner)]
    return {**body, "metadata": kept}


def trial_object(trial: DetectionTrial, experiment: DetectionExperiment) -> dict[str, Any]:
    """A new trial, owned by its experiment."""
    return resource_dict(trial, owner=experiment)


def model_object(model: DetectionModel) -> dict[str, Any]:
    """The registered model: not owned by the experiment, it outlives the run (as Azure's registry does)."""
    return resource_dict(model)


def job_name(trial: str, attempt: int) -> str:
    return f"{trial}-{attempt}"


def pvc_claim(uri: str) -> str | None:
    parsed = urlparse(uri)
    return parsed.netloc if parsed.scheme == "pvc" else None


def _volumes(experiment: DetectionExperiment, shm_size: str) -> tuple[list[dict], list[dict]]:
    """The claims the trial reads (data, read-only) and writes (artifacts), memory-backed /dev/shm, and /tmp."""
    spec = experiment.spec
    artifacts = pvc_claim(spec.artifacts.uri)
    data = [pvc_claim(spec.dataset.training.uri)] + ([pvc_claim(spec.dataset.validation.uri)]
                                                     if spec.dataset.validation else [])
    claims = {claim: claim != artifacts for claim in data if claim}
    if artifacts:
        claims[artifacts] = False
    volumes, mounts = [], []
    for index, (claim, read_only) in enumerate(sorted(claims.items())):
        volumes.append({"name": f"claim-{index}", "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}})
        mounts.append({"name": f"claim-{index}", "mountPath": f"{PVC_ROOT}/{claim}", "readOnly": read_only})
    volumes += [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size}},
                {"name": "tmp", "emptyDir": {}}]
    mounts += [{"name": "dshm", "mountPath": "/dev/shm"}, {"name": "tmp", "mountPath": "/tmp"}]
    return volumes, mounts


def artifacts_path(uri: str) -> str | None:
    """Where a pvc:// artifacts URI lies inside a trial pod."""
    parsed = urlparse(uri)
    return f"{PVC_ROOT}/{parsed.netloc}/{parsed.path.strip('/')}".rstrip("/") if parsed.scheme == "pvc" else None


def trial_job(trial: dict[str, Any], experiment: DetectionExperiment,
              settings: TrialPodSettings = TrialPodSettings()) -> dict[str, Any]:
    """The Job of a trial's current attempt: one pod that runs `autodetect train --trial-ref ns/name`, reads its
    parameters from its own DetectionTrial, and reports there. Retries are the engine's decision (backoffLimit 0);
    a pod disrupted by the cluster (eviction, preemption) is replaced by the Job and resumes from its checkpoint."""
    template, limits = experiment.spec.trialTemplate, experiment.spec.limits
    name, namespace = trial["metadata"]["name"], trial["metadata"]["namespace"]
    labels = {EXPERIMENT_LABEL: experiment.metadata.name, TRIAL_LABEL: name,
              "app.kubernetes.io/name": "autodetect-trainer", "app.kubernetes.io/managed-by": "autodetect"}
    volumes, mounts = _volumes(experiment, template.shmSize)
    env = [{"name": PVC_ROOT_ENV, "value": PVC_ROOT}, {"name": "HOME", "value": "/tmp"},
           {"name": "YOLO_OFFLINE", "value": "1"}, {"name": "PYTHONUNBUFFERED", "value": "1"}]
    if (artifacts := artifacts_path(experiment.spec.artifacts.uri)) is not None:
        env.append({"name": "AUTODETECT_WEIGHTS_DIR", "value": f"{artifacts}/{WEIGHTS_DIR}"})
    container = {
        "name": TRAINER_CONTAINER, "image": template.image,
        "command": ["autodetect", "train", "--trial-ref", f"{namespace}/{name}"],
        "env": [*env, *template.env], "resources": template.resources, "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",  # the log's tail says why a trial failed
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                            "capabilities": {"drop": ["ALL"]}},
    }
    if template.imagePullPolicy:
        container["imagePullPolicy"] = template.imagePullPolicy
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never", "serviceAccountName": template.serviceAccountName or settings.service_account,
        "securityContext": {"runAsNonRoot": True, "runAsUser": settings.run_as_user, "runAsGroup": settings.run_as_user,
                            "fsGroup": settings.run_as_user, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container], "volumes": volumes,
    }
    for key in ("nodeSelector", "tolerations", "affinity", "imagePullSecrets", "priorityClassName"):
        if value := getattr(template, key):
            pod_spec[key] = value
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,
        "podFailurePolicy": {"rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": TRAINER_CONTAINER, "operator": "In",
                                                  "values": [EXIT_BAD_INPUT]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]},
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    if limits.trialTimeoutMinutes is not None:  # a backstop: the engine stops the trial at its timeout first
        job_spec["activeDeadlineSeconds"] = int(limits.trialTimeoutMinutes * 60 + 2 * STOP_GRACE_S)
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": job_name(name, trial["spec"].get("attempt", 0)), "namespace": namespace,
                         "labels": labels, "ownerReferences": [owner_reference(trial)]},
            "spec": job_spec}


def event_object(event: Event, involved: dict[str, Any], now: datetime, instance: str) -> dict[str, Any]:
    """A core/v1 Event about involved (the experiment), as `kubectl describe` shows it."""
    m = involved["metadata"]
    stamp = now.isoformat().replace("+00:00", "Z")
    digest = hashlib.sha256(f"{event.reason}{event.message}{stamp}".encode()).hexdigest()[:10]
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{m['name']}.{digest}", "namespace": m["namespace"],
                     "labels": {EXPERIMENT_LABEL: m["name"]} if involved["kind"] == "DetectionExperiment" else {}},
        "involvedObject": {"apiVersion": involved["apiVersion"], "kind": involved["kind"], "name": m["name"],
                           "namespace": m["namespace"], "uid": m.get("uid")},
        "reason": event.reason, "message": event.message[:MESSAGE_LIMIT],
        "type": "Warning" if event.warning else "Normal",
        "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        "source": {"component": COMPONENT}, "reportingComponent": COMPONENT, "reportingInstance": instance,
    }


def with_status(obj: dict[str, Any], status: Any) -> dict[str, Any]:
    """obj (as read, with its resourceVersion) carrying a new status, for a status update."""
    return {**obj, "status": status.model_dump(mode="json", exclude_none=True)}


# --- a DetectionDeployment's objects ----------------------------------------------------------------------

SERVING_PORT = 8080
GRACEFUL_TIMEOUT_S = 30  # the server's drain on SIGTERM
PRESTOP_S = 10  # endpoints leave the Service before SIGTERM arrives
KEYS_DIR = "/etc/autodetect/keys"
KEY_FILE = "key"
GPU = "nvidia.com/gpu"
IN_FLIGHT_METRIC = "autodetect_requests_in_flight"
MODEL_ANNOTATION = f"{GROUP}/model"
MODEL_DIGEST_ANNOTATION = f"{GROUP}/model-digest"
KEY_VERSION_ANNOTATION = f"{GROUP}/key-version"


@dataclass(frozen=True)
class ServedModel:
    """What a deployment serves: the DetectionModel's name, a digest of its spec (its identity), its artifact."""

    name: str
    digest: str
    claim: str
    path: str  # inside the claim

    @classmethod
    def of(cls, model: DetectionModel) -> "ServedModel":
        """Raises ValueError for an artifact a pod cannot mount (only pvc:// can be served on a cluster)."""
        parsed = urlparse(model.spec.artifactUri)
        if parsed.scheme != "pvc":
            raise ValueError(f"{model.metadata.name}: artifactUri {model.spec.artifactUri!r} is not on a volume "
                             "(pvc://<claim>/<path>); a scoring pod cannot read it")
        spec = model.spec.model_dump_json(exclude={"metrics"})
        return cls(model.metadata.name, hashlib.sha256(spec.encode()).hexdigest()[:16], parsed.netloc,
                   parsed.path.strip("/"))


def serving_labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "autodetect-serving", "app.kubernetes.io/managed-by": "autodetect",
            DEPLOYMENT_LABEL: name}


def _selector(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "autodetect-serving", DEPLOYMENT_LABEL: name}


def _owned(kind: str, api_version: str, ddep: DetectionDeployment, name: str | None = None) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind,
            "metadata": {"name": name or ddep.metadata.name, "namespace": ddep.metadata.namespace,
                         "labels": serving_labels(ddep.metadata.name), "ownerReferences": [owner_reference(ddep)]}}


def wants_gpu(resources: dict[str, Any]) -> bool:
    return any(GPU in (resources.get(part) or {}) for part in ("requests", "limits"))


def serving_image(ddep: DetectionDeployment, version: str) -> str:
    return ddep.spec.image or f"autodetect-serving:{version}" + ("-gpu" if wants_gpu(ddep.spec.resources) else "")


def key_secret_name(ddep: DetectionDeployment) -> str:
    return f"{ddep.metadata.name}-key"


def key_secret(ddep: DetectionDeployment, key: str) -> dict[str, Any]:
    """The deployment's API key (made by the caller: 32 random bytes); only ever in this Secret and its file."""
    import base64

    secret = _owned("Secret", "v1", ddep, key_secret_name(ddep))
    return {**secret, "type": "Opaque", "data": {KEY_FILE: base64.b64encode(key.encode()).decode()}}


def serving_deployment(ddep: DetectionDeployment, model: ServedModel, version: str,
                       key_version: str | None = None) -> dict[str, Any]:
    """The scoring pods. No replicas: the HorizontalPodAutoscaler owns them (the creator sets the first count).
    The template carries the model's identity (and the key's), so a new model is an ordinary rolling update,
    gated by readiness, that drops no request (maxUnavailable 0, a preStop pause, a grace above the drain)."""
    name, spec = ddep.metadata.name, ddep.spec
    args = ["--host", "0.0.0.0", "--port", str(SERVING_PORT), "--model", f"{PVC_ROOT}/{model.claim}/{model.path}",
            "--graceful-timeout", str(GRACEFUL_TIMEOUT_S)]
    mounts = [{"name": "model", "mountPath": f"{PVC_ROOT}/{model.claim}", "readOnly": True},
              {"name": "tmp", "mountPath": "/tmp"}]
    volumes = [{"name": "model", "persistentVolumeClaim": {"claimName": model.claim, "readOnly": True}},
               {"name": "tmp", "emptyDir": {}}]
    annotations = {MODEL_ANNOTATION: model.name, MODEL_DIGEST_ANNOTATION: model.digest}
    if spec.auth.enabled:
        args += ["--keys-file", f"{KEYS_DIR}/{KEY_FILE}"]
        mounts.append({"name": "keys", "mountPath": KEYS_DIR, "readOnly": True})
        volumes.append({"name": "keys", "secret": {"secretName": key_secret_name(ddep), "defaultMode": 0o400}})
        annotations[KEY_VERSION_ANNOTATION] = key_version or ""
    else:
        args.append("--no-auth")
    probe = {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5, "timeoutSeconds": 3}
    container = {
        "name": "serving", "image": serving_image(ddep, version), "command": ["autodetect", "serve"], "args": args,
        "ports": [{"name": "http", "containerPort": SERVING_PORT, "protocol": "TCP"}],
        "env": [{"name": "HOME", "value": "/tmp"}, {"name": "YOLO_OFFLINE", "value": "1"}],
        "resources": spec.resources, "volumeMounts": mounts,
        "startupProbe": {**probe, "failureThreshold": 120},  # warm-up, and an ONNX export when the artifact has none
        "readinessProbe": {**probe, "failureThreshold": 2},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 3,
                          "failureThreshold": 3},
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_S}}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                            "capabilities": {"drop": ["ALL"]}},
    }
    deployment = _owned("Deployment", "apps/v1", ddep)
    deployment["spec"] = {
        "selector": {"matchLabels": _selector(name)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {
            "metadata": {"labels": serving_labels(name), "annotations": annotations},
            "spec": {"containers": [container], "volumes": volumes, "automountServiceAccountToken": False,
                     "terminationGracePeriodSeconds": GRACEFUL_TIMEOUT_S + PRESTOP_S + 15,
                     "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                         "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}}}},
    }
    return deployment


def serving_service(ddep: DetectionDeployment) -> dict[str, Any]:
    service = _owned("Service", "v1", ddep)
    service["spec"] = {"type": "ClusterIP", "selector": _selector(ddep.metadata.name),
                       "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}
    return service


def service_url(ddep: DetectionDeployment) -> str:
    return f"http://{ddep.metadata.name}.{ddep.metadata.namespace}.svc.cluster.local/score"


def autoscaler(ddep: DetectionDeployment) -> dict[str, Any]:
    spec = ddep.spec
    metrics = []
    if spec.autoscaling.targetCPUUtilizationPercentage is not None:
        metrics.append({"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": spec.autoscaling.targetCPUUtilizationPercentage}}})
    if spec.autoscaling.targetRequestsInFlightPerPod is not None:
        metrics.append({"type": "Pods", "pods": {"metric": {"name": IN_FLIGHT_METRIC}, "target": {
            "type": "AverageValue", "averageValue": f"{spec.autoscaling.targetRequestsInFlightPerPod:g}"}}})
    hpa = _owned("HorizontalPodAutoscaler", "autoscaling/v2", ddep)
    hpa["spec"] = {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": ddep.metadata.name},
                   "minReplicas": spec.replicas.min, "maxReplicas": spec.replicas.max, "metrics": metrics}
    return hpa


def disruption_budget(ddep: DetectionDeployment) -> dict[str, Any] | None:
    """With two replicas or more, a node drain takes them one at a time."""
    if ddep.spec.replicas.min < 2:
        return None
    pdb = _owned("PodDisruptionBudget", "policy/v1", ddep)
    pdb["spec"] = {"maxUnavailable": 1, "selector": {"matchLabels": _selector(ddep.metadata.name)}}
    return pdb
