"""The experiment operator under load: 50 experiments of 20 trials each against the API server emulator
(tests/apiserver), the kubelet and the trainers simulated in this process, the operator a real `autodetect operator`
process. Prints the operator's CPU seconds and peak RSS, the p50 and p99 time from a trial finishing to the next
trial's Job existing (target: p99 under 1 s), and the API requests the operator made per trial.

    .venv/bin/python benchmarks/bench_operator.py [--experiments 50] [--trials 20] [--concurrency 4]
                                                  [--epochs 3] [--epoch-s 6] [--jitter 0.5]

Each simulated trial reports one evaluation every --epoch-s seconds (each epoch drawn within +-jitter of it) for
--epochs epochs, then succeeds (or ends Pruned when the operator asks it to stop, which a bandit policy does to
the weak half). The default load, 200 trials at once that last about 18 s each (some 11 trial ends a second), is
far above a real sweep's (200 GPU trials of ten minutes end about one every 3 s) and within what this harness
carries on 2 cores, where the operator, the emulator and the simulation share them. Past that (`--epoch-s 3`
offers 22 trial ends a second, `--epochs 2 --epoch-s 0.5` 200) the trials queue, and the latency figure measures
the queue: the sustained rate of trials is the figure to read there.

A trial's end is the moment its trainer reports the end; it is paired with the next Job of its experiment made
after it (first come, first paired), as the kubelet's watch sees that Job arrive."""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import httpx  # noqa: E402
import yaml  # noqa: E402

from apiserver import Emulator, controllers  # noqa: E402

NAMESPACE = "default"


def crds() -> list[dict]:
    return [doc for path in sorted((ROOT / "crds").glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text())
            if doc]


def experiment(name: str, trials: int, concurrency: int) -> dict:
    return {"apiVersion": "autodetect.dev/v1alpha1", "kind": "DetectionExperiment",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"dataset": {"training": {"uri": "pvc://data/train.jsonl"}},
                     "searchSpace": [{"model_name": "yolov8", "learning_rate": "uniform(0.001, 0.1)"}],
                     "sampling": {"algorithm": "random", "seed": 1}, "artifacts": {"uri": "pvc://artifacts/"},
                     "earlyTermination": {"policy": "bandit", "slackFactor": 0.1, "evaluationInterval": 1,
                                          "delayEvaluation": 1},
                     "limits": {"maxTrials": trials, "maxConcurrentTrials": concurrency, "maxFailedTrials": 0}}}


