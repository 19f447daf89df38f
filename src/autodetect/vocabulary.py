"""The words every part shares: phases, label and annotation keys, trial failure reasons, exit codes.
Defined once here and imported; condition types and reasons of the experiment are in tuning.conditions."""

from __future__ import annotations

GROUP, VERSION = "autodetect.dev", "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# phases (a trial's; an experiment is Pending, Running, Succeeded or Failed)
PENDING, RUNNING, SUCCEEDED, PRUNED, FAILED = "Pending", "Running", "Succeeded", "Pruned", "Failed"
ACTIVE_PHASES = (PENDING, RUNNING)
COMPLETED_PHASES = (SUCCEEDED, PRUNED)  # a trial with a metric that may be the best
TERMINAL_PHASES = (SUCCEEDED, PRUNED, FAILED)
ENDED_PHASES = (SUCCEEDED, FAILED)  # an experiment's

# labels on everything made for an experiment or a trial, and on a deployment's objects
EXPERIMENT_LABEL = f"{GROUP}/experiment"
TRIAL_LABEL = f"{GROUP}/trial"
DEPLOYMENT_LABEL = f"{GROUP}/deployment"
MODEL_LABEL = f"{GROUP}/model"
FINALIZER = f"{GROUP}/finalizer"

# why a trial's run ended or cannot start (status.reason of a trial, the pod's own words where it has them)
INVALID_INPUT = "InvalidInput"  # the trainer refused its input: not retried, it fails the experiment
INTERRUPTED = "Interrupted"  # the backend stopped it (Ctrl-C): not the trial's failure, it resumes
REBUILT = "Rebuilt"  # a local trial's lost status.json was rebuilt from its metrics and its artifact
DEADLINE_EXCEEDED = "DeadlineExceeded"
OOM_KILLED = "OOMKilled"
ERROR = "Error"
# a pod that waits with one of these reasons cannot start without help; after a grace period its trial fails
CANNOT_START_INPUT = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
                      "CreateContainerError")  # caused by the trial template: not retried
CANNOT_START = (*CANNOT_START_INPUT, "Unschedulable")

# the trainer's exit status
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
