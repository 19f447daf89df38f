"""The embedded default: the tuning engine decides, this runner carries its decisions out with each trial
as a local trainer process. Every pass reads the trials back from disk (autodetect.local.state), so an
interrupted run resumes where it stopped and nothing is trained twice."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Iterator

from autodetect.api import DetectionExperiment, DetectionTrial, load_resource
from autodetect.api.v1alpha1 import TrialSpec
from autodetect.local.display import Display, first_line, make_display
from autodetect.local.plots import plot_metrics
from autodetect.local.state import TERMINAL_PHASES, RunState
from autodetect.tuning.engine import Fail, Finish, RetryTrial, StartTrial, StopTrial, reconcile

POLL_S = 0.5  # longest wait between passes when no trainer exits
STOP_GRACE_S = 60.0  # a trainer asked to stop gets this long to finish its epoch before it is terminated
INTERRUPT_GRACE_S = 15.0  # after Ctrl-C, how long trainers get to leave a checkpoint before they are killed
EXPERIMENT_LABEL = "autodetect.dev/experiment"


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class TrainerProcess:
    name: str
    popen: subprocess.Popen
    log: IO[bytes]
    pidfd: int | None

    def close(self) -> None:
        self.log.close()
        if self.pidfd is not None:
            os.close(self.pidfd)


class Runner:
    def __init__(self, experiment: DetectionExperiment, state: RunState, display: Display,
                 parallel: int | None = None):
        limits = experiment.spec.limits
        self.concurrency = min(limits.maxConcurrentTrials, parallel or limits.maxConcurrentTrials, cpu_count())
        # The engine alone decides what starts; it is told the bound this machine sets.
        bounded = limits.model_copy(update={"maxConcurrentTrials": self.concurrency})
        self.experiment = experiment.model_copy(update={"spec": experiment.spec.model_copy(update={"limits": bounded})})
        self.state, self.display = state, display
        self.threads = max(1, cpu_count() // self.concurrency)
        self.processes: dict[str, TrainerProcess] = {}
        self.waiting: list[str] = []  # trials found running on resume, beyond this machine's bound

    # --- the loop ------------------------------------------------------------------------

    def run(self) -> int:
        """Run the experiment to its end: 0 when it succeeded, 1 when it failed, 130 when interrupted."""
        self.display.event(f"{self.experiment.metadata.name}: up to {self.concurrency} trial(s) at once, "
                           f"{self.threads} CPU thread(s) each; state in {self.state.root}")
        try:
            self._resume()
            return self._loop()
        except KeyboardInterrupt:
            self._interrupt()
            return 130
        finally:
            self.display.close()
            for process in self.processes.values():  # only after an unexpected error
                process.popen.kill()
                process.close()

    def _loop(self) -> int:
        while True:
            self._reap()
            while self.waiting and len(self.processes) < self.concurrency:
                self._spawn(self.waiting.pop(0), resume=True)
            trials = self.state.read_trials()
            decision = reconcile(self.experiment, trials, now())
            if decision.status != self.experiment.status:
                self.state.write_status(decision.status)
            self.experiment = self.experiment.model_copy(update={"status": decision.status})
            self.display.update(decision.status, trials)
            end = None
            for action in decision.actions:
                busy = len(self.processes) >= self.concurrency  # e.g. a finished trainer still exiting
                if isinstance(action, (Finish, Fail)):
                    end = action
                elif isinstance(action, (StartTrial, RetryTrial)) and busy:
                    continue  # the engine decides it again on a later pass, once a process has exited
                elif isinstance(action, StartTrial):
                    self._start(action.name, action.parameters)
                elif isinstance(action, StopTrial):
                    self._stop(action.name, action.reason)
                elif isinstance(action, RetryTrial):
                    self._retry(action.name, action.attempt)
            if end is None and decision.status.phase in ("Succeeded", "Failed"):  # ended in an earlier run
                best = decision.status.bestTrial
                end = Finish(best.name, best.metric) if decision.status.phase == "Succeeded" and best \
                    else Fail(decision.status.message)
            if end is not None:
                if not self.processes and not self.waiting:
                    return self._end(end)
                self.waiting.clear()
                for name in list(self.processes):
                    self._stop(name, "the experiment ended" if isinstance(end, Finish) else f"the experiment failed: {end.reason}")
            self._terminate_overdue()
            self._wait()

    def _wait(self) -> None:
        """Until a trainer exits, or POLL_S passes (trainers report through files)."""
        pidfds = [p.pidfd for p in self.processes.values() if p.pidfd is not None]
        if pidfds:
            select.select(pidfds, [], [], POLL_S)
        else:
            time.sleep(POLL_S)

    # --- carrying out decisions --------------------------------------------------------

    def _start(self, name: str, parameters: dict) -> None:
        if (self.state.trial_dir(name) / "trial.yaml").exists():
            return  # the engine may re-issue a start it already made; never train twice
        spec = self.experiment.spec
        trial = DetectionTrial(
            metadata={"name": name, "labels": {EXPERIMENT_LABEL: self.experiment.metadata.name}},
            spec=TrialSpec(experiment=self.experiment.metadata.name, hyperparameters=parameters,
                           dataset=spec.dataset, primaryMetric=spec.primaryMetric, artifacts=spec.artifacts),
        )
        self.state.write_trial(trial)  # on disk (Pending) before its process exists
        self.display.event(f"{name} started", parameters)
        self._spawn(name, resume=False)

    def _stop(self, name: str, reason: str) -> None:
        trial = self.state.read_trial(name)
        if trial.status.phase in TERMINAL_PHASES:
            return
        if self.state.request_stop(name, reason):
            self.state.write_trial(trial.model_copy(update={"spec": trial.spec.model_copy(update={"stop": True})}),
                                   with_status=False)
            self.display.event(f"{name} stopping: {reason}")
        if name not in self.processes:  # nothing runs it: it stops here and now
            if name in self.waiting:
                self.waiting.remove(name)
            self._settle(name, exit_code=None)

    def _retry(self, name: str, attempt: int) -> None:
        """The same trial again, attempt+1, from its last checkpoint: its evaluations so far are kept."""
        trial = self.state.read_trial(name)
        failure = first_line(trial.status.message)
        status = trial.status.model_copy(update={"phase": "Pending", "completionTime": None, "finalMetric": None,
                                                 "message": f"attempt {attempt}; attempt {attempt - 1} failed: {failure}"})
        self.state.write_trial(trial.model_copy(update={"spec": trial.spec.model_copy(update={"attempt": attempt}),
                                                        "status": status}))
        self.display.event(f"{name} retried (attempt {attempt}) after: {failure}")
        self._spawn(name, resume=True)

    def _spawn(self, name: str, resume: bool) -> None:
        folder = self.state.trial_dir(name)
        argv = self.trainer_argv(folder, resume)
        env = dict(os.environ, YOLO_OFFLINE="1", PYTHONUNBUFFERED="1", MPLBACKEND="Agg",
                   OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads))
        log = (folder / "stdout.log").open("ab")
        # Its own session: a terminal's Ctrl-C reaches the runner only, which then stops each trainer once.
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                 start_new_session=True)
        pidfd = os.pidfd_open(popen.pid) if hasattr(os, "pidfd_open") else None
        self.processes[name] = TrainerProcess(name, popen, log, pidfd)
        self.state.write_pid(name, popen.pid)

    def trainer_argv(self, folder: Path, resume: bool) -> list[str]:
        return [sys.executable, "-m", "autodetect.cli", "train", "--trial", str(folder / "trial.yaml"),
                "--workdir", str(folder)] + (["--resume"] if resume else [])

    def _reap(self) -> None:
        for name, process in list(self.processes.items()):
            code = process.popen.poll()
            if code is not None:
                process.close()
                del self.processes[name]
                self._settle(name, code)

    def _settle(self, name: str, exit_code: int | None, interrupted: bool = False) -> None:
        """Give a trial whose trainer is gone (or never ran) the status it ended in."""
        self.state.write_pid(name, None)
        status = self.state.read_trial(name).status
        reason = self.state.stop_reason(name)
        if status.phase == "Pruned" and reason and not status.message.startswith(reason):
            status.message = f"{reason}; {status.message}" if status.message else reason
        elif status.phase in ("Succeeded", "Pruned") or (status.phase == "Failed" and not interrupted):
            pass
        elif interrupted:  # also a Failed that our SIGINT caused: it is not the trial's failure
            done = status.epochs[-1].epoch if status.epochs else 0
            status.phase, status.message = "Pending", f"interrupted after epoch {done}; `autodetect run` again resumes it"
        else:
            status.completionTime = now()
            if reason:
                status.phase = "Pruned"
                if exit_code is None:
                    status.message = reason
                elif exit_code < 0:
                    status.message = f"{reason} (terminated: it did not stop within {STOP_GRACE_S:.0f}s)"
                else:
                    status.message = f"{reason} (the trainer then exited with code {exit_code})"
            else:
                tail = self.state.log_tail(name).splitlines()
                status.phase = "Failed"  # the last line first (a traceback's error), then the lines before it
                status.message = "\n".join([f"the trainer exited with code {exit_code}" + (f": {tail[-1]}" if tail else ""),
                                            *tail[:-1]])
        self.state.write_trial_status(name, status)
        if status.phase in TERMINAL_PHASES:
            self.display.ended(self.state.read_trial(name))

    def _terminate_overdue(self) -> None:
        for name, process in self.processes.items():
            asked = self.state.stop_requested_at(name)
            overdue = time.time() - asked - STOP_GRACE_S if asked is not None else -1.0
            if overdue > 10:
                process.popen.kill()
            elif overdue > 0:
                process.popen.terminate()

    # --- resume, interrupt, end ----------------------------------------------------------

    def _resume(self) -> None:
        """Trials a previous run left running: kept if they ended, else restarted from their checkpoint."""
        for trial in self.state.read_trials():
            name = trial.metadata.name
            if trial.status.phase in TERMINAL_PHASES:
                continue
            self._end_orphan(name)
            if self.state.stop_reason(name):
                self._settle(name, exit_code=None)
            elif len(self.processes) < self.concurrency:
                self.display.event(f"{name} resumed from its checkpoint")
                self._spawn(name, resume=True)
            else:
                self.waiting.append(name)

    def _end_orphan(self, name: str) -> None:
        """A trainer that outlived a killed runner would train beside its restart: end it first."""
        pid = self.state.read_pid(name)
        if pid is None:
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return
        if str(self.state.trial_dir(name)).encode() not in cmdline:
            return  # the pid now belongs to another process
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)

    def _interrupt(self) -> None:
        if self.processes:
            self.display.event(f"interrupted: stopping {len(self.processes)} trial(s), they resume on the next run")
        for process in self.processes.values():
            process.popen.send_signal(signal.SIGINT)
        deadline = time.monotonic() + INTERRUPT_GRACE_S
        try:
            for process in self.processes.values():
                try:
                    process.popen.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.popen.kill()
        except KeyboardInterrupt:  # a second Ctrl-C: no more waiting
            for process in self.processes.values():
                process.popen.kill()
        for name, process in list(self.processes.items()):
            process.popen.wait()
            process.close()
            del self.processes[name]
            self._settle(name, process.popen.returncode, interrupted=True)
        status = self.experiment.status.model_copy(update={"message": "interrupted; `autodetect run` again resumes it"})
        self.state.write_status(status)
        self.display.close()

    def _end(self, end: Finish | Fail) -> int:
        trials = self.state.read_trials()
        status = self.experiment.status
        model = None
        if isinstance(end, Finish):
            best = next(t for t in trials if t.metadata.name == end.trial)
            model = self.state.register_model(self.experiment, best)
            status = status.model_copy(update={"model": model.metadata.name})
            self.state.write_status(status)
        plot_metrics(self.experiment, trials, self.state.plot_file)
        self.display.close()
        self.display.summary(status, trials, model, self.state.model_dir, self.state.plot_file)
        return 0 if isinstance(end, Finish) else 1


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops a run as Ctrl-C does (cleanly, resumable)."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_experiment(path: str | Path, runs_dir: str | Path = "runs", parallel: int | None = None) -> int:
    """`autodetect run`: validate the experiment, then run (or resume) it under runs_dir/<name>/."""
    experiment = load_resource(path, DetectionExperiment)
    state = RunState(Path(runs_dir), experiment.metadata.name)
    experiment = state.open(experiment)
    runner = Runner(experiment, state, make_display(experiment), parallel)
    with sigterm_as_interrupt():
        return runner.run()
