"""The API server emulator that the operator's tests stand on, through the clients that will use it: the official
kubernetes client, kopf, and the real kubectl."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import kopf
import kubernetes
import pytest
import yaml

from apiserver import ANY, Emulator, controllers, operators, tools

GROUP, VERSION = "autodetect.dev", "v1alpha1"
EXPERIMENT = {
    "apiVersion": f"{GROUP}/{VERSION}", "kind": "DetectionExperiment",
    "metadata": {"name": "fridge", "namespace": "default", "labels": {"team": "vision"}},
    "spec": {"dataset": {"training": {"uri": "pvc://datasets/fridge/train.jsonl"}},
             "searchSpace": [{"model_name": {"type": "choice", "values": ["yolov8"]}}],
             "limits": {"maxTrials": 4}}}
TRIAL = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "DetectionTrial",
         "metadata": {"name": "fridge-000", "namespace": "default"},
         "spec": {"experiment": "fridge", "hyperparameters": {"model_name": "yolov8"}, "attempt": 1,
                  "dataset": {"training": {"uri": "pvc://datasets/fridge/train.jsonl"}}}}
CONDITION = {"type": "Succeeded", "status": "True", "reason": "BestModelRegistered", "message": "done",
             "lastTransitionTime": "2025-01-02T03:04:05Z"}


def experiment(name: str = "fridge", namespace: str = "default", **spec) -> dict:
    return {**EXPERIMENT, "metadata": {**EXPERIMENT["metadata"], "name": name, "namespace": namespace},
            "spec": {**EXPERIMENT["spec"], **spec}}


def job(name: str = "fridge-000-1", owner: dict | None = None) -> dict:
    meta = {"name": name, "namespace": "default"}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": owner["apiVersion"], "kind": owner["kind"], "controller": True,
                                    "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"]}]
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": {"backoffLimit": 0, "template": {
        "spec": {"restartPolicy": "Never", "containers": [{"name": "trainer", "image": "autodetect-trainer:0.1.0"}]}}}}


def failure(call: Callable[[], object]) -> tuple[int, dict]:
    with pytest.raises(kubernetes.client.ApiException) as caught:
        call()
    return caught.value.status, json.loads(caught.value.body)


@pytest.fixture
def client(kubeconfig: Path) -> Iterator[kubernetes.client.ApiClient]:
    with kubernetes.config.new_client_from_config(str(kubeconfig)) as api:
        yield api


@pytest.fixture
def custom(client) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(client)


@pytest.fixture
def core(client) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(client)


@pytest.fixture
def http(emulator: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=str(emulator.url), headers={"Authorization": "Bearer tester"}) as session:
        yield session


def create(custom, obj: dict) -> dict:
    plural = {"DetectionExperiment": "detectionexperiments", "DetectionTrial": "detectiontrials"}[obj["kind"]]
    return custom.create_namespaced_custom_object(GROUP, VERSION, obj["metadata"]["namespace"], plural, obj)


# ---- the kubernetes client -------------------------------------------------------------------------------------


def test_writes_are_stamped_as_a_real_server_stamps_them(custom):
    created = create(custom, {**experiment(), "status": {"phase": "Succeeded"}})
    meta = created["metadata"]
    assert re.fullmatch(r"[0-9a-f-]{36}", meta["uid"]) and meta["generation"] == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["creationTimestamp"])
    assert "status" not in created  # a create does not write the status subresource
    assert created["spec"]["dataset"]["validationSplit"] == 0.2  # the CRD's default

    def patch(body, status=False):
        call = custom.patch_namespaced_custom_object_status if status else custom.patch_namespaced_custom_object
        return call(GROUP, VERSION, "default", "detectionexperiments", "fridge", body)

    respec = patch({"spec": {"limits": {"maxTrials": 8}}})
    restatus = patch({"status": {"phase": "Running"}}, status=True)
    relabel = patch({"metadata": {"labels": {"stage": "dev"}}})
    unchanged = patch({"metadata": {"labels": {"stage": "dev"}}})
    versions = [int(o["metadata"]["resourceVersion"]) for o in (created, respec, restatus, relabel, unchanged)]
    assert versions[0] < versions[1] < versions[2] < versions[3] == versions[4]  # one global, increasing counter
    assert [o["metadata"]["generation"] for o in (respec, restatus, relabel)] == [2, 2, 2]
    assert restatus["status"] == {"phase": "Running", "message": ""}  # with the schema's default


def test_generate_name_gives_five_random_characters(core, emulator):
    pod = core.create_namespaced_pod("default", {"metadata": {"generateName": "fridge-000-1-"}, "spec": {
        "containers": [{"name": "trainer", "image": "trainer:1"}]}})
    assert re.fullmatch(r"fridge-000-1-[a-z0-9]{5}", pod.metadata.name)
    assert pod.status.phase == "Pending" and pod.spec.restart_policy == "Always"
    emulator.pod_logs["default", pod.metadata.name] = "epoch 1: mAP 0.41\n"
    assert core.read_namespaced_pod_log(pod.metadata.name, "default") == "epoch 1: mAP 0.41\n"


def test_label_and_field_selectors_on_lists(core, emulator):
    for name, labels, phase in (("a", {"app": "x", "tier": "web"}, "Running"), ("b", {"app": "x"}, "Failed"),
                                ("c", {"app": "y", "legacy": "1"}, "Running")):
        core.create_namespaced_pod("default", {"metadata": {"name": name, "labels": labels}, "spec": {
            "containers": [{"name": "c", "image": "i:1"}]}})
        emulator.patch("pods", "default", name, {"status": {"phase": phase}}, subresource="status")

    def names(**selectors):
        return sorted(p.metadata.name for p in core.list_namespaced_pod("default", **selectors).items)

    assert names(label_selector="app=x") == names(label_selector="app==x") == ["a", "b"]
    assert names(label_selector="app!=x") == ["c"]
    assert names(label_selector="app in (x, y),tier") == ["a"]
    assert names(label_selector="app notin (y)") == ["a", "b"]
    assert names(label_selector="!legacy,app") == ["a", "b"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector="status.phase=Running,metadata.name!=c") == ["a"]
    assert names(field_selector="metadata.namespace=default", label_selector="tier") == ["a"]
    status, body = failure(lambda: core.list_namespaced_pod("default", field_selector="spec.image=i:1"))
    assert (status, body["reason"], body["message"]) == (400, "BadRequest", "field label not supported: spec.image")


def test_lists_are_typed_lists(http, custom):
    create(custom, experiment())
    listed = http.get(f"/apis/{GROUP}/{VERSION}/namespaces/default/detectionexperiments").json()
    assert (listed["kind"], listed["apiVersion"]) == ("DetectionExperimentList", f"{GROUP}/{VERSION}")
    assert int(listed["metadata"]["resourceVersion"]) >= int(listed["items"][0]["metadata"]["resourceVersion"])
    namespaces = http.get("/api/v1/namespaces").json()
    assert (namespaces["kind"], namespaces["apiVersion"]) == ("NamespaceList", "v1")
    assert "kind" not in namespaces["items"][0]  # as in a real server's built-in lists


def test_json_merge_and_strategic_merge_patches(client, custom, emulator):
    created = create(custom, experiment())
    version = created["metadata"]["resourceVersion"]
    patched = custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", "detectionexperiments", "fridge",
        [{"op": "test", "path": "/metadata/resourceVersion", "value": version},
         {"op": "add", "path": "/metadata/finalizers", "value": ["autodetect.dev/finalizer"]},
         {"op": "replace", "path": "/spec/limits/maxTrials", "value": 6},
         {"op": "remove", "path": "/metadata/labels/team"}], _content_type="application/json-patch+json")
    assert patched["metadata"]["finalizers"] == ["autodetect.dev/finalizer"] and "labels" in patched["metadata"]
    assert patched["spec"]["limits"]["maxTrials"] == 6 and "team" not in patched["metadata"]["labels"]
    status, body = failure(lambda: custom.patch_namespaced_custom_object(  # kopf's stale test: 422, as for real
        GROUP, VERSION, "default", "detectionexperiments", "fridge",
        [{"op": "test", "path": "/metadata/resourceVersion", "value": version},
         {"op": "remove", "path": "/metadata/finalizers/0"}], _content_type="application/json-patch+json"))
    assert (status, body["reason"]) == (422, "Invalid")
    merged = custom.patch_namespaced_custom_object(GROUP, VERSION, "default", "detectionexperiments", "fridge",
                                                   {"spec": {"limits": {"maxTrials": None, "maxFailedTrials": 1}}})
    # null removes maxTrials, and the schema's default fills it again
    assert merged["spec"]["limits"] == {"maxTrials": 1, "maxFailedTrials": 1, "maxConcurrentTrials": 1}
    status, _ = failure(lambda: custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", "detectionexperiments", "fridge", {"spec": {}},
        _content_type="application/strategic-merge-patch+json"))
    assert status == 415  # not for custom resources, as on a real server

    apps = kubernetes.client.AppsV1Api(client)
    container = {"name": "server", "image": "serve:1", "env": [{"name": "A", "value": "1"}]}
    apps.create_namespaced_deployment("default", {"metadata": {"name": "fridge"}, "spec": {
        "selector": {"matchLabels": {"app": "fridge"}}, "template": {"metadata": {"labels": {"app": "fridge"}},
                                                                      "spec": {"containers": [container]}}}})
    apps.patch_namespaced_deployment("fridge", "default", {"spec": {"template": {"spec": {"containers": [
        {"name": "server", "image": "serve:2", "env": [{"name": "B", "value": "2"}]},
        {"name": "sidecar", "image": "side:1"}]}}}})  # the client sends a strategic merge patch
    containers = emulator.get("deployments", "default", "fridge")["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [("server", "serve:2"), ("sidecar", "side:1")]
    assert containers[0]["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]


def test_status_is_a_subresource_of_its_own(custom):
    create(custom, experiment())
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, "default", "detectionexperiments", "fridge",
                                                 {"status": {"phase": "Running"}})
    current = custom.get_namespaced_custom_object(GROUP, VERSION, "default", "detectionexperiments", "fridge")
    replaced = custom.replace_namespaced_custom_object(
        GROUP, VERSION, "default", "detectionexperiments", "fridge",
        {**current, "spec": {**current["spec"], "limits": {"maxTrials": 9}}, "status": {"phase": "Failed"}})
    assert replaced["status"]["phase"] == "Running" and replaced["spec"]["limits"]["maxTrials"] == 9
    restatused = custom.replace_namespaced_custom_object_status(
        GROUP, VERSION, "default", "detectionexperiments", "fridge",
        {**replaced, "spec": {**replaced["spec"], "limits": {"maxTrials": 1}}, "status": {"phase": "Succeeded"}})
    assert restatused["status"]["phase"] == "Succeeded" and restatused["spec"]["limits"]["maxTrials"] == 9
    assert restatused["metadata"]["generation"] == replaced["metadata"]["generation"] == 2


def test_conflicts_answer_409_as_a_real_server(custom):
    first = create(custom, experiment())
    status, body = failure(lambda: create(custom, experiment()))
    assert (status, body["kind"], body["reason"], body["details"]["name"]) == (409, "Status", "AlreadyExists",
                                                                                "fridge")
    assert body["message"] == 'detectionexperiments.autodetect.dev "fridge" already exists'
    custom.patch_namespaced_custom_object(GROUP, VERSION, "default", "detectionexperiments", "fridge",
                                          {"metadata": {"labels": {"x": "y"}}})
    stale = {**first, "spec": {**first["spec"], "limits": {"maxTrials": 2}}}
    status, body = failure(lambda: custom.replace_namespaced_custom_object(
        GROUP, VERSION, "default", "detectionexperiments", "fridge", stale))
    assert (status, body["reason"]) == (409, "Conflict")
    assert body["message"].startswith('Operation cannot be fulfilled on detectionexperiments.autodetect.dev "fridge"')
    status, body = failure(lambda: custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", "detectionexperiments", "fridge",
        {"metadata": {"resourceVersion": first["metadata"]["resourceVersion"]}, "spec": {"limits": {"maxTrials": 3}}}))
    assert (status, body["reason"]) == (409, "Conflict")


def test_schema_violations_are_refused_naming_the_field_and_unknown_fields_pruned(custom, http):
    status, body = failure(lambda: create(custom, experiment(limits={"maxTrials": 0}, sampling={"algorithm": "x"})))
    assert (status, body["reason"]) == (422, "Invalid")
    assert sorted(cause["field"] for cause in body["details"]["causes"]) == ["spec.limits.maxTrials",
                                                                             "spec.sampling.algorithm"]
    assert "spec.limits.maxTrials in body should be greater than or equal to 1" in body["message"]
    answer = http.post(f"/apis/{GROUP}/{VERSION}/namespaces/default/detectionexperiments",
                       json=experiment(limits={"maxTrials": 2, "maxTrails": 9}, extra={"a": 1}))
    assert answer.status_code == 201
    assert sorted(answer.headers.get_list("Warning")) == ['299 - "unknown field \\"spec.extra\\""',
                                                          '299 - "unknown field \\"spec.limits.maxTrails\\""']
    stored = answer.json()["spec"]
    assert "extra" not in stored and stored["limits"]["maxTrials"] == 2 and "maxTrails" not in stored["limits"]
    assert stored["searchSpace"] == EXPERIMENT["spec"]["searchSpace"]  # x-kubernetes-preserve-unknown-fields
    strict = http.post(f"/apis/{GROUP}/{VERSION}/namespaces/default/detectionexperiments",
                       params={"fieldValidation": "Strict"}, json=experiment(name="other", extra=1))
    assert strict.status_code == 400 and 'strict decoding error: unknown field "spec.extra"' in strict.json()["message"]


def test_built_in_kinds_are_checked_against_the_kubernetes_schemas(client, http):
    batch = kubernetes.client.BatchV1Api(client)
    bad = job()
    bad["spec"]["backoffLimit"] = "none"
    answer = http.post("/apis/batch/v1/namespaces/default/jobs", json=bad)
    assert answer.status_code == 422 and answer.json()["details"]["causes"][0]["field"] == "spec.backoffLimit"
    forever = job("forever")
    forever["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    status, body = failure(lambda: batch.create_namespaced_job("default", forever))
    assert status == 422 and body["details"]["causes"][0]["field"] == "spec.template.spec.restartPolicy"
    unknown = job("unknown")
    unknown["spec"]["template"]["spec"]["containers"][0]["gpus"] = 1
    answer = http.post("/apis/batch/v1/namespaces/default/jobs", json=unknown)
    assert answer.headers["Warning"] == '299 - "unknown field \\"spec.template.spec.containers[0].gpus\\""'
    assert "gpus" not in answer.json()["spec"]["template"]["spec"]["containers"][0]
    long_name = job("x" * 64)
    assert http.post("/apis/batch/v1/namespaces/default/jobs", json=long_name).status_code == 422


def test_cel_rules_of_a_crd_are_evaluated(emulator, custom):
    """The generated CRDs carry CEL rules (x-kubernetes-validations) beside the pydantic checks they mirror."""
    good = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "DetectionDeployment",
            "metadata": {"name": "fridge", "namespace": "default"},
            "spec": {"model": {"experimentRef": "fridge"}, "replicas": {"min": 1, "max": 2}}}
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", "detectiondeployments", good)
    bad = {**good, "metadata": {"name": "bad", "namespace": "default"},
           "spec": {"model": {"experimentRef": "a", "modelRef": "b"}, "replicas": {"min": 3, "max": 2}}}
    status, body = failure(lambda: custom.create_namespaced_custom_object(GROUP, VERSION, "default",
                                                                          "detectiondeployments", bad))
    assert status == 422
    assert {(c["field"], c["message"].rsplit(": ", 1)[-1]) for c in body["details"]["causes"]} == {
        ("spec.model", "give exactly one of experimentRef or modelRef"), ("spec.replicas", "max must be at least min")}


def test_deletion_collects_dependents_and_waits_for_finalizers(client, custom, emulator):
    batch = kubernetes.client.BatchV1Api(client)
    owner = create(custom, experiment())
    trial = create(custom, {**TRIAL, "metadata": {**TRIAL["metadata"], "finalizers": ["autodetect.dev/finalizer"],
                                                  "ownerReferences": [{
                                                      "apiVersion": owner["apiVersion"], "kind": owner["kind"],
                                                      "name": "fridge", "uid": owner["metadata"]["uid"]}]}})
    made = batch.create_namespaced_job("default", job(owner=trial))
    assert made.spec.selector.match_labels == {"batch.kubernetes.io/controller-uid": made.metadata.uid}
    pod = controllers.job_pod(emulator, emulator.get("jobs", "default", made.metadata.name))

    custom.delete_namespaced_custom_object(GROUP, VERSION, "default", "detectionexperiments", "fridge")
    held = emulator.get("dtrial", "default", "fridge-000")
    assert held["metadata"]["deletionTimestamp"] and held["metadata"]["deletionGracePeriodSeconds"] == 0
    assert emulator.get("jobs", "default", "fridge-000-1") is not None  # the trial still exists
    status, body = failure(lambda: custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", "detectiontrials", "fridge-000",
        {"metadata": {"finalizers": ["autodetect.dev/finalizer", "other.dev/x"]}}))
    assert status == 422 and "no new finalizers can be added" in body["message"]
    custom.patch_namespaced_custom_object(GROUP, VERSION, "default", "detectiontrials", "fridge-000",
                                          {"metadata": {"finalizers": None}})
    assert [emulator.get(kind, "default", name) for kind, name in (
        ("dtrial", "fridge-000"), ("jobs", "fridge-000-1"), ("pods", pod["metadata"]["name"]))] == [None] * 3


def test_orphan_and_the_job_default_keep_dependents(client, emulator):
    batch = kubernetes.client.BatchV1Api(client)
    for name, policy in (("kept-by-default", None), ("orphaned", "Orphan"), ("collected", "Background")):
        made = batch.create_namespaced_job("default", job(name))
        pod = controllers.job_pod(emulator, made.to_dict() | {"metadata": {"name": name, "namespace": "default"}})
        batch.delete_namespaced_job(name, "default", propagation_policy=policy)
        left = emulator.get("pods", "default", pod["metadata"]["name"])
        if policy == "Background":
            assert left is None
        else:  # batch/v1 Jobs orphan their pods unless told otherwise
            assert left is not None and "ownerReferences" not in left["metadata"]


def test_namespaces_are_a_cluster_scoped_resource(core, custom, emulator):
    assert {"default", "kube-system"} <= {ns.metadata.name for ns in core.list_namespace().items}
    core.create_namespace({"metadata": {"name": "team-a"}})
    assert core.read_namespace("team-a").status.phase == "Active"
    assert emulator.get("serviceaccounts", "team-a", "default") is not None
    create(custom, experiment(namespace="team-a"))
    status, _ = failure(lambda: create(custom, experiment(namespace="missing")))
    assert status == 404
    core.delete_namespace("team-a")
    assert emulator.get("namespaces", None, "team-a") is None and emulator.get("dexp", "team-a", "fridge") is None


def test_watch_streams_from_a_resource_version_with_selectors(client, custom, emulator):
    watch = kubernetes.watch.Watch()
    start = custom.list_namespaced_custom_object(GROUP, VERSION, "default", "detectionexperiments")
    create(custom, experiment("a"))
    create(custom, {**experiment("b"), "metadata": {"name": "b", "namespace": "default", "labels": {}}})
    custom.patch_namespaced_custom_object(GROUP, VERSION, "default", "detectionexperiments", "a",
                                          {"metadata": {"labels": {"team": "other"}}})  # leaves the selection
    custom.delete_namespaced_custom_object(GROUP, VERSION, "default", "detectionexperiments", "b")
    events = [(e["type"], e["object"]["metadata"]["name"]) for e in watch.stream(
        custom.list_namespaced_custom_object, GROUP, VERSION, "default", "detectionexperiments",
        resource_version=start["metadata"]["resourceVersion"], timeout_seconds=1)]
    assert events == [("ADDED", "a"), ("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
    selected = [(e["type"], e["object"]["metadata"]["name"]) for e in watch.stream(
        custom.list_namespaced_custom_object, GROUP, VERSION, "default", "detectionexperiments",
        label_selector="team=vision", resource_version=start["metadata"]["resourceVersion"], timeout_seconds=1)]
    assert selected == [("ADDED", "a"), ("DELETED", "a")]
    emulator.compact()
    with pytest.raises(kubernetes.client.ApiException) as gone:
        list(watch.stream(custom.list_namespaced_custom_object, GROUP, VERSION, "default", "detectionexperiments",
                          resource_version=start["metadata"]["resourceVersion"], timeout_seconds=1))
    assert gone.value.status == 410


def test_discovery_serves_what_kopf_and_kubectl_need(http):
    core = {r["name"]: r for r in http.get("/api/v1").json()["resources"]}
    assert not core["namespaces"]["namespaced"] and {"list", "watch"} <= set(core["namespaces"]["verbs"])
    assert {"pods/status", "pods/log", "events", "secrets", "services", "serviceaccounts", "configmaps"} <= set(core)
    groups = {g["name"]: g["preferredVersion"]["version"] for g in http.get("/apis").json()["groups"]}
    assert groups | {GROUP: VERSION, "kopf.dev": "v1", "batch": "v1", "autoscaling": "v2"} == groups
    ours = {r["name"]: r for r in http.get(f"/apis/{GROUP}/{VERSION}").json()["resources"]}
    assert ours["detectionexperiments"]["shortNames"] == ["dexp"] and "detectionexperiments/status" in ours
    assert ours["detectionexperiments"]["categories"] == ["autodetect"]
    peering = {r["name"]: r["namespaced"] for r in http.get("/apis/kopf.dev/v1").json()["resources"]}
    assert peering == {"kopfpeerings": True, "clusterkopfpeerings": False}
    for group, version in [("", "v1"), *((g, v) for g, v in groups.items())]:
        listed = http.get(f"/apis/{group}/{version}" if group else "/api/v1").json()["resources"]
        assert all({"list", "watch"} <= set(r["verbs"]) for r in listed if "/" not in r["name"])


def test_request_log_gives_the_rbac_attributes(client, custom, emulator):
    core = kubernetes.client.CoreV1Api(client)
    create(custom, experiment())
    custom.get_namespaced_custom_object(GROUP, VERSION, "default", "detectionexperiments", "fridge")
    custom.list_cluster_custom_object(GROUP, VERSION, "detectionexperiments", field_selector="metadata.name=fridge")
    list(kubernetes.watch.Watch().stream(custom.list_namespaced_custom_object, GROUP, VERSION, "default",
                                         "detectionexperiments", timeout_seconds=1))
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, "default", "detectionexperiments", "fridge",
                                                 {"status": {"phase": "Running"}})
    current = custom.get_namespaced_custom_object(GROUP, VERSION, "default", "detectionexperiments", "fridge")
    custom.replace_namespaced_custom_object(GROUP, VERSION, "default", "detectionexperiments", "fridge", current)
    custom.delete_namespaced_custom_object(GROUP, VERSION, "default", "detectionexperiments", "fridge")
    core.delete_collection_namespaced_pod("default")
    core.read_namespace("default")
    triples = [(r.verb, r.api_group, r.resource, r.namespace, r.name) for r in emulator.requests("operator")]
    assert triples == [
        ("create", GROUP, "detectionexperiments", "default", ""),
        ("get", GROUP, "detectionexperiments", "default", "fridge"),
        ("list", GROUP, "detectionexperiments", "", "fridge"),
        ("watch", GROUP, "detectionexperiments", "default", ""),
        ("patch", GROUP, "detectionexperiments/status", "default", "fridge"),
        ("get", GROUP, "detectionexperiments", "default", "fridge"),
        ("update", GROUP, "detectionexperiments", "default", "fridge"),
        ("delete", GROUP, "detectionexperiments", "default", "fridge"),
        ("deletecollection", "", "pods", "default", ""),
        ("get", "", "namespaces", "default", "default")]
    assert all(r.status in (200, 201) for r in emulator.requests("operator"))


def test_injected_faults_answer_then_recover(custom, emulator):
    create(custom, experiment())
    conflict = emulator.inject(409, "PATCH", "detectionexperiments", "status", times=2)
    invalid = emulator.inject(422, "POST", "detectiontrials")
    lost = emulator.inject(500, "PATCH", "detectionexperiments", None, commit=True)

    def patch_status():
        return custom.patch_namespaced_custom_object_status(GROUP, VERSION, "default", "detectionexperiments",
                                                            "fridge", {"status": {"phase": "Running"}})

    assert [failure(patch_status)[1]["reason"] for _ in range(2)] == ["Conflict", "Conflict"]
    assert patch_status()["status"]["phase"] == "Running" and conflict.times == 0
    status, body = failure(lambda: create(custom, TRIAL))
    assert (status, body["reason"], body["details"]["causes"][0]["field"]) == (422, "Invalid", "metadata.name")
    assert create(custom, TRIAL)["metadata"]["name"] == "fridge-000" and invalid.times == 0
    status, _ = failure(lambda: custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", "detectionexperiments", "fridge", {"spec": {"limits": {"maxTrials": 7}}}))
    assert status == 500 and emulator.get("dexp", "default", "fridge")["spec"]["limits"]["maxTrials"] == 7
    assert lost.times == 0 and emulator.inject(409, subresource=ANY).matches  # any write, any subresource


# ---- the simulated controllers ---------------------------------------------------------------------------------


def test_job_controller_and_kubelet_steps(emulator):
    made = emulator.create(job())
    pod = controllers.job_pod(emulator, made)
    assert pod["metadata"]["labels"]["job-name"] == "fridge-000-1"
    assert pod["metadata"]["ownerReferences"][0]["uid"] == made["metadata"]["uid"]
    assert emulator.get("jobs", "default", "fridge-000-1")["status"]["active"] == 1
    waiting = controllers.pod_pending(emulator, pod, "ErrImagePull")
    assert waiting["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ErrImagePull"
    unschedulable = controllers.pod_pending(emulator, pod, "Unschedulable")
    assert unschedulable["status"]["conditions"][0]["reason"] == "Unschedulable"
    controllers.pod_running(emulator, pod)
    ended = controllers.pod_terminated(emulator, pod, exit_code=137)
    assert ended["status"]["phase"] == "Failed"
    assert ended["status"]["containerStatuses"][0]["state"]["terminated"]["reason"] == "OOMKilled"
    failed = controllers.job_finished(emulator, made, succeeded=False)
    assert [(c["type"], c["reason"]) for c in failed["status"]["conditions"]] == [
        ("FailureTarget", "BackoffLimitExceeded"), ("Failed", "BackoffLimitExceeded")]
    assert failed["status"]["failed"] == 1 and failed["status"]["active"] == 0
    other = emulator.create(job("fridge-001-1"))
    controllers.run_job(emulator, other, exit_code=0)
    done = emulator.get("jobs", "default", "fridge-001-1")["status"]
    assert done["succeeded"] == 1 and done["completionTime"] and done["conditions"][-1]["type"] == "Complete"


def test_deployment_controller_step(emulator):
    made = emulator.create({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {
        "name": "fridge", "namespace": "default"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"a": "b"}},
                                                            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {
                                                                "containers": [{"name": "c", "image": "i:1"}]}}}})
    halfway = controllers.deployment_progress(emulator, made, ready=1)["status"]
    assert (halfway["readyReplicas"], halfway["unavailableReplicas"]) == (1, 1)
    assert halfway["conditions"][0]["status"] == "False"
    done = controllers.deployment_progress(emulator, made)["status"]
    assert done["observedGeneration"] == 1 and done["availableReplicas"] == 2 and "unavailableReplicas" not in done
    assert [(c["type"], c["status"]) for c in done["conditions"]] == [("Available", "True"), ("Progressing", "True")]


# ---- kopf ------------------------------------------------------------------------------------------------------


def detection_operator(seen: list, tag: str = "", timer: bool = False,
                       login=kopf.login_via_client) -> kopf.OperatorRegistry:
    registry = operators.registry(login)
    settings = dict(registry=registry)

    @kopf.on.create(GROUP, VERSION, "detectionexperiments", **settings)
    def created(name, namespace, patch, **_):
        seen.append(("create", tag, namespace, name))
        patch.status["phase"] = "Running"

    @kopf.on.update(GROUP, VERSION, "detectionexperiments", field="spec", **settings)
    def updated(name, **_):
        seen.append(("update", tag, name))

    if timer:  # kopf gives a timer 5 s to stop when the operator stops
        @kopf.timer(GROUP, VERSION, "detectionexperiments", interval=0.2, **settings)
        def ticked(name, patch, **_):
            seen.append(("timer", tag, name))
            patch.status["message"] = "ticked"  # a field of the schema: an unknown one would be pruned

    @kopf.on.delete(GROUP, VERSION, "detectionexperiments", **settings)
    def deleted(name, **_):
        seen.append(("delete", tag, name))

    return registry


def kopf_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = "autodetect.dev/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="autodetect.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="autodetect.dev")
    return settings


def test_kopf_operator_handles_create_update_timer_and_finalizer(emulator, kubeconfig):
    seen: list = []
    with operators.running(detection_operator(seen, timer=True), settings=kopf_settings()):
        emulator.create(experiment())
        status = {"phase": "Running", "message": "ticked"}  # from the create handler and from the timer
        emulator.wait_for(lambda: emulator.get("dexp", "default", "fridge").get("status") == status)
        assert emulator.get("dexp", "default", "fridge")["metadata"]["finalizers"] == ["autodetect.dev/finalizer"]
        assert ("create", "", "default", "fridge") in seen
        emulator.patch("dexp", "default", "fridge", {"spec": {"limits": {"maxTrials": 9}}})
        emulator.wait_for(lambda: ("update", "", "fridge") in seen)
        assert not emulator.delete("dexp", "default", "fridge")  # held by kopf's finalizer
        emulator.wait_for(lambda: emulator.get("dexp", "default", "fridge") is None)
    assert ("delete", "", "fridge") in seen
    failed = [(r.method, r.path, r.status) for r in emulator.requests("operator") if r.status >= 400]
    assert not failed


def test_kopf_operator_limited_to_a_namespace(emulator, kubeconfig):
    emulator.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}})
    emulator.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-b"}})
    seen: list = []
    operator = detection_operator(seen, login=kopf.login_with_kubeconfig)  # kopf's own reading of KUBECONFIG
    with operators.running(operator, settings=kopf_settings(), namespaces=("team-a",)):
        emulator.create(experiment(namespace="team-b"))
        emulator.create(experiment(namespace="team-a"))
        emulator.wait_for(lambda: ("create", "", "team-a", "fridge") in seen)
    assert not [entry for entry in seen if "team-b" in entry]
    watched = {(r.verb, r.resource, r.namespace) for r in emulator.requests("operator") if r.verb == "watch"}
    assert ("watch", "namespaces", "") in watched and ("watch", "detectionexperiments", "team-a") in watched
    assert not [w for w in watched if w[1] == "detectionexperiments" and w[2] != "team-a"]


def test_two_peered_kopf_operators_only_the_higher_priority_acts(emulator, kubeconfig):
    emulator.create({"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "autodetect"}})
    seen: list = []
    peered = dict(standalone=False, peering_name="autodetect")  # each its own settings: kopf writes into them

    def peers() -> set[int]:
        return {peer["priority"] for peer in
                (emulator.get("clusterkopfpeerings", None, "autodetect").get("status") or {}).values()}

    # the higher one first, so that the lower one starts paused: kopf acts only once it has seen its peers
    with operators.running(detection_operator(seen, "high"), settings=kopf_settings(), priority=200,
                           **peered) as high:
        emulator.wait_for(lambda: peers() == {200})
        with operators.running(detection_operator(seen, "low"), settings=kopf_settings(), priority=100, **peered):
            emulator.wait_for(lambda: peers() == {100, 200})
            emulator.create(experiment("first"))
            emulator.wait_for(lambda: "autodetect.dev/last-handled-configuration" in (
                emulator.get("dexp", "default", "first")["metadata"].get("annotations") or {}))
            high.stop()
            emulator.wait_for(lambda: peers() == {100})  # the higher one left: the lower one takes over
            emulator.create(experiment("second"))
            emulator.wait_for(lambda: ("create", "low", "default", "second") in seen)
    assert [entry for entry in seen if entry[0] == "create"] == [("create", "high", "default", "first"),
                                                                  ("create", "low", "default", "second")]


# ---- kubectl ---------------------------------------------------------------------------------------------------


def test_the_binaries_come_from_the_pip_package():
    found = tools.binaries()
    assert "v1.35" in subprocess.run([str(found["kubectl"]), "version", "--client"], capture_output=True,
                                     text=True, check=True).stdout
    assert "v4." in subprocess.run([str(found["helm"]), "version"], capture_output=True, text=True,
                                   check=True).stdout


def test_kubectl_apply_get_describe_and_wait(kubectl, emulator, tmp_path):
    manifest = tmp_path / "experiment.yaml"
    manifest.write_text(yaml.safe_dump(experiment()))
    assert "detectionexperiment.autodetect.dev/fridge created" in kubectl("apply", "-f", str(manifest)).stdout
    assert "unchanged" in kubectl("apply", "-f", str(manifest)).stdout
    manifest.write_text(yaml.safe_dump(experiment(limits={"maxTrials": 5})))
    assert "configured" in kubectl("apply", "-f", str(manifest)).stdout
    assert emulator.get("dexp", "default", "fridge")["spec"]["limits"]["maxTrials"] == 5
    emulator.patch("dexp", "default", "fridge", {"status": {"phase": "Running", "trials": {"total": 3}}},
                   subresource="status")
    table = kubectl("get", "dexp").stdout.splitlines()
    assert table[0].split()[:3] == ["NAME", "PHASE", "TRIALS"] and table[1].split()[:3] == ["fridge", "Running", "3"]
    assert yaml.safe_load(kubectl("get", "detectionexperiments", "fridge", "-o", "yaml").stdout)["status"]["phase"] \
        == "Running"
    assert "Dataset:" in kubectl("describe", "dexp", "fridge").stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(experiment(name="bad", limits={"maxTrials": 0})))
    refused = kubectl("apply", "-f", str(bad), check=False)
    assert refused.returncode and "spec.limits.maxTrials" in refused.stderr

    waiter = subprocess.Popen([str(tools.kubectl()), "--kubeconfig", str(emulator.kubeconfig(tmp_path / "config")),
                               "wait", "--for=condition=Succeeded", "dexp/fridge", "--timeout=30s"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # kubectl sends no token over plain HTTP: its requests are logged as user system:anonymous
    emulator.wait_for(lambda: any(r.verb == "watch" and r.resource == "detectionexperiments"
                                  for r in emulator.requests("system:anonymous")))
    emulator.patch("dexp", "default", "fridge", {"status": {"conditions": [CONDITION]}}, subresource="status")
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 0, err
    assert "condition met" in out
