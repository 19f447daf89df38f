"""Subcommands of this area (see autodetect.cli): operator."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "operator", help="run the Kubernetes operator (experiments, trials, models, deployments)",
        description="Run the kopf operator that reconciles DetectionExperiments (trials as Jobs, pruning, the best "
                    "registered as a DetectionModel) and DetectionDeployments. Credentials: the in-cluster service "
                    "account, else --kubeconfig / $KUBECONFIG / ~/.kube/config.")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", default=[], metavar="NS",
                       help="watch this namespace (repeatable; a glob such as team-* works)")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace (the default)")
    parser.add_argument("--standalone", action="store_true", help="no peering: run alone, even beside other replicas")
    parser.add_argument("--peering-name", default="autodetect", help="the KopfPeering object replicas share")
    parser.add_argument("--priority", type=int, default=None,
                        help="peering priority; the highest replica acts (default: from the pod's ordinal in its "
                             "StatefulSet, $POD_NAME ending in -N: 100 - N; else 0)")
    parser.add_argument("--peering-lifetime", type=int, default=60, metavar="SECONDS",
                        help="how long a silent peer counts as alive: a standby takes over this long after its "
                             "active peer dies")
    parser.add_argument("--kubeconfig", help="a kubeconfig file (default: in-cluster, else $KUBECONFIG)")
    parser.add_argument("--metrics-port", type=int, default=8000, help="Prometheus metrics on this port (0: none)")
    parser.add_argument("--health-port", type=int, default=8080, help="liveness probe on :PORT/healthz (0: none)")
    parser.add_argument("--webhook-port", type=int, default=9443, help="the validating admission webhook's port")
    parser.add_argument("--webhook-cert", help="the webhook's TLS certificate (PEM); without it the webhook serves "
                                               "plain HTTP on localhost only")
    parser.add_argument("--webhook-key", help="the webhook's TLS private key (PEM)")
    parser.add_argument("--trial-service-account", default="autodetect-trial",
                        help="the service account of trial pods whose template names none")
    parser.add_argument("--start-grace-minutes", type=float, default=10.0,
                        help="how long a trial's pod may fail to start (image pull, scheduling) before the trial fails")
    parser.set_defaults(handler=_operator)


def pod_priority(pod_name: str | None) -> int:
    """Replicas of a StatefulSet get distinct peering priorities from their ordinals: -0 acts, -1 stands by."""
    ordinal = (pod_name or "").rpartition("-")[2]
    return 100 - int(ordinal) if ordinal.isdigit() else 0


def _operator(args: argparse.Namespace) -> int:
    import asyncio
    import os

    from autodetect.operator.builders import TrialPodSettings
    from autodetect.operator.experiments import Settings
    from autodetect.operator.runtime import OperatorConfig, operate

    config = OperatorConfig(
        namespaces=args.namespace, standalone=args.standalone, peering_name=args.peering_name,
        priority=pod_priority(os.environ.get("POD_NAME")) if args.priority is None else args.priority,
        peering_lifetime_s=args.peering_lifetime, kubeconfig=args.kubeconfig, metrics_port=args.metrics_port or None,
        liveness_endpoint=f"http://0.0.0.0:{args.health_port}/healthz" if args.health_port else None,
        webhook_port=args.webhook_port, webhook_certfile=args.webhook_cert, webhook_keyfile=args.webhook_key,
        settings=Settings(pods=TrialPodSettings(service_account=args.trial_service_account),
                          start_grace_s=args.start_grace_minutes * 60))
    asyncio.run(operate(config))
    return 0
