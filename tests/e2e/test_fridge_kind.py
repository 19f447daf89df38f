"""The fridge example at a tiny scale on a real cluster (kind): helm install, load a (synthetic) data set into a
claim, a two-trial CPU-only sweep, serve the winner and score an image through the Service.
Skipped unless AUTODETECT_E2E_KUBECONFIG names a kubeconfig; tests/e2e/README.md says how to run it."""
from __future__ import annotations

import base64
import copy
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
FRIDGE = ROOT / "examples" / "fridge"
KUBECONFIG = os.environ.get("AUTODETECT_E2E_KUBECONFIG")
NAMESPACE = os.environ.get("AUTODETECT_E2E_NAMESPACE", "autodetect-e2e")
VERSION = os.environ.get("AUTODETECT_E2E_VERSION", "0.1.0")
DATA = "/mnt/pvc/fridge/shapes"

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not KUBECONFIG, reason="set AUTODETECT_E2E_KUBECONFIG to run on a real cluster"),
              pytest.mark.timeout(1800)]


def binary(name: str) -> str:
    from apiserver import tools  # the same kubectl 1.35 and helm the other tests use

    return str(getattr(tools, name)())


def kubectl(*args: str, timeout: float = 120, stdin: str | None = None) -> str:
    done = subprocess.run([binary("kubectl"), "--kubeconfig", KUBECONFIG, "--namespace", NAMESPACE, *args],
                          input=stdin, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    return done.stdout


def apply(*objects: dict) -> None:
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(objects))


def manifest(name: str) -> dict:
    return yaml.safe_load((FRIDGE / name).read_text())


def tiny_claim() -> dict:
    claim = manifest("pvc.yaml")
    claim["spec"]["accessModes"] = ["ReadWriteOnce"]  # kind's local-path provisioner; one node holds every pod
    claim["spec"]["resources"]["requests"]["storage"] = "1Gi"
    return claim


def tiny_load_job() -> dict:
    """The example's load Job, with a synthetic data set in place of the download (no internet needed)."""
    job = manifest("load-data.yaml")
    job["metadata"]["name"] = "fridge-synth-data"
    pod = job["spec"]["template"]["spec"]
    validate = pod["containers"][0]
    pod["initContainers"] = [{**copy.deepcopy(validate), "name": "synth",
                              "command": ["autodetect", "dataset", "synth", "--out", DATA, "--classes", "2",
                                          "--images", "24", "--size", "64", "--seed", "1"]}]
    validate["command"] = ["autodetect", "dataset", "validate", f"{DATA}/annotations.jsonl"]
    for container in [*pod["initContainers"], validate]:
        container["image"] = f"autodetect-trainer:{VERSION}"
        container["imagePullPolicy"] = "IfNotPresent"
    return job


def tiny_experiment() -> dict:
    experiment = manifest("experiment.yaml")
    spec = experiment["spec"]
    spec["dataset"] = {"training": {"uri": "pvc://fridge/shapes/annotations.jsonl"},
                       "validation": {"uri": "pvc://fridge/shapes/annotations.jsonl"}}
    spec["searchSpace"] = [{"model_name": "yolov8", "model_size": "small", "pretrained": False, "image_size": 64,
                            "number_of_epochs": 2, "training_batch_size": 8, "early_stopping": False,
                            "learning_rate": {"type": "choice", "values": [0.01, 0.005]}}]
    spec["sampling"] = {"algorithm": "grid"}
    spec["earlyTermination"] = {"policy": "none"}
    spec["limits"] = {"maxTrials": 2, "maxConcurrentTrials": 2, "trialTimeoutMinutes": 20}
    # CPU only: no nvidia.com/gpu asked for, so the trials schedule on a node without one
    spec["trialTemplate"] = {"image": f"autodetect-trainer:{VERSION}", "imagePullPolicy": "IfNotPresent",
                             "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "3Gi"}},
                             "shmSize": "256Mi"}
    return experiment


