"""The operator as real processes (`autodetect operator`) against the emulator: killed with SIGKILL in the middle of
an experiment and started again, and two peered replicas of which only the higher-priority one acts until it dies.
Nothing lives outside the cluster, so nothing is lost, repeated or made twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from operator_harness import NAMESPACE, Cluster, experiment
from test_operator import free_port

WRITES = ("POST", "PUT", "PATCH", "DELETE")


def start_operator(kubeconfig: Path, *args: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "autodetect.cli", "operator", "--kubeconfig", str(kubeconfig), "--metrics-port",
               "0", "--health-port", "0", "--webhook-port", str(free_port()), *args]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "POD_ID": f"replica-{args}"})


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(30)


@pytest.fixture
def processes():
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def run_trial(cluster: Cluster, trial: str, *values: float) -> None:
    cluster.start(f"{trial}-0")
    cluster.report(trial, *values)
    cluster.finish(trial, f"{trial}-0")


def test_a_killed_operator_restarted_mid_experiment_loses_and_repeats_nothing(emulator, kubeconfig, processes):
    cluster = Cluster(emulator, kubeconfig)
    processes.append(start_operator(kubeconfig, "--standalone"))
    emulator.create(experiment(limits={"maxTrials": 3, "maxConcurrentTrials": 1}))
    run_trial(cluster, "fridge-000", 0.4)
    cluster.start("fridge-001-0")
    cluster.report("fridge-001", 0.5)
    kill(processes[0])  # mid-trial, mid-experiment
    cluster.report("fridge-001", 0.6)
    cluster.finish("fridge-001", "fridge-001-0")  # ends while no operator runs
    processes.append(start_operator(kubeconfig, "--standalone"))
    run_trial(cluster, "fridge-002", 0.3)
    cluster.wait(lambda: cluster.experiment_status().get("phase") == "Succeeded", 60, "the experiment to succeed")
    status = cluster.experiment_status()
    assert status["trials"]["total"] == 3 and status["trials"]["succeeded"] == 3
    assert cluster.names("detectiontrials") == ["fridge-000", "fridge-001", "fridge-002"]
    assert cluster.names("jobs") == ["fridge-000-0", "fridge-001-0", "fridge-002-0"]  # none twice, none retried
    jobs_made = [r for r in emulator.requests("operator") if r.method == "POST" and r.resource == "jobs"
                 and r.status == 201]
    assert len(jobs_made) == 3
    assert cluster.get("detectionmodels", "fridge-best")["spec"]["lineage"]["trial"] == "fridge-001"


def test_two_peered_replicas_never_both_act_and_the_standby_takes_over(emulator, kubeconfig, processes, tmp_path):
    emulator.create({"apiVersion": "kopf.dev/v1", "kind": "KopfPeering",
                     "metadata": {"name": "autodetect", "namespace": NAMESPACE}})  # as the chart creates it
    active = emulator.kubeconfig(tmp_path / "active", user="active")
    standby = emulator.kubeconfig(tmp_path / "standby", user="standby")
    # a lifetime long enough that a loaded CPU does not let the active one lapse: then both would act
    peering = ["--namespace", NAMESPACE, "--peering-lifetime", "10"]

    def announced() -> int:
        return len((emulator.get("kopfpeerings", NAMESPACE, "autodetect") or {}).get("status", {}))

    # in the order the chart's StatefulSet (OrderedReady) starts them: the standby's first look at the peering
    # object then sees the active replica, so it never unpauses
    processes.append(start_operator(active, *peering, "--priority", "100"))
    emulator.wait_for(lambda: announced() == 1, 60)
    processes.append(start_operator(standby, *peering, "--priority", "99"))
    cluster = Cluster(emulator, kubeconfig)
    emulator.wait_for(lambda: announced() == 2, 60)
    emulator.create(experiment(limits={"maxTrials": 2, "maxConcurrentTrials": 1}))
    run_trial(cluster, "fridge-000", 0.4)
    cluster.wait_job("fridge-001-0")

    def acted(user: str) -> list:
        return [(r.method, r.path) for r in emulator.requests(user) if r.method in WRITES and r.api_group != "kopf.dev"]

    assert acted("active") and acted("standby") == []
    kill(processes[0])
    run_trial(cluster, "fridge-001", 0.6)
    cluster.wait(lambda: cluster.experiment_status().get("phase") == "Succeeded", 60, "the standby to finish it")
    assert acted("standby"), "the standby took over"
    assert cluster.names("jobs") == ["fridge-000-0", "fridge-001-0"]
    assert cluster.get("detectionmodels", "fridge-best")["spec"]["lineage"]["trial"] == "fridge-001"
