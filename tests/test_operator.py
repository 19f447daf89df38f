"""The experiment operator over HTTP against the API server emulator: autodetect's own operator (kopf) runs in a
thread; the test plays the kubelet and the Job controller by patching statuses, and the trainers through the real
KubernetesReporter. Every object the operator writes is checked by the emulator as a real API server checks it
(the CRDs' schemas with pruning and CEL rules); the built-in ones are checked here with kubernetes-validate."""

from __future__ import annotations

import socket
import time

import httpx
import kubernetes_validate
import pytest
import yaml

from apiserver import controllers
from operator_harness import NAMESPACE, Cluster, experiment, running_operator

from autodetect.operator.experiments import Settings

BANDIT = {"policy": "bandit", "slackFactor": 0.1, "evaluationInterval": 1, "delayEvaluation": 1}


@pytest.fixture
def cluster(emulator, kubeconfig) -> Cluster:
    return Cluster(emulator, kubeconfig)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def operator_errors(emulator) -> list:
    """What the operator asked for and was refused, but for the answers a real operator expects (404, 409)."""
    return [(r.method, r.path, r.status) for r in emulator.requests("operator") if r.status >= 400
            and r.status not in (404, 409)]


def quiet(emulator, seconds: float = 2.0, timeout: float = 30) -> None:
    """Wait until the operator has made no request for `seconds`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        made = len(emulator.requests("operator"))
        try:
            emulator.wait_for(lambda: len(emulator.requests("operator")) != made, seconds)
        except TimeoutError:
            return
    raise AssertionError(f"the operator did not go quiet within {timeout} s")


def stop_requested(cluster: Cluster, trial: str) -> bool:
    return bool((cluster.get("detectiontrials", trial) or {}).get("spec", {}).get("stop"))


def test_a_sweep_runs_trials_as_jobs_prunes_one_and_registers_the_best(cluster, emulator, kubeconfig, kubectl):
    with running_operator(kubeconfig):
        emulator.create(experiment(limits={"maxTrials": 3, "maxConcurrentTrials": 2}, earlyTermination=BANDIT))
        for job in ("fridge-000-0", "fridge-001-0"):
            made = cluster.wait_job(job)
            assert kubernetes_validate.validate(made, "1.35", strict=True)
            assert made["metadata"]["ownerReferences"][0]["kind"] == "DetectionTrial"
        trial = cluster.get("detectiontrials", "fridge-000")
        assert trial["metadata"]["ownerReferences"][0]["name"] == "fridge" and trial["spec"]["attempt"] == 0
        assert not cluster.get("jobs", "fridge-002-0")  # two at once, never more

        for trial, job in (("fridge-000", "fridge-000-0"), ("fridge-001", "fridge-001-0")):
            cluster.start(job)
        assert cluster.phase("fridge-000") == "Running"
        cluster.report("fridge-000", 0.9)
        cluster.report("fridge-001", 0.1)
        cluster.wait(lambda: stop_requested(cluster, "fridge-001"), what="the bandit to stop fridge-001")
        assert cluster.reporters["fridge-001"].should_stop()  # what the trainer reads between epochs
        cluster.finish("fridge-001", "fridge-001-0", phase="Pruned")
        cluster.start("fridge-002-0")  # the freed slot is taken at once
        cluster.report("fridge-002", 0.5, 0.95)
        cluster.finish("fridge-002", "fridge-002-0")
        cluster.report("fridge-000", 0.92)
        cluster.finish("fridge-000", "fridge-000-0")
        cluster.wait(lambda: cluster.experiment_status().get("phase") == "Succeeded", what="the experiment to succeed")

        status = cluster.experiment_status()
        assert status["trials"] == {"total": 3, "running": 0, "succeeded": 2, "pruned": 1, "failed": 0}
        assert status["bestTrial"]["name"] == "fridge-002" and status["model"] == "fridge-best"
        assert status["observedGeneration"] == 1
        assert {c["type"]: c["status"] for c in status["conditions"]} == {"Created": "True", "Running": "False",
                                                                          "Succeeded": "True"}
        assert cluster.phase("fridge-001") == "Pruned"
        assert cluster.get("detectiontrials", "fridge-001")["status"]["message"].startswith("bandit: best 0.1")
        model = cluster.get("detectionmodels", "fridge-best")
        assert not model["metadata"].get("ownerReferences")  # it outlives the experiment
        assert model["spec"]["lineage"]["trial"] == "fridge-002" and model["spec"]["artifactUri"] == "pvc://artifacts/fridge-002/"
        assert model["spec"]["metrics"]["mean_average_precision"] == 0.95

        reasons = cluster.wait(lambda: (r := [reason for reason, _ in cluster.events()]) and
                               "ExperimentSucceeded" in r and r, what="the last events")
        for reason in ("TrialStarted", "TrialStopping", "TrialPruned", "TrialSucceeded", "BestTrialChanged",
                       "ModelRegistered", "ExperimentSucceeded"):
            assert reason in reasons
        assert reasons.count("TrialStarted") == 3

        assert "condition met" in kubectl("wait", "--for=condition=Succeeded", "dexp/fridge", "--timeout=10s").stdout
        table = kubectl("get", "dexp").stdout.splitlines()
        assert table[0].split()[:6] == ["NAME", "PHASE", "TRIALS", "RUNNING", "SUCCEEDED", "PRUNED"]
        assert table[1].split()[:7] == ["fridge", "Succeeded", "3", "0", "2", "1", "0.95"]
        assert "ModelRegistered" in kubectl("describe", "dexp", "fridge").stdout
    assert operator_errors(emulator) == []


def test_a_failed_job_fails_its_trial_at_once_and_it_is_retried(cluster, emulator, kubeconfig):
    with running_operator(kubeconfig):
        emulator.create(experiment(limits={"maxTrials": 1, "maxFailedTrials": 1}))
        cluster.start("fridge-000-0")
        pod = emulator.list("pods", NAMESPACE, labels="job-name=fridge-000-0")[0]
        controllers.pod_terminated(emulator, pod, 137)  # before the Job controller marks the Job
        cluster.wait(lambda: cluster.phase("fridge-000") == "Pending" and
                     cluster.get("detectiontrials", "fridge-000")["spec"]["attempt"] == 1, what="the retry")
        trial = cluster.get("detectiontrials", "fridge-000")
        assert trial["status"]["message"].startswith("attempt 1; attempt 0 failed: the trainer exited with code 137 "
                                                     "(OOMKilled)")
        cluster.wait_job("fridge-000-1")
        reasons = cluster.wait(lambda: (r := [e for e, _ in cluster.events()]) and "TrialRetried" in r and r)
        assert "TrialFailed" in reasons
        cluster.exit("fridge-000-1", 1, message="RuntimeError: CUDA error: an illegal memory access")
        cluster.wait(lambda: cluster.experiment_status().get("phase") == "Failed", what="the experiment to fail")
        assert "more than maxFailedTrials (1)" in cluster.experiment_status()["message"]
        assert "illegal memory access" in cluster.get("detectiontrials", "fridge-000")["status"]["message"]
    assert operator_errors(emulator) == []


def test_a_pod_that_cannot_start_shows_then_fails_the_experiment_and_stops_the_rest(cluster, emulator, kubeconfig):
    with running_operator(kubeconfig, settings=Settings(start_grace_s=2)):
        emulator.create(experiment(limits={"maxTrials": 2, "maxConcurrentTrials": 2}))
        cluster.start("fridge-001-0")
        pod = controllers.job_pod(emulator, cluster.wait_job("fridge-000-0"))
        controllers.pod_pending(emulator, pod, "ImagePullBackOff")
        started = cluster.wait(lambda: next((c for c in (cluster.get("detectiontrials", "fridge-000").get("status") or
                                                         {}).get("conditions", []) if c["type"] == "Started"), None))
        assert (started["status"], started["reason"]) == ("False", "ImagePullBackOff")
        cluster.wait(lambda: cluster.experiment_status().get("phase") == "Failed", what="the experiment to fail")
        status = cluster.experiment_status()
        assert "fridge-000 failed on its input" in status["message"] and "ImagePullBackOff" in status["message"]
        assert next(c for c in status["conditions"] if c["type"] == "Failed")["reason"] == "TrialInputInvalid"
        assert cluster.get("detectiontrials", "fridge-000")["status"]["reason"] == "ImagePullBackOff"
        assert not cluster.get("jobs", "fridge-000-1")  # not retried
        cluster.wait(lambda: stop_requested(cluster, "fridge-001"), what="the running trial to be stopped")
        assert "TrialCannotStart" in [e for e, _ in cluster.events()]


def test_changes_wake_the_experiment_with_no_timer_pass_in_sight(cluster, emulator, kubeconfig):
    """The timer is an hour away: a trial's end starts the next Job, an evaluation gets its trial pruned, and a
    pod that cannot start shows on its trial, each woken by the change itself."""
    with running_operator(kubeconfig, timer_s=3600):
        emulator.create(experiment(limits={"maxTrials": 3, "maxConcurrentTrials": 2}, earlyTermination=BANDIT))
        for job in ("fridge-000-0", "fridge-001-0"):
            cluster.start(job)
        cluster.report("fridge-000", 0.9)
        cluster.report("fridge-001", 0.1)
        cluster.wait(lambda: stop_requested(cluster, "fridge-001"), what="the bandit to stop fridge-001")
        cluster.finish("fridge-001", "fridge-001-0", phase="Pruned")
        pod = controllers.job_pod(emulator, cluster.wait_job("fridge-002-0"))
        quiet(emulator)  # the passes the pod's making woke are done: only the pod's next change can wake one
        controllers.pod_pending(emulator, pod, "ImagePullBackOff")
        cluster.wait(lambda: any(c["type"] == "Started" and c["reason"] == "ImagePullBackOff" for c in
                                 (cluster.get("detectiontrials", "fridge-002").get("status") or {}).get("conditions",
                                                                                                         [])),
                     what="the pod's reason on its trial")
    assert operator_errors(emulator) == []


def test_an_ended_experiment_rests_until_something_changes(cluster, emulator, kubeconfig):
    with running_operator(kubeconfig, timer_s=0.2):
        emulator.create(experiment(limits={"maxTrials": 1}))
        cluster.start("fridge-000-0")
        cluster.report("fridge-000", 0.5)
        cluster.finish("fridge-000", "fridge-000-0")
        cluster.wait(lambda: cluster.experiment_status().get("phase") == "Succeeded", what="the experiment to succeed")
        quiet(emulator)  # no timer pass: a thousand ended experiments cost nothing
        emulator.delete("detectionmodels", NAMESPACE, "fridge-best")
        emulator.patch("detectiontrials", NAMESPACE, "fridge-000", {"metadata": {"labels": {"touched": "yes"}}})
        cluster.wait(lambda: cluster.get("detectionmodels", "fridge-best"), what="a change to wake it: the model again")


def test_bad_input_fails_the_experiment_at_once_with_the_trainers_message(cluster, emulator, kubeconfig):
    with running_operator(kubeconfig):
        emulator.create(experiment(limits={"maxTrials": 3, "maxFailedTrials": 3}))
        cluster.start("fridge-000-0")
        cluster.reporters.pop("fridge-000").finish(
            "Failed", None, None, "/mnt/pvc/datasets/fridge/train.jsonl: no such file", reason="InvalidInput")
        cluster.exit("fridge-000-0", 2)
        cluster.wait(lambda: cluster.experiment_status().get("phase") == "Failed", what="the experiment to fail")
        assert "train.jsonl: no such file" in cluster.experiment_status()["message"]
        assert cluster.names("jobs") == ["fridge-000-0"] and cluster.names("detectiontrials") == ["fridge-000"]


@pytest.mark.parametrize("change, field", [
    ({"searchSpace": [{"model_name": "yolov8", "learning_rat": 0.1}]}, "spec.searchSpace[0].learning_rat"),
    ({"searchSpace": [{"model_name": "yolov8", "learning_rate": {"type": "uniform", "min_value": 0.1,
                                                                 "max_value": 0.01}}]}, "spec.searchSpace[0]"),
    ({"artifacts": {"uri": "file:///tmp/artifacts/"}}, "spec.artifacts.uri"),
])
def test_an_invalid_experiment_that_got_in_ends_failed_and_starts_nothing(cluster, emulator, kubeconfig, change,
                                                                          field):
    with running_operator(kubeconfig):
        emulator.create(experiment(**change))
        cluster.wait(lambda: cluster.experiment_status().get("phase") == "Failed", what="InvalidSpec")
        status = cluster.experiment_status()
        assert field in status["message"]
        assert next(c for c in status["conditions"] if c["type"] == "Failed")["reason"] == "InvalidSpec"
        assert cluster.names("detectiontrials") == [] and cluster.names("jobs") == []


def test_a_spec_change_beyond_the_limits_fails_a_running_experiment(cluster, emulator, kubeconfig):
    with running_operator(kubeconfig):
        emulator.create(experiment(limits={"maxTrials": 2}))
        cluster.wait(lambda: cluster.experiment_status().get("phase") == "Running", what="a running experiment")
        emulator.patch("dexp", NAMESPACE, "fridge", {"spec": {"limits": {"maxTrials": 3}}})  # allowed
        emulator.patch("dexp", NAMESPACE, "fridge", {"spec": {"primaryMetric": "recall"}})
        cluster.wait(lambda: cluster.experiment_status().get("phase") == "Failed", what="InvalidSpec")
        assert "spec.primaryMetric changed while the experiment ran" in cluster.experiment_status()["message"]


def test_deleting_the_experiment_removes_its_trials_and_jobs_but_keeps_the_model(cluster, emulator, kubeconfig):
    with running_operator(kubeconfig):
        emulator.create(experiment(limits={"maxTrials": 2, "maxConcurrentTrials": 1}))
        cluster.start("fridge-000-0")
        cluster.report("fridge-000", 0.5)
        cluster.finish("fridge-000", "fridge-000-0")
        cluster.start("fridge-001-0")
        cluster.report("fridge-001", 0.4)
        cluster.finish("fridge-001", "fridge-001-0")
        cluster.wait(lambda: cluster.get("detectionmodels", "fridge-best"), what="the model")
        emulator.delete("dexp", NAMESPACE, "fridge")
        cluster.wait(lambda: not cluster.get("detectionexperiments", "fridge") and not cluster.names("detectiontrials")
                     and not cluster.names("jobs") and not cluster.names("pods"), what="everything to be collected")
        assert cluster.get("detectionmodels", "fridge-best")


WRITES = [("POST", "detectiontrials", None), ("POST", "jobs", None), ("PATCH", "detectiontrials", None),
          ("PUT", "detectiontrials", "status"), ("PUT", "detectionexperiments", "status"),
          ("POST", "detectionmodels", None), ("POST", "events", None)]


@pytest.mark.parametrize("code", [409, 422])
def test_conflicts_and_refusals_on_every_write_path_still_converge(cluster, emulator, kubeconfig, code):
    for method, resource, subresource in WRITES:
        emulator.inject(code, method, resource, subresource, times=1)
    with running_operator(kubeconfig):
        emulator.create(experiment(limits={"maxTrials": 3, "maxConcurrentTrials": 2, "maxFailedTrials": 1},
                                   earlyTermination=BANDIT))
        cluster.start("fridge-000-0")
        cluster.start("fridge-001-0")
        cluster.report("fridge-000", 0.9)
        cluster.report("fridge-001", 0.1)
        cluster.wait(lambda: stop_requested(cluster, "fridge-001"))
        cluster.finish("fridge-001", "fridge-001-0", phase="Pruned")
        cluster.exit("fridge-000-0", 137, "OOMKilled")  # a settle (trial status) and a retry
        cluster.start("fridge-000-1")
        cluster.report("fridge-000", 0.9)
        cluster.finish("fridge-000", "fridge-000-1")
        cluster.start("fridge-002-0")
        cluster.report("fridge-002", 0.2)
        cluster.finish("fridge-002", "fridge-002-0")
        cluster.wait(lambda: cluster.experiment_status().get("phase") == "Succeeded", 30, "the experiment to succeed")
        assert cluster.get("detectionmodels", "fridge-best")["spec"]["lineage"]["trial"] == "fridge-000"
        assert cluster.names("jobs") == ["fridge-000-0", "fridge-000-1", "fridge-001-0", "fridge-002-0"]
    assert all(fault.times == 0 for fault in emulator.faults), "every injected fault was met"


def test_the_operator_watches_only_its_namespaces(cluster, emulator, kubeconfig):
    emulator.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}})
    with running_operator(kubeconfig, namespaces=["team"]):
        emulator.create(experiment())  # in default: not watched
        emulator.create({**experiment(), "metadata": {"name": "fridge", "namespace": "team"}})
        emulator.wait_for(lambda: emulator.get("jobs", "team", "fridge-000-0"))
        assert cluster.names("jobs") == []


def test_the_admission_webhook_refuses_what_pydantic_refuses_naming_the_field(emulator, kubeconfig):
    port = free_port()
    with running_operator(kubeconfig, webhook_port=port):
        good, bad = experiment(), experiment(searchSpace=[{"model_name": "yolov8", "learning_rat": 0.1}])

        def review(obj: dict, old: dict | None = None) -> dict:
            request = {"uid": "1", "kind": {"group": "autodetect.dev", "version": "v1alpha1",
                                            "kind": "DetectionExperiment"},
                       "resource": {"group": "autodetect.dev", "version": "v1alpha1",
                                    "resource": "detectionexperiments"},
                       "operation": "UPDATE" if old else "CREATE", "object": obj, "oldObject": old,
                       "userInfo": {"username": "tester"}}
            body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
            return httpx.post(f"http://127.0.0.1:{port}/validate", json=body, timeout=10).json()["response"]

        def listening() -> bool:
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0

        deadline = time.monotonic() + 20  # kopf opens the webhook's port after it says it is ready
        while not listening():
            assert time.monotonic() < deadline, "the webhook never listened"
            time.sleep(0.05)

        assert review(good)["allowed"] is True
        refused = review(bad)
        assert refused["allowed"] is False and "spec.searchSpace[0].learning_rat" in refused["status"]["message"]
        assert review(experiment(limits={"maxTrials": 9}), old=good)["allowed"] is True
        changed = review(experiment(primaryMetric="recall"), old=good)
        assert changed["allowed"] is False and "spec.primaryMetric" in changed["status"]["message"]


def test_operator_metrics(cluster, emulator, kubeconfig):
    port = free_port()
    emulator.inject(500, "PUT", "detectionexperiments", "status", times=1)
    with running_operator(kubeconfig, metrics_port=port):
        emulator.create(experiment(limits={"maxTrials": 2, "maxConcurrentTrials": 2}, earlyTermination=BANDIT))
        cluster.start("fridge-000-0")
        cluster.start("fridge-001-0")
        cluster.report("fridge-000", 0.9)
        cluster.report("fridge-001", 0.1)
        cluster.wait(lambda: stop_requested(cluster, "fridge-001"))
        cluster.finish("fridge-001", "fridge-001-0", phase="Pruned")
        cluster.finish("fridge-000", "fridge-000-0")
        cluster.wait(lambda: cluster.experiment_status().get("phase") == "Succeeded")

        def value(series: str) -> float:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(series))

        cluster.wait(lambda: value('autodetect_operator_experiments{phase="Succeeded"}') == 1, 10, "the phase gauge")
        assert value('autodetect_operator_trials_total{event="started"}') >= 2
        assert value('autodetect_operator_trials_total{event="pruned"}') >= 1
        assert value('autodetect_operator_trials_total{event="succeeded"}') >= 1
        assert value('autodetect_operator_reconcile_duration_seconds_count{kind="DetectionExperiment"}') > 0
        assert value('autodetect_operator_api_errors_total{code="500",resource="detectionexperiments",verb="update"}') == 1
