"""The CRDs generated from the specs: committed copies in step, valid for Kubernetes, and agreeing with the specs
on what they accept."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from autodetect.api import parse_resource
from autodetect.api.crds import PRESERVE, all_crds, render
from autodetect.cli import main
from autodetect.errors import SpecError

ROOT = Path(__file__).resolve().parents[1]
KUBERNETES = "1.35"  # kubernetes-validate ships the API schemas of each release

CRDS = {definition["spec"]["names"]["kind"]: definition for definition in all_crds()}

# DESIGN.md's examples, and one of each kind the operator or a user writes
EXPERIMENT = """
apiVersion: autodetect.dev/v1alpha1
kind: DetectionExperiment
metadata: {name: fridge}
spec:
  dataset:
    training: {uri: pvc://datasets/odFridgeObjects/train_annotations.jsonl}
    validation: {uri: pvc://datasets/odFridgeObjects/validation_annotations.jsonl}
    validationSplit: 0.2
  primaryMetric: mean_average_precision
  searchSpace:
    - model_name: {type: choice, values: [yolov8]}
      learning_rate: {type: uniform, min_value: 0.0001, max_value: 0.01}
      img_size: {type: choice, values: [640, 704, 768]}
    - model_name: {type: choice, values: [fasterrcnn_resnet50_fpn]}
      learning_rate: {type: uniform, min_value: 0.0001, max_value: 0.001}
      optimizer: {type: choice, values: [sgd, adam, adamw]}
      min_size: {type: choice, values: [600, 800]}
  sampling: {algorithm: random, seed: 7}
  earlyTermination: {policy: bandit, slackFactor: 0.2, evaluationInterval: 2, delayEvaluation: 6}
  limits: {maxTrials: 20, maxConcurrentTrials: 4, maxFailedTrials: 3, timeoutMinutes: 360, trialTimeoutMinutes: 120}
  trialTemplate:
    image: autodetect-trainer:0.1.0
    resources: {limits: {nvidia.com/gpu: 1}}
  artifacts: {uri: pvc://autodetect-artifacts/}
"""
TRIAL = """
apiVersion: autodetect.dev/v1alpha1
kind: DetectionTrial
metadata: {name: fridge-3, labels: {autodetect.dev/experiment: fridge}}
spec:
  experiment: fridge
  hyperparameters: {model_name: yolov8, learning_rate: 0.004, img_size: 640}
  attempt: 1
  dataset: {training: {uri: pvc://datasets/odFridgeObjects/train_annotations.jsonl}}
status:
  phase: Running
  conditions: [{type: Running, status: "True", reason: PodRunning, lastTransitionTime: "2025-01-02T03:04:05Z"}]
  epochs:
    - {epoch: 1, metrics: {mean_average_precision: 0.41, per_label: {milk_bottle: 0.5}, loss: 1.2}}
    - {epoch: 2, metrics: {mean_average_precision: 0.55}}
  finalMetric: null
  startTime: "2025-01-02T03:04:05Z"
"""
MODEL = """
apiVersion: autodetect.dev/v1alpha1
kind: DetectionModel
metadata: {name: fridge-best}
spec:
  artifactUri: pvc://autodetect-artifacts/fridge/fridge-3/
  format: ultralytics
  classes: [can, carton, milk_bottle, water_bottle]
  inputSize: {height: 640, width: 640}
  metrics: {mean_average_precision: 0.82, mean_average_precision_50_95: 0.61}
  lineage: {experiment: fridge, trial: fridge-3, hyperparameters: {model_name: yolov8, learning_rate: 0.004}}
"""
DEPLOYMENT = """
apiVersion: autodetect.dev/v1alpha1
kind: DetectionDeployment
metadata: {name: fridge}
spec:
  model: {experimentRef: fridge}
  replicas: {min: 1, max: 4}
  autoscaling: {targetCPUUtilizationPercentage: 70}
  resources: {requests: {cpu: "1", memory: 2Gi}}
  auth: {enabled: true}
status: {url: "http://fridge.default.svc:8080", readyReplicas: 2, servingModel: fridge-best}
"""
EXAMPLES = {"DetectionExperiment": EXPERIMENT, "DetectionTrial": TRIAL, "DetectionModel": MODEL,
            "DetectionDeployment": DEPLOYMENT}


def openapi(kind: str) -> dict:
    return CRDS[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def as_jsonschema(node: dict) -> dict:
    """What the API server enforces, as a draft-4 JSON schema: `nullable`, and unknown fields refused (as with
    kubectl's default strict field validation) except where the schema keeps them."""
    out = {key: value for key, value in node.items() if not key.startswith("x-kubernetes-")}
    if out.pop("nullable", False):
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    if "properties" in node:
        out["properties"] = {name: as_jsonschema(sub) for name, sub in node["properties"].items()}
        if not node.get(PRESERVE):
            out["additionalProperties"] = False
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            out[key] = as_jsonschema(node[key])
    return out


def check(kind: str, obj: dict) -> None:
    jsonschema.Draft4Validator(as_jsonschema(openapi(kind))).validate(obj)


def nodes(node: dict, path: str = ""):
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from nodes(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from nodes(node[key], f"{path}[]")


def test_committed_crds_are_what_the_specs_generate():
    expected = {f"{d['metadata']['name']}.yaml": render([d]) for d in CRDS.values()}
    generated = (ROOT / "crds").glob("*.autodetect.dev.yaml")  # kopf's peering CRDs beside them are written by hand
    committed = {path.name: path.read_text(encoding="utf-8") for path in generated}
    assert committed == expected, "crds/ is out of date with api/v1alpha1.py: run `autodetect crds --out crds`"


@pytest.mark.parametrize("kind", CRDS)
def test_crd_is_valid_for_kubernetes(kind):
    assert kubernetes_validate.validate(CRDS[kind], KUBERNETES, strict=True) == KUBERNETES


@pytest.mark.parametrize("kind, plural, short", [
    ("DetectionExperiment", "detectionexperiments", "dexp"), ("DetectionTrial", "detectiontrials", "dtrial"),
    ("DetectionModel", "detectionmodels", "dmodel"), ("DetectionDeployment", "detectiondeployments", "ddep")])
def test_names_version_and_subresources(kind, plural, short):
    spec = CRDS[kind]["spec"]
    assert CRDS[kind]["metadata"]["name"] == f"{plural}.autodetect.dev"
    assert (spec["group"], spec["scope"]) == ("autodetect.dev", "Namespaced")
    assert spec["names"] == {"kind": kind, "listKind": f"{kind}List", "plural": plural, "singular": kind.lower(),
                             "shortNames": [short], "categories": ["autodetect"]}
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


@pytest.mark.parametrize("kind, columns", [
    ("DetectionExperiment", ["Phase", "Trials", "Succeeded", "Best", "Age"]),
    ("DetectionTrial", ["Experiment", "Phase", "Metric", "Age"]),
    ("DetectionModel", ["Format", "Experiment", "mAP", "Age"]),
    ("DetectionDeployment", ["Model", "Ready", "URL", "Age"])])
def test_printer_columns_point_at_fields_of_the_schema(kind, columns):
    printed = CRDS[kind]["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [c["name"] for c in printed if not c.get("priority")][-1] == "Age"
    assert set(columns) <= {c["name"] for c in printed}
    paths = dict(nodes(openapi(kind)))
    for column in printed:
        if column["jsonPath"] == ".metadata.creationTimestamp":
            continue
        parent, _, _ = column["jsonPath"].rpartition(".")  # a field, or a key in a pass-through object
        assert column["jsonPath"] in paths or paths[parent].get(PRESERVE), column


@pytest.mark.parametrize("kind", CRDS)
def test_schema_is_structural(kind):
    schema = openapi(kind)
    assert schema["properties"]["metadata"] == {"type": "object"}
    for path, node in nodes(schema):
        assert node.get("type") or node.get(PRESERVE), path
        assert not {"$ref", "anyOf", "allOf", "oneOf", "not", "const", "title"} & node.keys(), path
        assert not isinstance(node.get("additionalProperties"), bool), path
        assert not ("properties" in node and "additionalProperties" in node), path
        if "default" in node:  # the API server refuses a CRD whose default its own schema refuses
            jsonschema.Draft4Validator(as_jsonschema(node)).validate(node["default"])


def test_pass_through_objects_keep_unknown_fields():
    spec = openapi("DetectionExperiment")["properties"]["spec"]["properties"]
    assert spec["trialTemplate"][PRESERVE] and spec["searchSpace"]["items"][PRESERVE]
    assert openapi("DetectionDeployment")["properties"]["spec"]["properties"]["resources"][PRESERVE]
    model = openapi("DetectionModel")["properties"]["spec"]["properties"]
    assert model["metrics"][PRESERVE] and model["lineage"]["properties"]["hyperparameters"][PRESERVE]
    assert model["inputSize"]["additionalProperties"] == {"type": "integer"}


@pytest.mark.parametrize("kind", CRDS)
def test_examples_pass_both_the_specs_and_the_crd(kind):
    obj = yaml.safe_load(EXAMPLES[kind])
    resource = parse_resource(obj)
    check(kind, obj)
    check(kind, resource.model_dump(mode="json"))  # what the operator writes back: defaults, nulls, timestamps


def test_example_files_pass_the_crd():
    for path in sorted((ROOT / "examples").rglob("*.yaml")):
        for obj in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if isinstance(obj, dict) and obj.get("kind") in CRDS:
                check(obj["kind"], obj)


@pytest.mark.parametrize("kind, old, new", [
    ("DetectionExperiment", "maxTrials: 20", "maxTrails: 20"),  # unknown field
    ("DetectionExperiment", "maxTrials: 20", "maxTrials: many"),  # wrong type
    ("DetectionExperiment", "maxTrials: 20", "maxTrials: 0"),  # below the minimum
    ("DetectionExperiment", "validationSplit: 0.2", "validationSplit: 1.0"),  # exclusive maximum
    ("DetectionExperiment", "algorithm: random", "algorithm: hyperband"),  # not in the enum
    ("DetectionTrial", "experiment: fridge", "experimnt: fridge"),  # required field missing
    ("DetectionTrial", 'status: "True"', "status: Maybe"),
    ("DetectionModel", "format: ultralytics", "format: tensorflow"),
    ("DetectionModel", "height: 640", "height: large"),
    ("DetectionDeployment", "readyReplicas: 2", "readyReplicas: two"),
    ("DetectionDeployment", "auth: {enabled: true}", "auth: {enabled: true, key: hunter2}"),
])
def test_bad_resources_are_refused_by_both(kind, old, new):
    assert old in EXAMPLES[kind]
    obj = yaml.safe_load(EXAMPLES[kind].replace(old, new))
    with pytest.raises(jsonschema.ValidationError):
        check(kind, obj)
    with pytest.raises(SpecError):
        parse_resource(obj)


def test_cli_prints_all_and_writes_one_file_per_kind(tmp_path, capsys):
    assert main(["crds"]) == 0
    assert list(yaml.safe_load_all(capsys.readouterr().out)) == list(CRDS.values())
    assert main(["crds", "--out", str(tmp_path / "out")]) == 0
    written = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert written == sorted(f"{d['metadata']['name']}.yaml" for d in CRDS.values())
    assert yaml.safe_load((tmp_path / "out" / "detectiontrials.autodetect.dev.yaml").read_text()) == CRDS["DetectionTrial"]
