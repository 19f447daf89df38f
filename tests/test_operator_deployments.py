"""DetectionDeployment over HTTP against the emulator: it waits for a model, then serves it through a Deployment,
Service, HorizontalPodAutoscaler and key Secret (all valid, all owned by it), follows the experiment's best model with
ordinary rolling updates that leave replicas to the autoscaler, keeps its key secret, and reports its rollout."""

from __future__ import annotations

import base64

import kubernetes_validate
import pytest

from apiserver import controllers
from operator_harness import GROUP, NAMESPACE, VERSION, Cluster, running_operator

from autodetect.operator import builders

KINDS = {"deployments": "Deployment", "services": "Service", "horizontalpodautoscalers": "HorizontalPodAutoscaler",
         "secrets": "Secret"}


def detection_deployment(name: str = "fridge", **spec) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "DetectionDeployment",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"model": {"experimentRef": "fridge"}, "replicas": {"min": 2, "max": 4},
                     "resources": {"requests": {"cpu": "1", "memory": "2Gi"}}, **spec}}


def model(name: str = "fridge-best", trial: str = "fridge-001") -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "DetectionModel", "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"artifactUri": f"pvc://artifacts/{trial}/", "format": "ultralytics", "classes": ["can", "milk"],
                     "lineage": {"experiment": "fridge", "trial": trial}}}


def register(emulator, trial: str) -> None:
    """What the experiment operator does when its best trial changes: the experiment's model, and its status."""
    if emulator.get("detectionmodels", NAMESPACE, "fridge-best") is None:
        emulator.create(model(trial=trial))
    else:
        emulator.patch("detectionmodels", NAMESPACE, "fridge-best", {"spec": model(trial=trial)["spec"]})
    emulator.patch("dexp", NAMESPACE, "fridge", {"status": {"model": "fridge-best"}}, subresource="status")


def an_experiment(cluster: Cluster) -> None:
    """A running experiment (its operator has written its first status), whose registrations the test plays."""
    cluster.emulator.create({"apiVersion": f"{GROUP}/{VERSION}", "kind": "DetectionExperiment",
                     "metadata": {"name": "fridge", "namespace": NAMESPACE},
                     "spec": {"dataset": {"training": {"uri": "pvc://data/train.jsonl"}},
                              "searchSpace": [{"model_name": "yolov8"}], "artifacts": {"uri": "pvc://artifacts/"},
                              "limits": {"maxTrials": 1}}})
    cluster.wait(lambda: cluster.experiment_status().get("phase") == "Running", what="a running experiment")


def status(cluster: Cluster) -> dict:
    return (cluster.get("detectiondeployments", "fridge") or {}).get("status") or {}


def condition(cluster: Cluster, type_: str) -> tuple | None:
    found = next((c for c in status(cluster).get("conditions", []) if c["type"] == type_), None)
    return (found["status"], found["reason"]) if found else None


def template(cluster: Cluster) -> dict:
    return cluster.get("deployments", "fridge")["spec"]["template"]


@pytest.fixture
def cluster(emulator, kubeconfig) -> Cluster:
    return Cluster(emulator, kubeconfig)


