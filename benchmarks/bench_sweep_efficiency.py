"""Sweep efficiency of the early-termination policies on synthetic learning curves.

Each sweep draws `--trials` saturating curves a*(1-exp(-t/b)) + noise (a trial-specific ceiling a and time
constant b, seeded), runs them `--concurrency` at a time, one evaluation per interval, and asks the real
policies (autodetect.tuning.policies.decide_stops) which running trials to stop after every interval, the way
the experiment engine does. For each policy it prints the trial-epochs used, the share saved against no early
termination, how often the true best trial (highest noiseless final value) survives to its last epoch, and how
often it is the trial the sweep would pick (best reported metric). A first check runs one smaller sweep per
policy through the whole engine (reconcile) and requires the same trial-epochs and stopped trials.

    python benchmarks/bench_sweep_efficiency.py [--sweeps 50 --trials 60 --epochs 15 --concurrency 6]
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timedelta, timezone

import numpy as np

from autodetect.api.v1alpha1 import DetectionExperiment, DetectionTrial, EarlyTerminationSpec, EpochMetrics
from autodetect.tuning.engine import Fail, Finish, StartTrial, StopTrial, reconcile
from autodetect.tuning.policies import decide_stops

POLICIES = {
    "none": {"policy": "none"},
    "bandit slack 0.1": {"policy": "bandit", "slackFactor": 0.1},
    "bandit slack 0.2": {"policy": "bandit", "slackFactor": 0.2},
    "median stopping": {"policy": "median_stopping"},
    "truncation 25%": {"policy": "truncation_selection", "truncationPercentage": 25},
    "truncation 50%": {"policy": "truncation_selection", "truncationPercentage": 50},
}


def make_curves(seed: int, trials: int, epochs: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Observed metric per (trial, epoch), and each trial's noiseless final value."""
    rng = np.random.default_rng(seed)
    ceiling = rng.uniform(0.3, 0.9, trials)[:, None]
    tau = rng.uniform(1.0, 10.0, trials)[:, None]  # epochs to reach 63% of the ceiling
    t = np.arange(1, epochs + 1)[None, :]
    clean = ceiling * (1 - np.exp(-t / tau))
    return clean + rng.normal(0.0, noise, clean.shape), clean[:, -1]


def run_sweep(policy: EarlyTerminationSpec, observed: np.ndarray, concurrency: int) -> list[int]:
    """Epochs each trial ran. Trials start in order, as many at once as allowed; as in the engine, a
    stopped trial holds its slot until the next interval (its pod has to end first)."""
    trials, epochs = observed.shape
    reported: dict[str, list[float]] = {}
    running: set[str] = set()
    while True:
        stops = decide_stops(policy, reported, running, "maximize")
        for _ in range(min(concurrency - len(running), trials - len(reported))):
            name = f"t{len(reported):03d}"
            reported[name] = []
            running.add(name)
        running -= stops.keys()
        if not running and len(reported) == trials:
            return [len(reported[f"t{i:03d}"]) for i in range(trials)]
        for name in running:
            reported[name].append(float(observed[int(name[1:]), len(reported[name])]))
        running -= {name for name in running if len(reported[name]) == epochs}


def run_engine_sweep(policy: EarlyTerminationSpec, observed: np.ndarray, concurrency: int) -> list[int]:
    """The same sweep through the engine: a backend that stops a trial the moment it is told to."""
    trials, epochs = observed.shape
    dataset = {"training": {"uri": "file:///synthetic.jsonl"}}
    experiment = DetectionExperiment.model_validate({
        "metadata": {"name": "bench"},
        "spec": {"dataset": dataset, "searchSpace": [{"model_name": "yolov8", "learning_rate": "uniform(0.001, 0.01)"}],
                 "earlyTermination": policy.model_dump(),
                 "limits": {"maxTrials": trials, "maxConcurrentTrials": concurrency}}})
    metric = experiment.spec.primaryMetric
    state: dict[str, DetectionTrial] = {}
    now = datetime(2025, 1, 1, tzinfo=timezone.utc)
    while True:
        decision = reconcile(experiment, list(state.values()), now)
        experiment = experiment.model_copy(update={"status": decision.status})
        for action in decision.actions:
            if isinstance(action, StartTrial):
                state[action.name] = DetectionTrial.model_validate({
                    "metadata": {"name": action.name},
                    "spec": {"experiment": "bench", "hyperparameters": action.parameters, "dataset": dataset},
                    "status": {"phase": "Running", "startTime": now}})
            elif isinstance(action, StopTrial):
                state[action.name].status.phase = "Pruned"
            elif isinstance(action, (Finish, Fail)):
                return [len(state[f"bench-{i:03d}"].status.epochs) for i in range(trials)]
        now += timedelta(minutes=1)
        for name, trial in state.items():
            if trial.status.phase == "Running":
                done = len(trial.status.epochs)
                value = float(observed[int(name.rsplit("-", 1)[1]), done])
                trial.status.epochs.append(EpochMetrics(epoch=done + 1, metrics={metric: value}))
                if done + 1 == epochs:
                    trial.status.phase = "Succeeded"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweeps", type=int, default=50)
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument("--noise", type=float, default=0.01)
    parser.add_argument("--interval", type=int, default=1, help="evaluationInterval of every policy")
    parser.add_argument("--delay", type=int, default=5, help="delayEvaluation of every policy")
    args = parser.parse_args()
    policies = {label: EarlyTerminationSpec(evaluationInterval=args.interval, delayEvaluation=args.delay, **kw)
                for label, kw in POLICIES.items()}

    started = time.perf_counter()
    check, _ = make_curves(10_000, 40, args.epochs, args.noise)
    for label, policy in policies.items():
        direct, engine = run_sweep(policy, check, args.concurrency), run_engine_sweep(policy, check, args.concurrency)
        assert direct == engine, f"{label}: the engine ran {engine}, the direct loop {direct}"
    print(f"engine check: reconcile and the direct loop agree on a 40-trial sweep for every policy "
          f"({time.perf_counter() - started:.1f} s)")

    started = time.perf_counter()
    used = {label: 0 for label in policies}
    survived = {label: 0 for label in policies}
    picked = {label: 0 for label in policies}
    for seed in range(args.sweeps):
        observed, final = make_curves(seed, args.trials, args.epochs, args.noise)
        best = int(np.argmax(final))
        for label, policy in policies.items():
            ran = run_sweep(policy, observed, args.concurrency)
            used[label] += sum(ran)
            survived[label] += ran[best] == args.epochs
            reported_best = [observed[i, :n].max() for i, n in enumerate(ran)]
            picked[label] += int(np.argmax(reported_best)) == best

    print(f"{args.sweeps} sweeps x {args.trials} trials x {args.epochs} epochs, {args.concurrency} at once, "
          f"evaluationInterval {args.interval}, delayEvaluation {args.delay}, noise {args.noise}")
    print(f"{'policy':<18} {'trial-epochs':>12} {'saved':>7} {'best survives':>14} {'best picked':>12}")
    for label in policies:
        saved = 1 - used[label] / used["none"]
        print(f"{label:<18} {used[label] / args.sweeps:>12.0f} {saved:>7.1%} "
              f"{survived[label] / args.sweeps:>14.0%} {picked[label] / args.sweeps:>12.0%}")
    print(f"(trial-epochs per sweep, averaged; {time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