def tiny_deployment() -> dict:
    deployment = manifest("deployment.yaml")
    deployment["spec"]["replicas"] = {"min": 1, "max": 2}
    deployment["spec"]["resources"] = {"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
    return deployment


@pytest.fixture(scope="module")
def installed() -> Iterator[None]:
    helm = [binary("helm"), "--kubeconfig", KUBECONFIG]
    subprocess.run([*helm, "upgrade", "--install", "autodetect", str(ROOT / "helm" / "autodetect"),
                    "--namespace", NAMESPACE, "--create-namespace", "--wait", "--timeout", "5m",
                    "--set", f"image.tag={VERSION}"],
                   check=True, timeout=400)
    yield
    if not os.environ.get("AUTODETECT_E2E_KEEP"):
        subprocess.run([*helm, "uninstall", "autodetect", "--namespace", NAMESPACE, "--wait"], timeout=300)
        subprocess.run([binary("kubectl"), "--kubeconfig", KUBECONFIG, "delete", "namespace", NAMESPACE,
                        "--wait=false"], timeout=120)


@pytest.fixture
def port_forward() -> Iterator[str]:
    """kubectl port-forward to the scoring Service on a free local port; yields the base URL."""
    process = subprocess.Popen([binary("kubectl"), "--kubeconfig", KUBECONFIG, "--namespace", NAMESPACE,
                                "port-forward", "svc/fridge", ":80"], stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        port = re.search(r"127\.0\.0\.1:(\d+)", line)
        assert port, f"kubectl port-forward said {line!r}"
        yield f"http://127.0.0.1:{port.group(1)}"
    finally:
        process.terminate()
        process.wait(10)


def synthetic_image() -> bytes:
    import tempfile

    from autodetect.data.synth import synthesize

    with tempfile.TemporaryDirectory() as folder:
        synthesize(folder, classes=2, images=1, size=64, seed=2)
        return next(Path(folder).glob("images/*")).read_bytes()


def test_the_fridge_example_end_to_end(installed):
    apply(tiny_claim(), tiny_load_job())
    kubectl("wait", "--for=condition=Complete", "job/fridge-synth-data", "--timeout=10m", timeout=660)

    apply(tiny_experiment())
    kubectl("wait", "--for=condition=Succeeded", "dexp/fridge", "--timeout=20m", timeout=1260)
    experiment = yaml.safe_load(kubectl("get", "dexp", "fridge", "-o", "yaml"))
    assert experiment["status"]["trials"]["succeeded"] == 2
    model = yaml.safe_load(kubectl("get", "dmodel", "fridge-best", "-o", "yaml"))
    assert model["spec"]["classes"] == ["circle", "square"]

    apply(tiny_deployment())
    kubectl("wait", "--for=condition=Ready", "ddep/fridge", "--timeout=10m", timeout=660)
    status = yaml.safe_load(kubectl("get", "ddep", "fridge", "-o", "yaml"))["status"]
    assert status["url"] == f"http://fridge.{NAMESPACE}.svc.cluster.local/score"
    assert status["servingModel"] == "fridge-best" and status["readyReplicas"] >= 1


def test_score_an_image_through_the_service(installed, port_forward):
    """Runs after the test above (pytest keeps file order): the tutorial's scoring request, with the Secret's key."""
    key = base64.b64decode(kubectl("get", "secret", "fridge-key", "-o", "jsonpath={.data.key}")).decode()
    image = synthetic_image()
    with httpx.Client(base_url=port_forward, timeout=60) as client:
        assert client.post("/score", content=image,
                           headers={"Content-Type": "application/octet-stream"}).status_code == 401
        answer = client.post("/score", content=image, headers={"Content-Type": "application/octet-stream",
                                                               "Authorization": f"Bearer {key}"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert set(body) >= {"filename", "boxes"}
        assert all(box["label"] in ("circle", "square") and 0 <= box["score"] <= 1 for box in body["boxes"])
