"""One reconcile pass of one DetectionDeployment: find the model it serves (an experiment's registered best, or a
named DetectionModel), keep its key Secret, its Deployment, Service, HorizontalPodAutoscaler and (with two
replicas or more) PodDisruptionBudget as the builders make them, and say in its status what serves and how the
rollout goes. Level-triggered, keeping nothing between passes."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from autodetect import __version__
from autodetect.api import DetectionDeployment, DetectionExperiment, DetectionModel, parse_resource
from autodetect.api.v1alpha1 import DeploymentStatus
from autodetect.errors import SpecError
from autodetect.operator import builders
from autodetect.operator.experiments import Outcome, now
from autodetect.operator.kube import DETECTION_DEPLOYMENTS, EXPERIMENTS, MODELS, PDBS, SECRETS, Api
from autodetect.tuning.conditions import set_condition
from autodetect.tuning.events import Event

READY, PROGRESSING = "Ready", "Progressing"
WAITING_FOR_MODEL, INVALID_SPEC, INVALID_MODEL = "WaitingForModel", "InvalidSpec", "InvalidModel"
ROLLOUT_IN_PROGRESS, ROLLOUT_COMPLETE, AVAILABLE, UNAVAILABLE = ("RolloutInProgress", "RolloutComplete",
                                                                 "MinimumReplicasAvailable", "NoReplicasAvailable")
ROLLOUT_STARTED, ROLLOUT_DONE = "RolloutStarted", "RolloutDone"


def not_serving(status: DeploymentStatus, reason: str, message: str, now: datetime,
                generation: int | None) -> DeploymentStatus:
    """Nothing can roll out yet (no model, an invalid spec or model): Ready and Progressing say why."""
    conditions = set_condition(status.conditions, READY, "False", reason, message, now, generation)
    conditions = set_condition(conditions, PROGRESSING, "False", reason, message, now, generation)
    return status.model_copy(update={"conditions": conditions, "observedGeneration": generation})


def rollout_status(ddep: DetectionDeployment, model: builders.ServedModel, deployment: dict,
                   now: datetime) -> tuple[DeploymentStatus, list[Event]]:
    """The status from the Deployment's own (as `kubectl rollout status` reads it), and the rollout's Events."""
    status, name, generation = ddep.status, ddep.metadata.name, getattr(ddep.metadata, "generation", None)
    observed = deployment.get("status") or {}
    wanted = (deployment.get("spec") or {}).get("replicas") or 0
    updated, available = observed.get("updatedReplicas", 0), observed.get("availableReplicas", 0)
    done = (observed.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 0)
            and updated >= wanted and available >= updated and observed.get("replicas", 0) == updated)
    events = []
    if status.desiredDigest != model.digest:
        events.append(Event(ROLLOUT_STARTED, f"{name}: rolling out {model.name} ({model.digest})"))
    update: dict = {"desiredModel": model.name, "desiredDigest": model.digest, "readyReplicas": observed.get("readyReplicas", 0),
                    "url": builders.service_url(ddep), "observedGeneration": generation}
    conditions = status.conditions
    if done:
        if status.servingDigest != model.digest:
            events.append(Event(ROLLOUT_DONE, f"{name}: {model.name} ({model.digest}) serves on {updated} replica(s)"))
        update |= {"servingModel": model.name, "servingDigest": model.digest}
        conditions = set_condition(conditions, PROGRESSING, "True", ROLLOUT_COMPLETE,
                                   f"{model.name} serves on every replica", now, generation)
    else:
        conditions = set_condition(conditions, PROGRESSING, "True", ROLLOUT_IN_PROGRESS,
                                   f"rolling out {model.name}: {updated}/{wanted} updated, {available} available",
                                   now, generation)
    serving = update.get("servingModel", status.servingModel)
    if available > 0 and serving:
        conditions = set_condition(conditions, READY, "True", AVAILABLE, f"{available} replica(s) serve {serving}",
                                   now, generation)
    else:
        conditions = set_condition(conditions, READY, "False", UNAVAILABLE, "no replica is available yet", now,
                                   generation)
    return status.model_copy(update=update | {"conditions": conditions}), events


@dataclass
class DeploymentPass:
    api: Api
    namespace: str
    name: str
    post: Callable[[Event, dict], None]  # as ExperimentPass's
    clock: Callable[[], datetime] = now

    def run(self) -> Outcome:
        obj = self.api.get(DETECTION_DEPLOYMENTS, self.namespace, self.name)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return Outcome(None, [])  # what it owns goes with it (ownerReferences)
        at, generation = self.clock(), obj["metadata"].get("generation")
        try:
            ddep = parse_resource(obj, DetectionDeployment, f"DetectionDeployment {self.namespace}/{self.name}")
        except SpecError as exc:
            stored = DeploymentStatus.model_validate(obj.get("status") or {})
            return self._write(obj, stored, not_serving(stored, INVALID_SPEC, str(exc), at, generation), [])
        model, why = self._model(ddep)
        if model is None:
            return self._write(obj, ddep.status, not_serving(ddep.status, *why, at, generation), [])
        key_version = self._key(ddep) if ddep.spec.auth.enabled else None
        deployment = self._apply(builders.serving_deployment(ddep, model, __version__, key_version),
                                 initial={"replicas": ddep.spec.replicas.min})
        for obj_ in (builders.serving_service(ddep), builders.autoscaler(ddep)):
            self._apply(obj_)
        if (pdb := builders.disruption_budget(ddep)) is not None:
            self._apply(pdb)
        else:
            self.api.delete(PDBS, self.namespace, self.name)
        status, events = rollout_status(ddep, model, deployment, at)
        return self._write(obj, ddep.status, status, events)

    def _model(self, ddep: DetectionDeployment) -> tuple[builders.ServedModel | None, tuple[str, str]]:
        selector = ddep.spec.model
        name = selector.modelRef
        if selector.experimentRef is not None:
            experiment = self.api.get(EXPERIMENTS, self.namespace, selector.experimentRef)
            name = parse_resource(experiment, DetectionExperiment).status.model if experiment else None
            if name is None:
                return None, (WAITING_FOR_MODEL, f"experiment {selector.experimentRef} has registered no model yet")
        found = self.api.get(MODELS, self.namespace, name)
        if found is None:
            return None, (WAITING_FOR_MODEL, f"there is no DetectionModel {name}")
        try:
            return builders.ServedModel.of(parse_resource(found, DetectionModel)), ("", "")
        except (SpecError, ValueError) as exc:
            return None, (INVALID_MODEL, str(exc))

    def _key(self, ddep: DetectionDeployment) -> str:
        """The key Secret's uid (it rolls the pods when the Secret is replaced); made once, with 32 random bytes."""
        name = builders.key_secret_name(ddep)
        secret = self.api.get(SECRETS, self.namespace, name) or \
            self.api.create(builders.key_secret(ddep, secrets.token_urlsafe(32))) or \
            self.api.get(SECRETS, self.namespace, name)
        return secret["metadata"]["uid"]

    def _apply(self, desired: dict, initial: dict | None = None) -> dict:
        """Create desired (with the initial spec fields), or bring the existing object to it (a merge patch)."""
        return self.api.ensure({**desired, "spec": {**desired["spec"], **(initial or {})}},
                               {"metadata": desired["metadata"], "spec": desired["spec"]})

    def _write(self, obj: dict, stored: DeploymentStatus, status: DeploymentStatus, events: list[Event]) -> Outcome:
        if status != stored:
            self.api.replace_status(builders.with_status(obj, status))
        for event in events:
            self.post(event, obj)
        return Outcome(status.readyReplicas and "Ready" or "NotReady", events)
