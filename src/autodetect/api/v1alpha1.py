"""Typed specs of the four resources (group autodetect.dev, version v1alpha1).

Field names are the resources' own (camelCase), so a model dumps to exactly what `kubectl get -o yaml`
shows; the CRDs are generated from these models."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from autodetect.vocabulary import API_VERSION, GROUP, VERSION  # noqa: F401 (re-exported)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Open(BaseModel):
    """Pod-level settings passed through to Kubernetes as they are."""

    model_config = ConfigDict(extra="allow")


class ObjectMeta(Open):
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    namespace: str | None = None
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


class Condition(Strict):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    lastTransitionTime: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    observedGeneration: int | None = None


# --- DetectionExperiment ---------------------------------------------------------------

class DatasetRef(Strict):
    uri: str = Field(min_length=1)


class DatasetSpec(Strict):
    training: DatasetRef
    validation: DatasetRef | None = None
    validationSplit: float = Field(0.2, gt=0.0, lt=1.0)
    root: str | None = Field(None, min_length=1, description="folder (URI) the images must lie under when the "
                             "data set is not on a claim; default: the JSONL's folder")
    imageUrlPrefix: str | None = Field(None, min_length=1, description="an image_url prefix (Azure's "
                                       "azureml://.../paths/<folder>/) mapped onto the data set root")


class SamplingSpec(Strict):
    algorithm: Literal["random", "grid", "bayesian"] = "random"
    seed: int | None = None


def cel(*rules: tuple[str, str]) -> ConfigDict:
    """CEL rules for the API server (x-kubernetes-validations in the CRD), beside the pydantic checks they mirror."""
    return ConfigDict(extra="forbid", populate_by_name=True, json_schema_extra={
        "x-kubernetes-validations": [{"rule": rule, "message": message} for rule, message in rules]})


class EarlyTerminationSpec(Strict):
    model_config = cel(
        ("self.policy != 'bandit' || has(self.slackFactor) != has(self.slackAmount)",
         "bandit takes exactly one of slackFactor or slackAmount"),
        ("self.policy != 'truncation_selection' || has(self.truncationPercentage)",
         "truncation_selection needs truncationPercentage"))

    policy: Literal["none", "bandit", "median_stopping", "truncation_selection"] = "none"
    evaluationInterval: int = Field(1, ge=1)
    delayEvaluation: int = Field(0, ge=0)
    slackFactor: float | None = Field(None, gt=0)
    slackAmount: float | None = Field(None, gt=0)
    truncationPercentage: int | None = Field(None, ge=1, le=99)
    excludeFinishedJobs: bool = False

    @model_validator(mode="after")
    def _policy_settings(self) -> "EarlyTerminationSpec":
        if self.policy == "bandit" and (self.slackFactor is None) == (self.slackAmount is None):
            raise ValueError("bandit takes exactly one of slackFactor or slackAmount")
        if self.policy == "truncation_selection" and self.truncationPercentage is None:
            raise ValueError("truncation_selection needs truncationPercentage")
        return self


class LimitsSpec(Strict):
    maxTrials: int = Field(1, ge=1)
    maxConcurrentTrials: int = Field(1, ge=1)
    maxFailedTrials: int = Field(3, ge=0)
    timeoutMinutes: float | None = Field(None, gt=0)
    trialTimeoutMinutes: float | None = Field(None, gt=0)


class TrialTemplate(Open):
    """The pod of each trial on a cluster; these settings pass through to the trial Job's pod as they are."""

    image: str = "autodetect-trainer:0.1.0"
    imagePullPolicy: Literal["Always", "IfNotPresent", "Never"] | None = None
    imagePullSecrets: list[dict[str, Any]] = []
    resources: dict[str, Any] = {}  # e.g. {limits: {nvidia.com/gpu: 1}}; a fraction of a GPU through time-slicing or MIG
    env: list[dict[str, Any]] = []
    nodeSelector: dict[str, str] = {}
    tolerations: list[dict[str, Any]] = []
    affinity: dict[str, Any] = {}
    priorityClassName: str | None = None
    serviceAccountName: str | None = None  # default: the operator's trial service account
    shmSize: str = "1Gi"  # the memory-backed /dev/shm that data loaders need