def test_it_waits_for_a_model_then_serves_it_with_valid_owned_objects(cluster, emulator, kubeconfig, caplog):
    with running_operator(kubeconfig, timer_s=60):  # the experiment's own loop stays quiet: this is about serving
        an_experiment(cluster)
        emulator.create(detection_deployment())
        cluster.wait(lambda: condition(cluster, "Ready") == ("False", "WaitingForModel"), what="WaitingForModel")
        assert "fridge has registered no model yet" in status(cluster)["conditions"][0]["message"]
        assert cluster.names("deployments") == []
        register(emulator, "fridge-001")
        objects = {plural: cluster.wait(lambda p=plural, k=kind: cluster.get(p, "fridge-key" if k == "Secret" else "fridge"))
                   for plural, kind in KINDS.items()}
        owner = cluster.get("detectiondeployments", "fridge")["metadata"]["uid"]
        for plural, obj in objects.items():
            sent = {key: value for key, value in obj.items() if key != "status"}  # status is the controllers'
            assert kubernetes_validate.validate(sent, "1.35", strict=True), plural
            assert obj["metadata"]["ownerReferences"][0]["uid"] == owner
        pdb = cluster.wait(lambda: cluster.get("poddisruptionbudgets", "fridge"), what="the disruption budget")
        assert pdb["spec"]["maxUnavailable"] == 1
        deployment = objects["deployments"]
        assert deployment["spec"]["replicas"] == 2  # the first count only; the autoscaler owns it from then on
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        pod = deployment["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert container["args"][container["args"].index("--model") + 1] == "/mnt/pvc/artifacts/fridge-001"
        assert container["args"][container["args"].index("--keys-file") + 1] == "/etc/autodetect/keys/key"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz" and container["startupProbe"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["securityContext"]["readOnlyRootFilesystem"] and container["lifecycle"]["preStop"]
        assert pod["terminationGracePeriodSeconds"] > builders.GRACEFUL_TIMEOUT_S + builders.PRESTOP_S
        assert {"name": "model", "mountPath": "/mnt/pvc/artifacts", "readOnly": True} in container["volumeMounts"]
        assert container["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"}}
        hpa = objects["horizontalpodautoscalers"]["spec"]
        assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 4)
        assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 70

        controllers.deployment_progress(emulator, cluster.get("deployments", "fridge"))
        cluster.wait(lambda: condition(cluster, "Ready") == ("True", "MinimumReplicasAvailable"), what="Ready")
        assert status(cluster)["servingModel"] == "fridge-best" and status(cluster)["readyReplicas"] == 2
        assert status(cluster)["url"] == "http://fridge.default.svc.cluster.local/score"
        assert condition(cluster, "Progressing") == ("True", "RolloutComplete")

        key = base64.b64decode(objects["secrets"]["data"]["key"]).decode()
        assert len(base64.urlsafe_b64decode(key + "=")) == 32  # 32 random bytes
        everything = [cluster.get(p, "fridge") for p in ("deployments", "services", "horizontalpodautoscalers",
                                                         "detectiondeployments")]
        assert not any(key in str(obj) for obj in everything) and key not in str(cluster.events("fridge"))
    assert key not in caplog.text


def test_a_better_model_rolls_out_and_replicas_stay_the_autoscalers(cluster, emulator, kubeconfig):
    with running_operator(kubeconfig, timer_s=60):
        an_experiment(cluster)
        register(emulator, "fridge-001")
        emulator.create(detection_deployment(autoscaling={"targetCPUUtilizationPercentage": 60,
                                                          "targetRequestsInFlightPerPod": 4}))
        first = cluster.wait(lambda: cluster.get("deployments", "fridge"))
        controllers.deployment_progress(emulator, first)
        cluster.wait(lambda: status(cluster).get("servingModel") == "fridge-best" and
                     condition(cluster, "Progressing") == ("True", "RolloutComplete"))
        metrics = cluster.get("horizontalpodautoscalers", "fridge")["spec"]["metrics"]
        assert metrics[1] == {"type": "Pods", "pods": {"metric": {"name": "autodetect_requests_in_flight"},
                                                       "target": {"type": "AverageValue", "averageValue": "4"}}}
        emulator.patch("deployments", NAMESPACE, "fridge", {"spec": {"replicas": 3}})  # the autoscaler scales up
        digest = template(cluster)["metadata"]["annotations"]["autodetect.dev/model-digest"]

        register(emulator, "fridge-007")  # the experiment found a better trial
        cluster.wait(lambda: template(cluster)["metadata"]["annotations"]["autodetect.dev/model-digest"] != digest,
                     what="the new model in the pod template")
        deployment = cluster.get("deployments", "fridge")
        assert deployment["spec"]["replicas"] == 3  # left alone
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        assert "/mnt/pvc/artifacts/fridge-007" in args
        cluster.wait(lambda: condition(cluster, "Progressing") == ("True", "RolloutInProgress"), what="a rollout")
        assert condition(cluster, "Ready") == ("True", "MinimumReplicasAvailable")  # the old replicas still serve
        controllers.deployment_progress(emulator, deployment)
        cluster.wait(lambda: condition(cluster, "Progressing") == ("True", "RolloutComplete") and
                     status(cluster)["servingDigest"] != digest, what="the rollout to complete")
        reasons = cluster.wait(lambda: (r := [e for e, _ in cluster.events("fridge") if e.startswith("Rollout")])
                               and r.count("RolloutDone") == 2 and r)
        assert reasons.count("RolloutStarted") == 2


