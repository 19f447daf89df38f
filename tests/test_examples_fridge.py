"""examples/fridge: the seed's tutorial as manifests. These very files load with the typed loader, pass the
Kubernetes schemas, are accepted by the API server (the emulator, through the real kubectl), and the operator
starts the sweep from them: the first four trials' Jobs at once, the claim mounted."""
from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from autodetect.api.loader import load_resource
from autodetect.api.v1alpha1 import DetectionDeployment, DetectionExperiment
from autodetect.models.hyperparameters import MODEL_NAMES

FRIDGE = Path(__file__).resolve().parents[1] / "examples" / "fridge"
KUBERNETES = "1.35"
URL = "https://cvbp-secondary.z19.web.core.windows.net/datasets/object_detection/odFridgeObjects.zip"


def manifest(name: str) -> dict:
    return yaml.safe_load((FRIDGE / name).read_text())


def test_the_experiment_is_the_seeds_sweep_exactly():
    spec = load_resource(FRIDGE / "experiment.yaml", DetectionExperiment).spec
    assert spec.searchSpace == [
        {"model_name": {"type": "choice", "values": ["yolov5"]},
         "learning_rate": {"type": "uniform", "min_value": 0.0001, "max_value": 0.01},
         "img_size": {"type": "choice", "values": [640, 704, 768]}},
        {"model_name": {"type": "choice", "values": ["fasterrcnn_resnet50_fpn"]},
         "learning_rate": {"type": "uniform", "min_value": 0.0001, "max_value": 0.001},
         "optimizer": {"type": "choice", "values": ["sgd", "adam", "adamw"]},
         "min_size": {"type": "choice", "values": [600, 800]}}]
    assert {"yolov5", "fasterrcnn_resnet50_fpn"} <= set(MODEL_NAMES)
    assert spec.sampling.algorithm == "random"
    assert (spec.limits.maxTrials, spec.limits.maxConcurrentTrials) == (20, 4)
    stop = spec.earlyTermination
    assert (stop.policy, stop.slackFactor, stop.evaluationInterval, stop.delayEvaluation) == ("bandit", 0.2, 2, 6)
    assert spec.dataset.training.uri == "pvc://fridge/odFridgeObjects/annotations.jsonl"
    assert spec.artifacts.uri.startswith("pvc://fridge/")


def test_the_deployment_follows_the_experiment():
    spec = load_resource(FRIDGE / "deployment.yaml", DetectionDeployment).spec
    assert spec.model.experimentRef == "fridge" and spec.auth.enabled


@pytest.mark.parametrize("name", ["pvc.yaml", "load-data.yaml"])
def test_the_built_in_objects_pass_the_kubernetes_schemas_strictly(name):
    assert kubernetes_validate.validate(manifest(name), KUBERNETES, strict=True) == KUBERNETES


def test_the_load_job_downloads_converts_and_validates_into_the_claim_without_a_shell():
    pod = manifest("load-data.yaml")["spec"]["template"]["spec"]
    steps = [*pod["initContainers"], *pod["containers"]]
    assert [c["name"] for c in steps] == ["download", "unzip", "convert", "validate"]
    assert all(c["command"][0] in ("python", "autodetect") for c in steps)  # argument lists, no sh -c
    assert URL in steps[0]["args"]
    convert = steps[2]["command"]
    assert convert[:4] == ["autodetect", "convert", "--from", "voc"]
    jsonl = convert[convert.index("--out") + 1]
    assert jsonl == "/mnt/pvc/fridge/odFridgeObjects/annotations.jsonl" and steps[3]["command"][-1] == jsonl
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "fridge"}} in pod["volumes"]
    assert all(c["securityContext"]["readOnlyRootFilesystem"] for c in steps)


def test_applied_with_kubectl_and_the_operator_starts_four_trials_with_the_claim(emulator, kubeconfig, kubectl):
    from operator_harness import NAMESPACE, Cluster, running_operator

    applied = kubectl("apply", "-f", str(FRIDGE)).stdout
    for line in ("persistentvolumeclaim/fridge created", "job.batch/fridge-load-data created",
                 "detectionexperiment.autodetect.dev/fridge created",
                 "detectiondeployment.autodetect.dev/fridge created"):
        assert line in applied, applied
    cluster = Cluster(emulator, kubeconfig)
    with running_operator(kubeconfig):
        jobs = [f"fridge-{i:03d}-0" for i in range(4)]
        made = [cluster.wait_job(job) for job in jobs]
        cluster.wait(lambda: len(cluster.names("detectiontrials", **{"autodetect.dev/experiment": "fridge"})) == 4,
                     what="four trials")
        assert cluster.get("jobs", "fridge-004-0") is None  # four at a time
        for job in made:
            pod = job["spec"]["template"]["spec"]
            claims = {v["name"]: v["persistentVolumeClaim"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
            assert [claim["claimName"] for claim in claims.values()] == ["fridge"]  # data and artifacts: one claim
            trainer = pod["containers"][0]
            assert {"name": next(iter(claims)), "mountPath": "/mnt/pvc/fridge"} in [
                {k: m[k] for k in ("name", "mountPath")} for m in trainer["volumeMounts"]]
            assert trainer["image"] == "autodetect-trainer:0.1.0"
            assert trainer["resources"]["limits"]["nvidia.com/gpu"] == 1
        models = {cluster.get("detectiontrials", f"fridge-{i:03d}")["spec"]["hyperparameters"]["model_name"]
                  for i in range(4)}
        assert models <= {"yolov5", "fasterrcnn_resnet50_fpn"}
        ddep = cluster.get("detectiondeployments", "fridge")
        assert cluster.get("deployments", "fridge") is None  # it waits for the experiment's model
    assert ddep["metadata"]["namespace"] == NAMESPACE


def test_the_load_jobs_commands_turn_the_fridge_zip_into_a_valid_jsonl(tmp_path):
    """The Job's own steps after the download, run as they are (claim path moved to tmp) on a zip laid out as
    odFridgeObjects.zip is: odFridgeObjects/images/*.jpg beside odFridgeObjects/annotations/*.xml (VOC)."""
    import os
    import subprocess
    import sys
    import zipfile

    from autodetect.data.convert import write_voc
    from autodetect.data.dataset import read_jsonl
    from autodetect.data.synth import synthesize

    made = tmp_path / "made"
    write_voc(read_jsonl(synthesize(made, classes=2, images=4, size=64, seed=3, image_format="jpg")), made)
    claim = tmp_path / "claim"
    claim.mkdir()
    with zipfile.ZipFile(claim / "odFridgeObjects.zip", "w") as archive:
        for path in (made / "images").iterdir():
            folder = "annotations" if path.suffix == ".xml" else "images"
            archive.write(path, f"odFridgeObjects/{folder}/{path.name}")
    pod = manifest("load-data.yaml")["spec"]["template"]["spec"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for step in [*pod["initContainers"][1:], *pod["containers"]]:
        command = [part.replace("/mnt/pvc/fridge", str(claim)) for part in step["command"]]
        command[:1] = [sys.executable] if command[0] == "python" else [sys.executable, "-m", "autodetect.cli"]
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, f"{step['name']}: {done.stdout}{done.stderr}"
    assert "4 images" in done.stdout and (claim / "odFridgeObjects" / "annotations.jsonl").is_file()
