"""The operator's kopf registrations, and nothing else: each handler hands its work to the Operator in kopf's memo
(autodetect.operator.runtime)."""

from __future__ import annotations

import kopf

from autodetect.operator.observe import wants_a_pass_at_once
from autodetect.operator.runtime import DEPLOYMENT, EXPERIMENT
from autodetect.vocabulary import DEPLOYMENT_LABEL, EXPERIMENT_LABEL, GROUP, VERSION

registry = kopf.OperatorRegistry()
BELONGS_TO_AN_EXPERIMENT = {EXPERIMENT_LABEL: kopf.PRESENT}
SERVES_A_MODEL = {DEPLOYMENT_LABEL: kopf.PRESENT}
WEBHOOK_PATH = "validate"  # the webhook serves https://<service>:<port>/validate for the four kinds


@kopf.on.startup(registry=registry)
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_) -> None:
    memo.operator.configure(settings)


@kopf.on.login(registry=registry)
def login(memo: kopf.Memo, **_) -> kopf.ConnectionInfo:
    return memo.operator.connection_info()


@kopf.daemon(GROUP, VERSION, "detectionexperiments", registry=registry, cancellation_timeout=30)
async def experiment(namespace: str, name: str, stopped: kopf.DaemonStopped, memo: kopf.Memo, **_) -> None:
    await memo.operator.run_experiment(namespace, name, stopped)


@kopf.on.event(GROUP, VERSION, "detectionexperiments", registry=registry)
async def experiment_changed(namespace: str, name: str, meta: kopf.Meta, memo: kopf.Memo, **_) -> None:
    memo.operator.wake_on_spec(EXPERIMENT, namespace, name, meta.get("generation"))
    memo.operator.wake(DEPLOYMENT, namespace, at_once=False)  # the model it registers may have changed


@kopf.on.event(GROUP, VERSION, "detectiontrials", labels=BELONGS_TO_AN_EXPERIMENT, registry=registry)
async def trial_changed(namespace: str, labels: kopf.Labels, body: kopf.Body, resource: kopf.Resource,
                        memo: kopf.Memo, **_) -> None:
    memo.operator.wake(EXPERIMENT, namespace, labels.get(EXPERIMENT_LABEL),
                       at_once=wants_a_pass_at_once(resource.plural, body))


@kopf.on.event("batch", "v1", "jobs", labels=BELONGS_TO_AN_EXPERIMENT, registry=registry)
@kopf.on.event("v1", "pods", labels=BELONGS_TO_AN_EXPERIMENT, registry=registry)
async def run_changed(type: str | None, namespace: str, labels: kopf.Labels, body: kopf.Body,
                      resource: kopf.Resource, memo: kopf.Memo, **_) -> None:
    memo.operator.runs.seen(resource.plural, type, dict(body))
    memo.operator.wake(EXPERIMENT, namespace, labels.get(EXPERIMENT_LABEL),
                       at_once=wants_a_pass_at_once(resource.plural, body))


@kopf.daemon(GROUP, VERSION, "detectiondeployments", registry=registry, cancellation_timeout=30)
async def deployment(namespace: str, name: str, stopped: kopf.DaemonStopped, memo: kopf.Memo, **_) -> None:
    await memo.operator.run_deployment(namespace, name, stopped)


@kopf.on.event(GROUP, VERSION, "detectiondeployments", registry=registry)
async def deployment_changed(namespace: str, name: str, meta: kopf.Meta, memo: kopf.Memo, **_) -> None:
    memo.operator.wake_on_spec(DEPLOYMENT, namespace, name, meta.get("generation"))


@kopf.on.event(GROUP, VERSION, "detectionmodels", registry=registry)
async def model_changed(namespace: str, memo: kopf.Memo, **_) -> None:
    memo.operator.wake(DEPLOYMENT, namespace)


@kopf.on.event("apps", "v1", "deployments", labels=SERVES_A_MODEL, registry=registry)
async def serving_changed(namespace: str, labels: kopf.Labels, memo: kopf.Memo, **_) -> None:
    memo.operator.wake(DEPLOYMENT, namespace, labels.get(DEPLOYMENT_LABEL))


@kopf.on.validate(GROUP, VERSION, "detectionexperiments", id=WEBHOOK_PATH, registry=registry)
@kopf.on.validate(GROUP, VERSION, "detectiontrials", id=WEBHOOK_PATH, registry=registry)
@kopf.on.validate(GROUP, VERSION, "detectionmodels", id=WEBHOOK_PATH, registry=registry)
@kopf.on.validate(GROUP, VERSION, "detectiondeployments", id=WEBHOOK_PATH, registry=registry)
def validate(body: kopf.Body, old: kopf.Body | None, memo: kopf.Memo, **_) -> None:
    memo.operator.validate(body, old)
