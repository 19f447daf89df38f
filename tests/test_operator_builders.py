"""The operator's pure builders: the trial Job, the trial and model objects, Events; each a plain dict that a
real API server accepts (kubernetes-validate, strict, for the built-in kinds)."""

from datetime import datetime, timezone

import kubernetes_validate
import pytest

from autodetect.api.v1alpha1 import DetectionExperiment
from autodetect.operator import builders
from autodetect.operator.kube import changes
from autodetect.tuning.events import Event
from autodetect.tuning.trials import new_trial
from autodetect.vocabulary import EXPERIMENT_LABEL, TRIAL_LABEL

KUBERNETES = "1.35"
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def experiment(**template) -> DetectionExperiment:
    return DetectionExperiment.model_validate({
        "apiVersion": "autodetect.dev/v1alpha1", "kind": "DetectionExperiment",
        "metadata": {"name": "fridge", "namespace": "ml", "uid": "e-uid-1"},
        "spec": {"dataset": {"training": {"uri": "pvc://datasets/fridge/train.jsonl"},
                             "validation": {"uri": "pvc://datasets/fridge/val.jsonl"}},
                 "searchSpace": [{"model_name": "yolov8"}], "artifacts": {"uri": "pvc://artifacts/runs/"},
                 "limits": {"trialTimeoutMinutes": 30}, "trialTemplate": {"image": "trainer:1", **template}}})


def trial_dict(attempt: int = 0) -> dict:
    obj = builders.trial_object(new_trial(experiment(), "fridge-003", {"model_name": "yolov8"}), experiment())
    obj["metadata"]["uid"] = "t-uid-3"
    obj["spec"]["attempt"] = attempt
    return obj


def validate(obj: dict) -> None:
    assert kubernetes_validate.validate(obj, KUBERNETES, strict=True) == KUBERNETES


def test_the_trial_job_runs_the_trainer_on_its_own_trial_and_is_valid():
    job = builders.trial_job(trial_dict(attempt=2), experiment(resources={"limits": {"nvidia.com/gpu": 1}}))
    validate(job)
    assert job["metadata"]["name"] == "fridge-003-2" and job["metadata"]["namespace"] == "ml"
    assert job["metadata"]["labels"][EXPERIMENT_LABEL] == "fridge" and job["metadata"]["labels"][TRIAL_LABEL] == "fridge-003"
    assert job["metadata"]["ownerReferences"] == [{"apiVersion": "autodetect.dev/v1alpha1", "kind": "DetectionTrial",
                                                   "name": "fridge-003", "uid": "t-uid-3", "controller": True,
                                                   "blockOwnerDeletion": True}]
    spec = job["spec"]
    assert spec["backoffLimit"] == 0 and spec["activeDeadlineSeconds"] == 30 * 60 + 120
    pod = spec["template"]["spec"]
    assert spec["template"]["metadata"]["labels"][TRIAL_LABEL] == "fridge-003" and pod["restartPolicy"] == "Never"
    [container] = pod["containers"]
    assert container["command"] == ["autodetect", "train", "--trial-ref", "ml/fridge-003"]  # no parameter as text
    assert container["image"] == "trainer:1" and container["resources"] == {"limits": {"nvidia.com/gpu": 1}}
    assert pod["serviceAccountName"] == "autodetect-trial"


def test_the_trial_pod_is_restricted_and_mounts_what_it_reads_and_writes():
    pod = builders.trial_job(trial_dict(), experiment())["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/mnt/pvc/datasets"]["readOnly"] is True and mounts["/mnt/pvc/artifacts"]["readOnly"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Gi"} and "/tmp" in mounts
    claims = sorted(v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v)
    assert claims == ["artifacts", "datasets"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["AUTODETECT_PVC_ROOT"] == "/mnt/pvc" and env["AUTODETECT_WEIGHTS_DIR"] == "/mnt/pvc/artifacts/runs/.weights"


def test_the_template_passes_through_to_the_pod():
    template = {"nodeSelector": {"gpu": "h100"}, "tolerations": [{"key": "gpu", "operator": "Exists"}],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}},
                "priorityClassName": "batch-low", "serviceAccountName": "team-sa", "imagePullPolicy": "Always",
                "env": [{"name": "HF_HUB_OFFLINE", "value": "1"}], "shmSize": "8Gi",
                "imagePullSecrets": [{"name": "registry"}]}
    job = builders.trial_job(trial_dict(), experiment(**template))
    validate(job)
    pod = job["spec"]["template"]["spec"]
    for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName", "imagePullSecrets"):
        assert pod[key] == template[key]
    assert pod["serviceAccountName"] == "team-sa" and pod["containers"][0]["imagePullPolicy"] == "Always"
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in pod["containers"][0]["env"]
    assert next(v for v in pod["volumes"] if v["name"] == "dshm")["emptyDir"]["sizeLimit"] == "8Gi"


