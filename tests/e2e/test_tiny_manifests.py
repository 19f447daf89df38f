"""The tiny variant the real-cluster test applies is checked here, without a cluster: the built-in objects against
the Kubernetes schemas (strict), autodetect's own with the typed loader, and no GPU asked for anywhere."""
from __future__ import annotations

import kubernetes_validate
import test_fridge_kind as e2e

from autodetect.api.loader import parse_resource
from autodetect.operator.builders import wants_gpu


def test_the_tiny_variant_is_valid_and_cpu_only():
    for obj in (e2e.tiny_claim(), e2e.tiny_load_job()):
        assert kubernetes_validate.validate(obj, "1.35", strict=True) == "1.35"
    experiment, deployment = parse_resource(e2e.tiny_experiment()), parse_resource(e2e.tiny_deployment())
    assert not wants_gpu(experiment.spec.trialTemplate.resources) and not wants_gpu(deployment.spec.resources)
    assert experiment.spec.limits.maxTrials == 2
    synth = e2e.tiny_load_job()["spec"]["template"]["spec"]["initContainers"][0]["command"]
    assert synth[:3] == ["autodetect", "dataset", "synth"]
