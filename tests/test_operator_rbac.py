"""The chart's RBAC is exactly what the operator uses. Every request the operator made to the emulator in the
operator tests (tests/operator_requests.py, fed by the emulator fixture), and in a peered clusterwide run here,
must be allowed by the rendered roles of the scope it ran in; no rule has a wildcard; and every granted verb was
used by some request, unless UNEXERCISED says why the tests do not reach it. The trainer's requests are held to
the trial role the same way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import operator_requests
from operator_harness import NAMESPACE, experiment, running_operator
from test_helm import render

ROOT = Path(__file__).resolve().parents[1]
OPERATOR_MODULES = ["tests/test_operator.py", "tests/test_operator_deployments.py", "tests/test_operator_processes.py"]
CLUSTER_SCOPED = {("", "namespaces"), ("apiextensions.k8s.io", "customresourcedefinitions"),
                  ("kopf.dev", "clusterkopfpeerings")}
SERVICE_ACCOUNT, TRIAL_ACCOUNT = "autodetect", "autodetect-trial"
UNEXERCISED = {  # (verb, group, resource): why no test request uses it
    ("delete", "batch", "jobs"): "a trial stopped that outlives its stop grace has its Job deleted (the engine's "
                                 "Kill): the tests' trainers always end when asked",
}

Key = tuple[str, str, str]  # (verb, api group, resource incl. /subresource)


def recorded() -> list[tuple]:
    """The rows of this session's operator tests; the operator modules this session did not run are run here,
    in a pytest of their own, to record them (so the test also holds when run alone)."""
    rows = [row for row in operator_requests.RECORDED  # other tests may use the user "operator" for themselves
            if row[0].startswith("tests/test_operator") and not row[0].startswith("tests/test_operator_rbac")]
    missing = [module for module in OPERATOR_MODULES if not any(row[0].startswith(module + "::") for row in rows)]
    if not missing:
        return rows
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"autodetect-rbac-{os.getpid()}.jsonl"
    path.unlink(missing_ok=True)
    env = {**os.environ, operator_requests.RECORD_FILE_ENV: str(path)}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *missing],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:]
    rows += [tuple(json.loads(line)) for line in path.read_text().splitlines()]
    path.unlink()
    return rows


def rules_of(objects: list[dict], account: str) -> dict[str, list[dict]]:
    """{namespace or "": the rules bound to the service account there ("": cluster-wide)}."""
    roles = {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o.get("rules", [])
             for o in objects if o["kind"] in ("Role", "ClusterRole")}
    bound: dict[str, list[dict]] = {}
    for o in objects:
        if o["kind"] in ("RoleBinding", "ClusterRoleBinding") and any(
                s["kind"] == "ServiceAccount" and s["name"] == account for s in o["subjects"]):
            ref = o["roleRef"]
            where = o["metadata"].get("namespace", "") if o["kind"] == "RoleBinding" else ""
            role_namespace = "" if ref["kind"] == "ClusterRole" else where
            bound.setdefault(where, []).extend(roles[(ref["kind"], role_namespace, ref["name"])])
    return bound


def allows(rules: list[dict], key: Key) -> bool:
    verb, group, resource = key
    return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in rules)


def granted(bound: dict[str, list[dict]]) -> set[Key]:
    return {(verb, group, resource) for rules in bound.values() for r in rules for group in r["apiGroups"]
            for resource in r["resources"] for verb in r["verbs"]}


def denied(rows: list[tuple], bound: dict[str, list[dict]]) -> set[tuple]:
    """The requests (verb, group, resource, namespace) that the bound rules do not allow."""
    return {(verb, group, resource, namespace) for _, _, verb, group, resource, namespace in rows
            if not allows(bound.get("", []), (verb, group, resource))
            and not (namespace and allows(bound.get(namespace, []), (verb, group, resource)))}


def clusterwide(rows: list[tuple]) -> bool:
    """A clusterwide operator lists and watches namespaced kinds across namespaces; a namespaced one never does."""
    return any(not namespace and (group, resource.partition("/")[0]) not in CLUSTER_SCOPED
               for _, _, _, group, resource, namespace in rows)


@pytest.fixture(scope="module")
def requests(request) -> dict[str, list[tuple]]:
    """The operator's requests by the scope it ran in, and the trainer's."""
    rows = recorded() + request.getfixturevalue("peered_clusterwide_run")
    by_test: dict[str, list[tuple]] = {}
    for row in rows:
        if row[1] in operator_requests.OPERATOR_USERS:
            by_test.setdefault(row[0], []).append(row)
    scoped = {"cluster": [], "namespaced": []}
    for test_rows in by_test.values():
        scoped["cluster" if clusterwide(test_rows) else "namespaced"].extend(test_rows)
    return {**scoped, "trainer": [row for row in rows if row[1] == operator_requests.TRAINER_USER]}


@pytest.fixture(scope="module")
def peered_clusterwide_run(tmp_path_factory) -> list[tuple]:
    """A clusterwide operator that peers through the ClusterKopfPeering (the operator tests run standalone or
    namespaced), taking an experiment to its first Job."""
    from conftest import CRDS
    from apiserver import Emulator

    server = Emulator(crds=CRDS)
    with server.serve():
        server.create({"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "autodetect"}})
        kubeconfig = server.kubeconfig(tmp_path_factory.mktemp("rbac") / "kubeconfig", user="operator")
        with running_operator(kubeconfig, standalone=False, peering_name="autodetect", priority=100):
            server.wait_for(lambda: (server.get("clusterkopfpeerings", None, "autodetect") or {}).get("status"), 30)
            server.create(experiment())
            server.wait_for(lambda: server.get("jobs", NAMESPACE, "fridge-000-0"), 30)
        operator_requests.record("peered-clusterwide", server.requests("operator"))
        return [row for row in operator_requests.RECORDED if row[0] == "peered-clusterwide"]


def namespaces_of(rows: list[tuple]) -> list[str]:
    return sorted({row[5] for row in rows if row[5]})


def test_the_recording_saw_both_scopes_peering_and_the_trainer(requests):
    assert ("list", "kopf.dev", "clusterkopfpeerings") in {r[2:5] for r in requests["cluster"]}
    assert ("patch", "kopf.dev", "kopfpeerings") in {r[2:5] for r in requests["namespaced"]}
    assert ("patch", "autodetect.dev", "detectiontrials/status") in {r[2:5] for r in requests["trainer"]}


def test_the_cluster_scope_allows_every_request_and_no_more(requests):
    bound = rules_of(render(), SERVICE_ACCOUNT)
    assert set(bound) == {""}, "cluster scope: ClusterRoles only"
    assert denied(requests["cluster"], bound) == set()
    used = {r[2:5] for r in requests["cluster"] + requests["namespaced"]}
    assert granted(bound) - used - set(UNEXERCISED) == set(), "granted, but no request of the tests uses it"


def test_the_namespaced_scope_allows_every_request_in_its_namespaces_and_no_more(requests):
    namespaces = namespaces_of(requests["namespaced"])
    bound = rules_of(render("--set-json", f"watchNamespaces={json.dumps(namespaces)}"), SERVICE_ACCOUNT)
    assert set(bound) == {"", *namespaces}
    assert denied(requests["namespaced"], bound) == set()
    assert not any(allows(bound[""], (verb, group, resource)) for verb, group, resource in granted(bound)
                   if (group, resource.partition("/")[0]) not in CLUSTER_SCOPED), "namespaced kinds: Roles only"
    used = {r[2:5] for r in requests["cluster"] + requests["namespaced"]}
    assert granted(bound) - used - set(UNEXERCISED) == set(), "granted, but no request of the tests uses it"


def test_trial_pods_may_read_their_trial_and_write_its_status_only(requests):
    namespaces = json.dumps(namespaces_of(requests["trainer"]))
    for args in (["--set-json", f"trial.namespaces={namespaces}"], ["--set-json", f"watchNamespaces={namespaces}"]):
        bound = rules_of(render(*args), TRIAL_ACCOUNT)
        assert "" not in bound and denied(requests["trainer"], bound) == set()
        assert granted(bound) == {r[2:5] for r in requests["trainer"]}


@pytest.mark.parametrize("args", [[], ["--set-json", 'watchNamespaces=["team"]']])
def test_no_rule_has_a_wildcard(args):
    for obj in render(*args):
        for rule in obj.get("rules", []) if obj["kind"] in ("Role", "ClusterRole") else []:
            assert "*" not in str(rule["apiGroups"] + rule["resources"] + rule["verbs"]), (obj["metadata"], rule)


def test_the_check_fails_for_a_request_the_roles_do_not_allow():
    bound = rules_of(render(), SERVICE_ACCOUNT)
    assert denied([("t", "operator", "delete", "autodetect.dev", "detectionexperiments", "ml")], bound)
    assert denied([("t", "operator", "get", "", "secrets", "ml")], bound) == set()
