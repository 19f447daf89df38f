"""From `kubectl apply` to a DetectionModel with real trainers: the test plays the kubelet for real. For each Job the
operator makes, it runs the Job's container command as a local process, with the Job's env, KUBECONFIG pointing at the
emulator and AUTODETECT_PVC_ROOT at a local folder standing in for the claims; the trainer reads its DetectionTrial
and reports through the API, on a tiny synthetic set; the Job is marked Complete or Failed from the exit code."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from apiserver import controllers
from operator_harness import NAMESPACE, Cluster, running_operator, trainer_kubeconfig

from autodetect.data.synth import synthesize

pytestmark = pytest.mark.slow

FIXED = {"model_name": "fasterrcnn_mobilenet_v3_large_320_fpn", "pretrained": False, "min_size": 64, "max_size": 64,
         "training_batch_size": 2, "validation_batch_size": 4, "warmup_cosine_lr_warmup_epochs": 0,
         "early_stopping": False, "number_of_epochs": 2}
# As in test_local_run: twins that score far above 0 at a loose IoU, and a block that learns and reports nothing.
LEARNS = {**FIXED, "learning_rate": 0.02, "box_score_threshold": 0.0, "validation_iou_threshold": 0.1,
          "early_stopping_patience": {"type": "choice", "values": [5, 6]}}
LEARNS_NOTHING = {**FIXED, "learning_rate": 1e-9, "box_score_threshold": 0.99}


class Kubelet:
    """Runs each Job's container as a local process and reports its end as the kubelet and Job controller would."""

    def __init__(self, cluster: Cluster, kubeconfig: Path, pvc_root: Path, home: Path):
        self.cluster, self.kubeconfig, self.pvc_root, self.home = cluster, kubeconfig, pvc_root, home
        self.started: set[str] = set()
        self.commands: list[list[str]] = []
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []

    def poll(self) -> None:
        for job in self.cluster.emulator.list("jobs", NAMESPACE):
            name = job["metadata"]["name"]
            if name not in self.started:
                self.started.add(name)
                thread = threading.Thread(target=self.run, args=(job,), daemon=True)
                thread.start()
                self.threads.append(thread)

    def run(self, job: dict) -> None:
        emulator = self.cluster.emulator
        pod = controllers.pod_running(emulator, controllers.job_pod(emulator, job))
        [container] = job["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e["value"] for e in container["env"]}
        env |= {"KUBECONFIG": str(self.kubeconfig), "AUTODETECT_PVC_ROOT": str(self.pvc_root),
                "AUTODETECT_WEIGHTS_DIR": str(self.pvc_root / "artifacts" / ".weights"), "HOME": str(self.home),
                "OMP_NUM_THREADS": "1", "PATH": os.environ["PATH"]}
        command = container["command"]
        self.commands.append(command)
        assert command[0] == "autodetect"  # an argument list: no shell, no parameter as text
        process = subprocess.Popen([sys.executable, "-m", "autodetect.cli", *command[1:]], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        output, _ = process.communicate(timeout=600)
        controllers.pod_terminated(emulator, pod, process.returncode, message=output[-2000:])
        controllers.job_finished(emulator, emulator.get("jobs", NAMESPACE, job["metadata"]["name"]),
                                 succeeded=process.returncode == 0)


def test_apply_to_a_registered_model_with_real_trainers(emulator, kubeconfig, kubectl, tmp_path):
    pvc = tmp_path / "pvc"
    synthesize(pvc / "datasets" / "shapes", classes=2, images=12, size=64, seed=1)
    (pvc / "artifacts").mkdir()
    manifest = tmp_path / "experiment.yaml"
    manifest.write_text(yaml.safe_dump({
        "apiVersion": "autodetect.dev/v1alpha1", "kind": "DetectionExperiment",
        "metadata": {"name": "shapes", "namespace": NAMESPACE},
        "spec": {"dataset": {"training": {"uri": "pvc://datasets/shapes/annotations.jsonl"},
                             "validation": {"uri": "pvc://datasets/shapes/annotations.jsonl"}},
                 "searchSpace": [LEARNS, LEARNS_NOTHING],
                 "sampling": {"algorithm": "grid"},
                 "earlyTermination": {"policy": "bandit", "slackFactor": 0.2, "evaluationInterval": 1,
                                      "delayEvaluation": 1},
                 "limits": {"maxTrials": 3, "maxConcurrentTrials": 2}, "artifacts": {"uri": "pvc://artifacts/"},
                 "trialTemplate": {"image": "autodetect-trainer:0.1.0"}}}))
    cluster = Cluster(emulator, kubeconfig)
    kubelet = Kubelet(cluster, trainer_kubeconfig(emulator, kubeconfig), pvc, tmp_path / "home")
    with running_operator(kubeconfig):
        assert "created" in kubectl("apply", "-f", str(manifest)).stdout

        def done() -> bool:
            kubelet.poll()
            return cluster.experiment_status("shapes").get("phase") in ("Succeeded", "Failed")

        cluster.wait(done, 900, "the experiment to end")
        status = cluster.experiment_status("shapes")
        assert status["phase"] == "Succeeded", status["message"]
        assert status["trials"] == {"total": 3, "running": 0, "succeeded": 2, "pruned": 1, "failed": 0}
        pruned = cluster.get("detectiontrials", "shapes-002")["status"]
        assert pruned["phase"] == "Pruned" and pruned["message"].startswith("bandit: best 0 at interval 1")
        learned = cluster.get("detectiontrials", status["bestTrial"]["name"])["status"]
        assert [e["epoch"] for e in learned["epochs"]] == [1, 2] and learned["finalMetric"] > 0.01
        model = cluster.wait(lambda: cluster.get("detectionmodels", "shapes-best"), what="the registered model")
        assert model["spec"]["classes"] == ["circle", "square"] and model["spec"]["format"] == "torchvision"
        artifact = pvc / "artifacts" / status["bestTrial"]["name"]
        assert (artifact / "model_card.json").is_file()
        assert model["spec"]["artifactUri"] == f"pvc://artifacts/{status['bestTrial']['name']}/"
        assert "condition met" in kubectl("wait", "--for=condition=Succeeded", "dexp/shapes", "--timeout=5s").stdout
    for thread in kubelet.threads:
        thread.join(60)
    assert kubelet.commands == [["autodetect", "train", "--trial-ref", f"{NAMESPACE}/shapes-00{i}"] for i in range(3)]