class ArtifactsSpec(Strict):
    uri: str = "file://./runs/artifacts/"


MUTABLE_SPEC_FIELDS = ("limits", "trialTemplate")  # what may change while an experiment runs


class ExperimentSpec(Strict):
    dataset: DatasetSpec
    primaryMetric: str = "mean_average_precision"
    objective: Literal["maximize", "minimize"] = "maximize"
    searchSpace: list[dict[str, Any]] = Field(min_length=1)
    sampling: SamplingSpec = SamplingSpec()
    earlyTermination: EarlyTerminationSpec = EarlyTerminationSpec()
    limits: LimitsSpec = LimitsSpec()
    trialTemplate: TrialTemplate = TrialTemplate()
    artifacts: ArtifactsSpec = ArtifactsSpec()

    @field_validator("searchSpace")
    @classmethod
    def _parse_search_space(cls, blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from autodetect.errors import SpecError
        from autodetect.tuning.space import parse_search_space

        try:
            parse_search_space(blocks)
        except SpecError as exc:  # keep the block and key it names, e.g. "[1].learning_rate"
            raise PydanticCustomError("search_space", "{reason}", {"field": exc.field, "reason": exc.reason}) from None
        return blocks

    @model_validator(mode="after")
    def _space_fits_sampling(self) -> "ExperimentSpec":  # e.g. grid refuses a continuous range
        from autodetect.errors import SpecError
        from autodetect.tuning.space import parse_search_space, validate_for_algorithm

        try:
            validate_for_algorithm(parse_search_space(self.searchSpace), self.sampling.algorithm)
        except SpecError as exc:
            field = f".searchSpace{exc.field}"
            raise PydanticCustomError("search_space", "{reason}", {"field": field, "reason": exc.reason}) from None
        return self


class TrialCounts(Strict):
    total: int = 0
    running: int = 0
    succeeded: int = 0
    pruned: int = 0
    failed: int = 0


class BestTrial(Strict):
    name: str
    metric: float
    hyperparameters: dict[str, Any]
    artifactUri: str | None = None


class ExperimentStatus(Strict):
    phase: Literal["Pending", "Running", "Succeeded", "Failed"] = "Pending"
    conditions: list[Condition] = []
    observedGeneration: int | None = None
    specFingerprint: dict[str, str] = {}  # a digest of each spec field that may not change while it runs
    trials: TrialCounts = TrialCounts()
    endedTrials: dict[str, str] = {}  # trial name -> the phase it ended in (Succeeded, Pruned, Failed)
    bestTrial: BestTrial | None = None
    model: str | None = None
    message: str = ""
    startTime: datetime | None = None
    completionTime: datetime | None = None


# --- DetectionTrial ----------------------------------------------------------------

class TrialSpec(Strict):
    experiment: str
    hyperparameters: dict[str, Any]
    attempt: int = Field(0, ge=0)
    stop: bool = False  # set to prune: the trainer ends the trial (Pruned) after its epoch
    stopReason: str = ""
    stopTime: datetime | None = None
    dataset: DatasetSpec
    primaryMetric: str = "mean_average_precision"
    artifacts: ArtifactsSpec = ArtifactsSpec()


class EpochMetrics(Strict):
    epoch: int = Field(ge=1)
    metrics: dict[str, Any]


TrialPhase = Literal["Pending", "Running", "Succeeded", "Pruned", "Failed"]


class TrialModel(Strict):
    """What a trial's artifact holds, as its model card says: enough to register it without reading it."""

    format: Literal["ultralytics", "torchvision", "onnx"]
    classes: list[str] = Field(min_length=1)
    inputSize: dict[str, int] = {}
    epoch: int | None = None
    metrics: dict[str, Any] = {}


class TrialStatus(Strict):
    phase: TrialPhase = "Pending"
    reason: str = ""  # why it ended or waits, in one word (InvalidInput, OOMKilled, ImagePullBackOff, ...)
    conditions: list[Condition] = []
    epochs: list[EpochMetrics] = []
    finalMetric: float | None = None
    artifactUri: str | None = None
    model: TrialModel | None = None
    message: str = ""
    startTime: datetime | None = None
    completionTime: datetime | None = None


# --- DetectionModel ------------------------------------------------------------------

class Lineage(Strict):
    experiment: str | None = None
    trial: str | None = None
    hyperparameters: dict[str, Any] = {}


class ModelSpec(Strict):
    artifactUri: str
    format: Literal["ultralytics", "torchvision", "onnx"]
    classes: list[str] = Field(min_length=1)
    inputSize: dict[str, int] = {}
    metrics: dict[str, Any] = {}
    lineage: Lineage = Lineage()


class ModelStatus(Strict):
    conditions: list[Condition] = []
    observedGeneration: int | None = None


# --- DetectionDeployment -------------------------------------------------------------

class ModelSelector(Strict):
    model_config = cel(("has(self.experimentRef) != has(self.modelRef)", "give exactly one of experimentRef or modelRef"))

    experimentRef: str | None = None
    modelRef: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "ModelSelector":
        if (self.experimentRef is None) == (self.modelRef is None):
            raise ValueError("give exactly one of experimentRef or modelRef")
        return self


class Replicas(Strict):
    model_config = cel(("self.max >= self.min", "max must be at least min"))

    min: int = Field(1, ge=1)
    max: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> "Replicas":
        if self.max < self.min:
            raise ValueError("max must be at least min")
        return self


class Autoscaling(Strict):
    targetCPUUtilizationPercentage: int | None = Field(70, ge=1, le=100)
    # the server's own gauge (autodetect_requests_in_flight), a Pods metric through the Prometheus adapter:
    # a better signal than CPU for a GPU pod
    targetRequestsInFlightPerPod: float | None = Field(None, gt=0)


class AuthSpec(Strict):
    enabled: bool = True


class DeploymentSpec(Strict):
    model: ModelSelector
    replicas: Replicas = Replicas()
    autoscaling: Autoscaling = Autoscaling()
    resources: dict[str, Any] = {}
    auth: AuthSpec = AuthSpec()
    image: str | None = None  # default: autodetect-serving:<version>, its -gpu variant when resources ask for a GPU


class DeploymentStatus(Strict):
    conditions: list[Condition] = []
    observedGeneration: int | None = None
    url: str | None = None
    readyReplicas: int = 0
    servingModel: str | None = None  # the DetectionModel every ready replica serves
    servingDigest: str | None = None  # which version of it (a digest of its spec)
    desiredModel: str | None = None  # what rolls out (the same as servingModel once the rollout is done)
    desiredDigest: str | None = None


# --- the resources ---------------------------------------------------------------------

class _Resource(Strict):
    apiVersion: Literal["autodetect.dev/v1alpha1"] = API_VERSION
    metadata: ObjectMeta


class DetectionExperiment(_Resource):
    """An AutoML sweep over detectors and hyperparameters: trials sampled from a search space, pruned
    early, the best registered as a DetectionModel."""

    kind: Literal["DetectionExperiment"] = "DetectionExperiment"
    spec: ExperimentSpec
    status: ExperimentStatus = ExperimentStatus()


class DetectionTrial(_Resource):
    """One training run of an experiment with sampled hyperparameters; made by the operator."""

    kind: Literal["DetectionTrial"] = "DetectionTrial"
    spec: TrialSpec
    status: TrialStatus = TrialStatus()


class DetectionModel(_Resource):
    """A trained detector: its artifact, format, classes, metrics and lineage."""

    kind: Literal["DetectionModel"] = "DetectionModel"
    spec: ModelSpec
    status: ModelStatus = ModelStatus()


class DetectionDeployment(_Resource):
    """An autoscaled, authenticated HTTP endpoint serving a DetectionModel (or an experiment's best)."""

    kind: Literal["DetectionDeployment"] = "DetectionDeployment"
    spec: DeploymentSpec
    status: DeploymentStatus = DeploymentStatus()


KINDS: dict[str, type[_Resource]] = {
    cls.model_fields["kind"].default: cls
    for cls in (DetectionExperiment, DetectionTrial, DetectionModel, DetectionDeployment)
}