def test_retries_and_evictions_are_the_engines_and_the_jobs():
    rules = builders.trial_job(trial_dict(), experiment())["spec"]["podFailurePolicy"]["rules"]
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]} in rules
    assert rules[0]["action"] == "FailJob" and rules[0]["onExitCodes"]["values"] == [2]


def test_the_trial_object_is_owned_by_its_experiment():
    obj = builders.trial_object(new_trial(experiment(), "fridge-003", {"model_name": "yolov8"}), experiment())
    assert obj["metadata"]["ownerReferences"][0] == {"apiVersion": "autodetect.dev/v1alpha1",
                                                     "kind": "DetectionExperiment", "name": "fridge", "uid": "e-uid-1",
                                                     "controller": True, "blockOwnerDeletion": True}
    assert "status" not in obj and set(obj["metadata"]) == {"name", "namespace", "labels", "ownerReferences"}


@pytest.mark.parametrize("warning", [False, True])
def test_events_are_valid_and_name_the_experiment(warning):
    involved = {"apiVersion": "autodetect.dev/v1alpha1", "kind": "DetectionExperiment",
                "metadata": {"name": "fridge", "namespace": "ml", "uid": "e-uid-1"}}
    event = builders.event_object(Event("TrialPruned", "fridge-003 pruned: " + "x" * 2000, warning), involved, T0, "op-0")
    validate(event)
    assert event["involvedObject"]["name"] == "fridge" and event["type"] == ("Warning" if warning else "Normal")
    assert len(event["message"]) == builders.MESSAGE_LIMIT and event["reason"] == "TrialPruned"


@pytest.mark.parametrize(("resources", "image"), [
    ({"requests": {"cpu": "1"}}, "autodetect-serving:0.1.0"),
    ({"limits": {"nvidia.com/gpu": 1}}, "autodetect-serving:0.1.0-gpu"),
    ({"requests": {"nvidia.com/gpu": 1}, "limits": {"nvidia.com/gpu": 1}}, "autodetect-serving:0.1.0-gpu"),
])
def test_a_deployment_asking_for_a_gpu_gets_the_gpu_serving_image(resources, image):
    from autodetect.api.v1alpha1 import DetectionDeployment

    ddep = DetectionDeployment.model_validate({
        "apiVersion": "autodetect.dev/v1alpha1", "kind": "DetectionDeployment",
        "metadata": {"name": "fridge", "namespace": "default"},
        "spec": {"model": {"experimentRef": "fridge"}, "resources": resources}})
    assert builders.serving_image(ddep, "0.1.0") == image
    pinned = ddep.model_copy(update={"spec": ddep.spec.model_copy(update={"image": "mine:1"})})
    assert builders.serving_image(pinned, "0.1.0") == "mine:1"  # an image the user names wins


def test_a_merge_patch_changes_only_what_differs_from_what_the_api_server_kept():
    live = {"metadata": {"name": "x", "labels": {"a": "1"}, "uid": "u"},
            "spec": {"ports": [{"port": 80, "protocol": "TCP"}], "containers": [{"name": "c", "image": "i",
                                                                                 "terminationMessagePath": "/dev/t"}]}}
    assert not changes(live, {"metadata": {"labels": {"a": "1"}}, "spec": {"containers": [{"name": "c"}]}})
    assert changes(live, {"metadata": {"labels": {"a": "2"}}})
    assert changes(live, {"metadata": {"labels": {"a": None}}})  # a removal
    assert not changes(live, {"metadata": {"labels": {"b": None}}})
    assert changes(live, {"spec": {"ports": [{"port": 81}]}})
    assert changes(live, {"spec": {"ports": [{"port": 80}, {"port": 81}]}})  # another item
