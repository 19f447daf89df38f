import textwrap

import pytest

from autodetect.api import DetectionDeployment, DetectionExperiment, load_resource
from autodetect.errors import SpecError

EXPERIMENT = """
apiVersion: autodetect.dev/v1alpha1
kind: DetectionExperiment
metadata: {name: fridge}
spec:
  dataset:
    training: {uri: pvc://datasets/odFridgeObjects/train_annotations.jsonl}
  searchSpace:
    - model_name: {type: choice, values: [yolov8]}
      learning_rate: {type: uniform, min_value: 0.0001, max_value: 0.01}
  sampling: {algorithm: random, seed: 7}
  earlyTermination: {policy: bandit, slackFactor: 0.2, evaluationInterval: 2, delayEvaluation: 6}
  limits: {maxTrials: 20, maxConcurrentTrials: 4, maxFailedTrials: 3, timeoutMinutes: 360, trialTimeoutMinutes: 120}
  trialTemplate:
    image: autodetect-trainer:0.1.0
    resources: {limits: {nvidia.com/gpu: 1}}
  artifacts: {uri: pvc://autodetect-artifacts/}
"""


def write(tmp_path, text):
    path = tmp_path / "resource.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_design_example_loads(tmp_path):
    exp = load_resource(write(tmp_path, EXPERIMENT), DetectionExperiment)
    assert exp.spec.limits.maxConcurrentTrials == 4
    assert exp.spec.earlyTermination.slackFactor == 0.2
    assert exp.spec.dataset.validationSplit == 0.2
    assert exp.spec.trialTemplate.model_dump()["resources"] == {"limits": {"nvidia.com/gpu": 1}}


@pytest.mark.parametrize("old, new, field", [
    ("maxTrials: 20", "maxTrials: 0", "spec.limits.maxTrials"),
    ("maxTrials: 20", "maxTrails: 20", "spec.limits.maxTrails"),
    ("algorithm: random", "algorithm: hyperband", "spec.sampling.algorithm"),
    ("slackFactor: 0.2, ", "", "spec.earlyTermination"),
    ("{name: fridge}", "{name: Fridge_1}", "metadata.name"),
])
def test_bad_experiment_names_the_field(tmp_path, old, new, field):
    with pytest.raises(SpecError) as info:
        load_resource(write(tmp_path, EXPERIMENT.replace(old, new)))
    assert info.value.field.endswith(field)
    assert str(tmp_path) in str(info.value)


def test_deployment_needs_exactly_one_model_reference(tmp_path):
    good = """
    apiVersion: autodetect.dev/v1alpha1
    kind: DetectionDeployment
    metadata: {name: fridge}
    spec:
      model: {experimentRef: fridge}
      replicas: {min: 1, max: 4}
    """
    assert load_resource(write(tmp_path, good), DetectionDeployment).spec.auth.enabled is True
    with pytest.raises(SpecError, match="spec.model"):
        load_resource(write(tmp_path, good.replace("{experimentRef: fridge}", "{experimentRef: a, modelRef: b}")))


def test_unknown_kind_and_bad_yaml(tmp_path):
    with pytest.raises(SpecError, match="unknown kind"):
        load_resource(write(tmp_path, "kind: Nope\n"))
    with pytest.raises(SpecError, match="not valid YAML"):
        load_resource(write(tmp_path, "a: [\n"))