def test_the_key_is_kept_across_reconciles_and_a_deleted_secret_rotates_it(cluster, emulator, kubeconfig):
    with running_operator(kubeconfig, timer_s=0.2):
        emulator.create(model("served"))
        emulator.create(detection_deployment(model={"modelRef": "served"}, replicas={"min": 1, "max": 1}))
        secret = cluster.wait(lambda: cluster.get("secrets", "fridge-key"))
        cluster.wait(lambda: cluster.get("deployments", "fridge"))
        version = template(cluster)["metadata"]["annotations"]["autodetect.dev/key-version"]
        before = emulator.list("v1/events", NAMESPACE)
        cluster.wait(lambda: len([r for r in emulator.requests("operator") if r.resource == "detectiondeployments"
                                  and r.method == "GET"]) > 10, what="many passes")
        assert cluster.get("secrets", "fridge-key")["data"] == secret["data"]  # made once
        assert cluster.names("poddisruptionbudgets") == []  # one replica: no budget
        emulator.delete("secrets", NAMESPACE, "fridge-key")
        rotated = cluster.wait(lambda: (s := cluster.get("secrets", "fridge-key")) and
                               s["metadata"]["uid"] != secret["metadata"]["uid"] and s, what="a new key")
        assert rotated["data"] != secret["data"]
        cluster.wait(lambda: template(cluster)["metadata"]["annotations"]["autodetect.dev/key-version"] != version,
                     what="pods that read the new key")
        assert len(emulator.list("v1/events", NAMESPACE)) >= len(before)


def test_without_auth_no_secret_and_a_gpu_serves_from_the_gpu_image(cluster, emulator, kubeconfig):
    with running_operator(kubeconfig):
        emulator.create(model("served"))
        emulator.create(detection_deployment(model={"modelRef": "served"}, auth={"enabled": False},
                                             resources={"limits": {"nvidia.com/gpu": 1}}))
        deployment = cluster.wait(lambda: cluster.get("deployments", "fridge"))
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert container["image"].endswith("-gpu") and "--no-auth" in container["args"]
        assert cluster.get("secrets", "fridge-key") is None


def test_a_model_it_cannot_mount_and_deleting_it_removes_what_it_owns(cluster, emulator, kubeconfig):
    with running_operator(kubeconfig):
        emulator.create({**model("local"), "spec": {**model()["spec"], "artifactUri": "file:///tmp/model/"}})
        emulator.create(detection_deployment("elsewhere", model={"modelRef": "local"}))
        cluster.wait(lambda: ((cluster.get("detectiondeployments", "elsewhere") or {}).get("status") or {})
                     .get("conditions"), what="a condition")
        ready = cluster.get("detectiondeployments", "elsewhere")["status"]["conditions"][0]
        assert ready["reason"] == "InvalidModel" and "pvc://" in ready["message"]
        emulator.create(model("served"))
        emulator.create(detection_deployment(model={"modelRef": "served"}))
        for plural in ("deployments", "services", "horizontalpodautoscalers", "poddisruptionbudgets"):
            cluster.wait(lambda p=plural: cluster.get(p, "fridge"), what=plural)
        emulator.delete("detectiondeployments", NAMESPACE, "fridge")
        cluster.wait(lambda: not any(cluster.get(p, n) for p, n in (
            ("deployments", "fridge"), ("services", "fridge"), ("horizontalpodautoscalers", "fridge"),
            ("poddisruptionbudgets", "fridge"), ("secrets", "fridge-key"))), what="everything it owns to go")


def test_spec_changes_and_hand_edits_are_carried_to_the_owned_objects_and_nothing_else_is_written(
        cluster, emulator, kubeconfig):
    def patches(plural: str) -> int:
        return sum(r.method == "PATCH" and r.resource == plural for r in emulator.requests("operator"))

    def passes() -> int:
        return sum(r.method == "GET" and r.resource == "detectiondeployments" for r in emulator.requests("operator"))

    owned = ("deployments", "services", "horizontalpodautoscalers", "poddisruptionbudgets")
    with running_operator(kubeconfig, timer_s=0.2):
        emulator.create(model("served"))
        emulator.create(detection_deployment(model={"modelRef": "served"}))
        for plural in owned:
            cluster.wait(lambda p=plural: cluster.get(p, "fridge"), what=plural)
        settled = passes()
        cluster.wait(lambda: passes() > settled + 5, what="more passes")
        assert {plural: patches(plural) for plural in owned} == dict.fromkeys(owned, 0)  # nothing to change

        emulator.patch("detectiondeployments", NAMESPACE, "fridge", {"spec": {"replicas": {"min": 2, "max": 6}}})
        cluster.wait(lambda: cluster.get("horizontalpodautoscalers", "fridge")["spec"]["maxReplicas"] == 6,
                     what="the new maximum")
        emulator.patch("services", NAMESPACE, "fridge", {"spec": {"ports": [{"name": "http", "port": 8000,
                                                                              "targetPort": "http"}]}})
        emulator.patch("poddisruptionbudgets", NAMESPACE, "fridge", {"spec": {"maxUnavailable": 2}})
        cluster.wait(lambda: cluster.get("services", "fridge")["spec"]["ports"][0]["port"] == 80 and
                     cluster.get("poddisruptionbudgets", "fridge")["spec"]["maxUnavailable"] == 1,
                     what="the hand edits undone")
        assert patches("deployments") == 0  # the pod template did not change: no write, no rollout
