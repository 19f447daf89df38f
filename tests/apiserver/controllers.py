"""The parts of a cluster that are not the API server, played step by step by a test: the Job controller, the
kubelet and the Deployment controller, writing what they write (as status subresource patches through the
emulator's own store API, so that they are not in the request log of the operator under test)."""

from __future__ import annotations

import hashlib
from typing import Any

from apiserver.server import Emulator, now

Obj = dict[str, Any]
WAITING_MESSAGES = {
    "ImagePullBackOff": 'Back-off pulling image "{image}"',
    "ErrImagePull": 'failed to pull and unpack image "{image}": failed to resolve reference "{image}": not found',
    "CreateContainerConfigError": 'secret "missing" not found',
}
TERMINATED_REASONS = {0: "Completed", 137: "OOMKilled"}


def _key(obj: Obj) -> tuple[str, str]:
    return obj["metadata"].get("namespace"), obj["metadata"]["name"]


def _condition(kind: str, status: bool, reason: str | None = None, message: str | None = None) -> Obj:
    condition = {"type": kind, "status": "True" if status else "False", "lastProbeTime": None,
                 "lastTransitionTime": now()}
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return condition


def job_pod(cluster: Emulator, job: Obj) -> Obj:
    """Create the Job's pod as the Job controller does (owner reference, the job's labels), and count it active."""
    job = cluster.get("jobs", *_key(job)) or job
    meta, template = job["metadata"], job["spec"]["template"]
    labels = {**(template.get("metadata") or {}).get("labels", {}),
              "batch.kubernetes.io/controller-uid": meta["uid"], "batch.kubernetes.io/job-name": meta["name"],
              "controller-uid": meta["uid"], "job-name": meta["name"]}
    pod = cluster.create({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": f"{meta['name']}-", "namespace": meta["namespace"], "labels": labels,
                     "annotations": (template.get("metadata") or {}).get("annotations", {}),
                     "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"],
                                          "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}]},
        "spec": template["spec"]})
    status = job.get("status") or {}
    cluster.patch("jobs", *_key(job), {"status": {
        "startTime": status.get("startTime") or now(), "active": status.get("active", 0) + 1, "ready": 0,
        "terminating": 0, "uncountedTerminatedPods": {}}}, subresource="status")
    return pod


def pod_pending(cluster: Emulator, pod: Obj, reason: str = "ImagePullBackOff", message: str | None = None) -> Obj:
    """A pod that cannot start: `Unschedulable` (PodScheduled False), or a container waiting with
    ImagePullBackOff, ErrImagePull or CreateContainerConfigError."""
    pod = cluster.get("pods", *_key(pod)) or pod
    if reason == "Unschedulable":
        status = {"phase": "Pending", "conditions": [_condition(
            "PodScheduled", False, "Unschedulable",
            message or "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available: "
                       "3 No preemption victims found for incoming pod.")]}
        return cluster.patch("pods", *_key(pod), {"status": status}, subresource="status")
    containers = pod["spec"]["containers"]
    statuses = [{"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": False, "restartCount": 0,
                 "started": False, "lastState": {}, "state": {"waiting": {
                     "reason": reason,
                     "message": message or WAITING_MESSAGES.get(reason, reason).format(image=c.get("image", ""))}}}
                for c in containers]
    return cluster.patch("pods", *_key(pod), {"status": {
        "phase": "Pending", "hostIP": "10.0.0.2", "startTime": now(), "containerStatuses": statuses,
        "conditions": [_condition("PodScheduled", True), _condition("Initialized", True),
                       _condition("Ready", False, "ContainersNotReady",
                                  f"containers with unready status: [{' '.join(c['name'] for c in containers)}]"),
                       _condition("ContainersReady", False, "ContainersNotReady")]}}, subresource="status")


def pod_running(cluster: Emulator, pod: Obj) -> Obj:
    pod = cluster.get("pods", *_key(pod)) or pod
    started = now()
    statuses = [{"name": c["name"], "image": c.get("image", ""), "imageID": f"docker.io/{c.get('image', '')}",
                 "containerID": f"containerd://{hashlib.sha256(c['name'].encode()).hexdigest()}", "ready": True,
                 "restartCount": 0, "started": True, "lastState": {}, "state": {"running": {"startedAt": started}}}
                for c in pod["spec"]["containers"]]
    pod = cluster.patch("pods", *_key(pod), {"status": {
        "phase": "Running", "hostIP": "10.0.0.2", "podIP": "10.244.0.7", "startTime": started,
        "containerStatuses": statuses,
        "conditions": [_condition("PodScheduled", True), _condition("Initialized", True),
                       _condition("Ready", True), _condition("ContainersReady", True)]}}, subresource="status")
    _job_of(cluster, pod, lambda status: {"ready": 1})
    return pod