def now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class Simulation:
    """The kubelet, the Job controller and the trainers: a trial's Job runs, reports its epochs, and ends."""

    def __init__(self, emulator: Emulator, epochs: int, epoch_s: float, jitter: float):
        self.emulator, self.epochs, self.epoch_s, self.jitter = emulator, epochs, epoch_s, jitter
        self.running: dict[str, dict] = {}  # job name -> {trial, pod, next, epoch}
        self.ended: dict[str, collections.deque] = collections.defaultdict(collections.deque)  # experiment -> ends
        self.latencies: list[float] = []
        self.lock = threading.Lock()
        self.random = random.Random(0)

    def epoch(self) -> float:
        return self.epoch_s * self.random.uniform(1 - self.jitter, 1 + self.jitter)

    def watch_jobs(self, url: str, stop: threading.Event) -> None:
        """The kubelet's view: a watch on Jobs. A Job counts as existing when its ADDED event arrives (so the
        figure includes the watch's own delivery: it is an upper bound)."""
        with httpx.Client(base_url=url, timeout=None, headers={"Authorization": "Bearer kubelet"}) as client:
            with client.stream("GET", f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs", params={"watch": "true"}) as events:
                for line in events.iter_lines():
                    if stop.is_set():
                        return
                    event = json.loads(line)
                    if event["type"] == "ADDED":
                        self.added(event["object"])

    def added(self, job: dict) -> None:
        labels = job["metadata"]["labels"]
        with self.lock:
            if ends := self.ended[labels["autodetect.dev/experiment"]]:
                self.latencies.append(time.perf_counter() - ends.popleft())
            self.running[job["metadata"]["name"]] = {"job": job, "trial": labels["autodetect.dev/trial"], "epoch": 0,
                                                     "next": time.perf_counter() + self.epoch(), "pod": None}

    def step(self) -> None:
        with self.lock:
            due = [(name, run) for name, run in self.running.items() if run["next"] <= time.perf_counter()]
        for name, run in due:
            trial = self.emulator.get("detectiontrials", NAMESPACE, run["trial"])
            if run["pod"] is None:
                run["pod"] = controllers.pod_running(self.emulator, controllers.job_pod(self.emulator, run["job"]))
                self.emulator.patch("detectiontrials", NAMESPACE, run["trial"], {"status": {
                    "phase": "Running", "startTime": now()}}, subresource="status")
            stop = trial["spec"].get("stop")
            if not stop and run["epoch"] < self.epochs:
                run["epoch"] += 1
                value = (hash(run["trial"]) % 1000) / 1000
                epochs = (trial.get("status") or {}).get("epochs", []) + [
                    {"epoch": run["epoch"], "metrics": {"mean_average_precision": value}}]
                self.emulator.patch("detectiontrials", NAMESPACE, run["trial"], {"status": {"epochs": epochs}},
                                    subresource="status")
                run["next"] = time.perf_counter() + self.epoch()
                continue
            best = max(e["metrics"]["mean_average_precision"] for e in (trial.get("status") or {}).get("epochs", [])
                       or [{"metrics": {"mean_average_precision": 0.0}}])
            ended = time.perf_counter()
            self.emulator.patch("detectiontrials", NAMESPACE, run["trial"], {"status": {
                "phase": "Pruned" if stop else "Succeeded", "finalMetric": best, "completionTime": now(),
                "artifactUri": f"pvc://artifacts/{run['trial']}/",
                "model": {"format": "ultralytics", "classes": ["a"], "metrics": {"mean_average_precision": best}}}},
                subresource="status")
            controllers.pod_terminated(self.emulator, run["pod"], 0)
            controllers.job_finished(self.emulator, self.emulator.get("jobs", NAMESPACE, name), succeeded=True)
            with self.lock:
                del self.running[name]
                self.ended[run["job"]["metadata"]["labels"]["autodetect.dev/experiment"]].append(ended)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def reconcile_figures(text: str) -> str:
    """How many passes, and their mean time, from the operator's own histogram."""
    values = {line.split("{")[0].rsplit("_", 1)[-1]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("autodetect_operator_reconcile_duration_seconds_") and "DetectionExperiment" in line
              and ("_count" in line or "_sum" in line)}
    return f"{values['count']:.0f}, {values['sum'] / values['count'] * 1000:.0f} ms each on average"


def proc_figures(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) and peak RSS in MiB of a live process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return cpu, int(status["VmHWM"].split()[0]) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", type=int, default=50)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--epoch-s", type=float, default=6.0)
    parser.add_argument("--jitter", type=float, default=0.5, help="each epoch lasts epoch-s times 1 +- this")
    args = parser.parse_args()

    emulator = Emulator(crds=crds(), validate_builtins=False)  # the tests check objects; here only speed counts
    simulation = Simulation(emulator, args.epochs, args.epoch_s, args.jitter)
    with emulator.serve(), tempfile.TemporaryDirectory() as scratch:
        kubeconfig = emulator.kubeconfig(Path(scratch) / "kubeconfig", user="operator")
        metrics_port = free_port()
        operator = subprocess.Popen([sys.executable, "-m", "autodetect.cli", "operator", "--kubeconfig", str(kubeconfig),
                                     "--standalone", "--metrics-port", str(metrics_port), "--health-port", "0",
                                     "--webhook-port", "0"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        watcher_stop = threading.Event()
        threading.Thread(target=simulation.watch_jobs, args=(str(emulator.url), watcher_stop), daemon=True).start()
        time.sleep(3)  # the operator's start (imports, discovery, watches)
        started, own_before = time.perf_counter(), time.process_time()
        cpu_before, _ = proc_figures(operator.pid)
        for index in range(args.experiments):
            emulator.create(experiment(f"exp-{index:02d}", args.trials, args.concurrency))
        total = args.experiments * args.trials
        deadline = time.monotonic() + 1800
        checked = 0.0
        while time.monotonic() < deadline:
            simulation.step()
            if time.monotonic() - checked > 0.5:
                checked = time.monotonic()
                phases = [(e.get("status") or {}).get("phase") for e in emulator.list("detectionexperiments", NAMESPACE)]
                if all(p in ("Succeeded", "Failed") for p in phases):
                    break
            time.sleep(0.01)
        wall = time.perf_counter() - started
        cpu_after, peak = proc_figures(operator.pid)
        own = time.process_time() - own_before
        watcher_stop.set()
        passes = reconcile_figures(httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text)
        operator.terminate()
        operator.wait(60)
        requests = [r for r in emulator.requests("operator")]
        phases = [((e.get("status") or {}).get("phase")) for e in emulator.list("detectionexperiments", NAMESPACE)]
        trials = emulator.list("detectiontrials", NAMESPACE)

    latencies = sorted(simulation.latencies)
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    writes = sum(r.method != "GET" for r in requests)
    at_once, length = args.experiments * args.concurrency, args.epochs * args.epoch_s
    print(f"{args.experiments} experiments x {args.trials} trials, {args.concurrency} at once each, {args.epochs} "
          f"epochs of {args.epoch_s}s +-{args.jitter:.0%}; operator: one `autodetect operator` process; "
          f"{os.cpu_count()} CPUs shared with the emulator and the simulation")
    print(f"offered: {at_once} trials at once of about {length:g}s each, some {at_once / length:.0f} trial ends a "
          f"second; sustained: {len(trials) / wall:.1f} trials a second")
    print(f"experiments: {phases.count('Succeeded')} succeeded, {phases.count('Failed')} failed; trials made: "
          f"{len(trials)} of {total}; wall {wall:.1f}s")
    print(f"operator CPU: {cpu_after - cpu_before:.1f} s ({(cpu_after - cpu_before) / len(trials) * 1000:.0f} ms a "
          f"trial); peak RSS {peak:.0f} MiB")
    print(f"this process (the emulator, the simulated kubelet and trainers): {own:.1f} CPU s")
    print(f"trial end -> next Job: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms over {len(latencies)} "
          f"(target p99 < 1000 ms: {'met' if p99 < 1 else 'NOT met'})")
    print(f"reconcile passes of experiments: {passes}")
    print(f"API requests by the operator: {len(requests)} ({len(requests) / len(trials):.1f} a trial, "
          f"{writes / len(trials):.1f} of them writes)")
    return 0 if p99 < 1 and len(trials) == total else 1


if __name__ == "__main__":
    sys.exit(main())
