"""The Kubernetes operator (`autodetect operator`): kopf handlers (handlers.py, decorators only), pure builders of
the objects it writes (builders.py), one reconcile pass per experiment carrying out tuning's decisions
(experiments.py), how Jobs and Pods are in the engine's terms (observe.py), the API client (kube.py), the admission
checks (admission.py), metrics, and the trainer's Kubernetes reporter for trial pods (reporter.py)."""