def pod_terminated(cluster: Emulator, pod: Obj, exit_code: int = 0, reason: str | None = None,
                   message: str | None = None) -> Obj:
    """The container ended: reason Completed (0), OOMKilled (137) or Error, unless given."""
    pod = cluster.get("pods", *_key(pod)) or pod
    finished = now()
    reason = reason or TERMINATED_REASONS.get(exit_code, "Error")
    terminated = {"exitCode": exit_code, "reason": reason, "startedAt": pod["status"].get("startTime", finished),
                  "finishedAt": finished}
    if message:
        terminated["message"] = message
    statuses = [{"name": c["name"], "image": c.get("image", ""), "imageID": f"docker.io/{c.get('image', '')}",
                 "ready": False, "restartCount": 0, "started": False, "lastState": {},
                 "state": {"terminated": terminated}} for c in pod["spec"]["containers"]]
    phase = "Succeeded" if exit_code == 0 else "Failed"
    return cluster.patch("pods", *_key(pod), {"status": {
        "phase": phase, "containerStatuses": statuses,
        "conditions": [_condition("PodScheduled", True), _condition("Initialized", True),
                       _condition("Ready", False, "PodCompleted" if exit_code == 0 else "PodFailed"),
                       _condition("ContainersReady", False, "PodCompleted" if exit_code == 0 else "PodFailed")]}},
        subresource="status")


def job_finished(cluster: Emulator, job: Obj, succeeded: bool, reason: str | None = None,
                 message: str | None = None) -> Obj:
    """The Job controller's verdict: Complete (with SuccessCriteriaMet), or Failed (with FailureTarget) for
    BackoffLimitExceeded (default) or DeadlineExceeded."""
    job = cluster.get("jobs", *_key(job)) or job
    if succeeded:
        reason, message = reason or "CompletionsReached", message or "Reached expected number of succeeded pods"
        conditions = [_condition("SuccessCriteriaMet", True, reason, message), _condition("Complete", True, reason,
                                                                                          message)]
        counts = {"succeeded": (job.get("status") or {}).get("succeeded", 0) + 1, "completionTime": now()}
    else:
        reason = reason or "BackoffLimitExceeded"
        message = message or {"BackoffLimitExceeded": "Job has reached the specified backoff limit",
                              "DeadlineExceeded": "Job was active longer than specified deadline"}.get(reason, reason)
        conditions = [_condition("FailureTarget", True, reason, message), _condition("Failed", True, reason, message)]
        counts = {"failed": (job.get("status") or {}).get("failed", 0) + 1}
    return cluster.patch("jobs", *_key(job), {"status": {
        **counts, "active": 0, "ready": 0, "terminating": 0, "conditions": conditions,
        "startTime": (job.get("status") or {}).get("startTime") or now()}}, subresource="status")


def run_job(cluster: Emulator, job: Obj, exit_code: int = 0, reason: str | None = None) -> Obj:
    """The whole life of a Job's pod: created, running, terminated with exit_code; then the Job's verdict."""
    pod = pod_running(cluster, job_pod(cluster, job))
    pod_terminated(cluster, pod, exit_code, reason)
    job_finished(cluster, job, succeeded=exit_code == 0,
                 reason="DeadlineExceeded" if reason == "DeadlineExceeded" else None)
    return cluster.get("pods", *_key(pod))


def _job_of(cluster: Emulator, pod: Obj, change: Any) -> None:
    owner = next((ref for ref in pod["metadata"].get("ownerReferences") or () if ref["kind"] == "Job"), None)
    job = owner and cluster.get("jobs", pod["metadata"]["namespace"], owner["name"])
    if job:
        cluster.patch("jobs", *_key(job), {"status": change(job.get("status") or {})}, subresource="status")


def deployment_progress(cluster: Emulator, deployment: Obj, ready: int | None = None) -> Obj:
    """One step of the Deployment controller: the current generation observed, `ready` of the replicas
    (default: all) updated, ready and available, and the Available and Progressing conditions to match."""
    deployment = cluster.get("deployments", *_key(deployment)) or deployment
    meta, replicas = deployment["metadata"], deployment["spec"].get("replicas", 1)
    ready = replicas if ready is None else ready
    template_hash = hashlib.sha256(repr(deployment["spec"].get("template")).encode()).hexdigest()[:10]
    replica_set = f"{meta['name']}-{template_hash}"
    done = ready >= replicas
    status = {
        "observedGeneration": meta["generation"], "replicas": replicas, "updatedReplicas": replicas,
        "readyReplicas": ready, "availableReplicas": ready,
        "conditions": [
            _condition("Available", done, "MinimumReplicasAvailable" if done else "MinimumReplicasUnavailable",
                       "Deployment has minimum availability." if done
                       else "Deployment does not have minimum availability."),
            _condition("Progressing", True, "NewReplicaSetAvailable" if done else "ReplicaSetUpdated",
                       f'ReplicaSet "{replica_set}" has successfully progressed.' if done
                       else f'ReplicaSet "{replica_set}" is progressing.')]}
    status["unavailableReplicas"] = (replicas - ready) or None  # None: a merge patch removes it
    for condition in status["conditions"]:
        condition.pop("lastProbeTime")
        condition["lastUpdateTime"] = condition["lastTransitionTime"]
    return cluster.patch("deployments", *_key(deployment), {"status": status}, subresource="status")
