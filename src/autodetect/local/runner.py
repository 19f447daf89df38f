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

from autodetect.api import DetectionExperiment, load_resource
from autodetect.local.display import Display, make_display
from autodetect.local.plots import plot_metrics
from autodetect.local.state import RunState
from autodetect.tuning.engine import Fail, Finish, RetryTrial, StartTrial, StopTrial, reconcile
from autodetect.tuning.trials import MISSING, Kill, Launch, Run, Settle, new_trial, retried, step, stopped
from autodetect.vocabulary import ENDED_PHASES, INTERRUPTED

POLL_S = 0.5  # longest wait between passes when no trainer exits
INTERRUPT_GRACE_S = 15.0  # after Ctrl-C, how long trainers get to leave a checkpoint before they are killed


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def gpu_count() -> int:
    """The GPUs this process sees (CUDA_VISIBLE_DEVICES included); 0 without CUDA."""
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no working CUDA is no GPU
        return 0


@dataclass(frozen=True)
class Placement:
    """How many trials run at once and where: `slots` holds one GPU index a concurrent trial (a GPU
    appears trials_per_gpu times), empty on a CPU-only machine, where each trial gets `threads` threads."""
    concurrency: int
    threads: int
    slots: tuple[int, ...] = ()


def place_trials(max_trials: int, parallel: int | None, cpus: int, gpus: int, trials_per_gpu: int = 1) -> Placement:
    """One trial a GPU (K with trials_per_gpu), bounded by the GPUs; CPU-only: bounded by the CPUs, which
    the trials share evenly. With GPUs, the CPUs are shared evenly too (for data loading)."""
    wanted = min(max_trials, parallel or max_trials)
    if gpus:
        concurrency = max(1, min(wanted, gpus * trials_per_gpu))
        slots = tuple(gpu for _ in range(trials_per_gpu) for gpu in range(gpus))[:concurrency]
        return Placement(concurrency, max(1, cpus // concurrency), slots)
    concurrency = max(1, min(wanted, cpus))
    return Placement(concurrency, max(1, cpus // concurrency))


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
    """Carries out the engine's decisions (tuning.engine.reconcile) and each trial's step (tuning.trials.step)
    with trainer processes; it decides nothing about trials itself."""

    def __init__(self, experiment: DetectionExperiment, state: RunState, display: Display,
                 parallel: int | None = None, trials_per_gpu: int = 1, gpus: int | None = None):
        limits = experiment.spec.limits
        placement = place_trials(limits.maxConcurrentTrials, parallel, cpu_count(),
                                 gpu_count() if gpus is None else gpus, trials_per_gpu)
        self.concurrency, self.threads = placement.concurrency, placement.threads
        self.free_gpus = list(placement.slots)  # a trial takes one when it starts, gives it back when it exits
        self.gpu_of: dict[str, int] = {}
        # The engine alone decides what starts; it is told the bound this machine sets.
        bounded = limits.model_copy(update={"maxConcurrentTrials": self.concurrency})
        self.experiment = experiment.model_copy(update={"spec": experiment.spec.model_copy(update={"limits": bounded})})
        self.state, self.display = state, display
        self.processes: dict[str, TrainerProcess] = {}
        self.exited: dict[str, Run] = {}  # trainers that exited since the last pass, as the steps will see them

    # --- the loop ------------------------------------------------------------------------

    def run(self) -> int:
        """Run the experiment to its end: 0 when it succeeded, 1 when it failed, 130 when interrupted."""
        where = (f"one GPU slot each ({len(set(self.free_gpus))} GPU(s), "
                 f"{self.free_gpus.count(self.free_gpus[0])} trial(s) a GPU), " if self.free_gpus else "")
        self.display.event(f"{self.experiment.metadata.name}: up to {self.concurrency} trial(s) at once, "
                           f"{where}{self.threads} CPU thread(s) each; state in {self.state.root}")
        try:
            for trial in self.state.read_trials():
                self._end_orphan(trial.metadata.name)
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
            self._step_trials()
            trials = self.state.read_trials()
            decision = reconcile(self.experiment, trials, now())
            if decision.status != self.experiment.status:
                self.state.write_status(decision.status)
            self.experiment = self.experiment.model_copy(update={"status": decision.status})
            for event in decision.events:
                self.display.event(event.message)
            self.display.update(decision.status, trials)
            end = None
            for action in decision.actions:
                if isinstance(action, (Finish, Fail)):
                    end = action
                elif isinstance(action, StartTrial):
                    self._start(action)
                elif isinstance(action, StopTrial):
                    self._stop(action)
                elif isinstance(action, RetryTrial):
                    self.state.write_trial(retried(self.state.read_trial(action.name), action.attempt, now()))
            if end is not None and not self.processes:
                return self._end(end)
            if decision.actions and end is None:
                self._step_trials()  # what was just started or retried launches now, not a pass later
            self._wait()

    def _wait(self) -> None:
        """Until a trainer exits, or POLL_S passes (trainers report through files)."""
        pidfds = [p.pidfd for p in self.processes.values() if p.pidfd is not None]
        if pidfds:
            select.select(pidfds, [], [], POLL_S)
        else:
            time.sleep(POLL_S)

    # --- carrying out decisions --------------------------------------------------------

    def _start(self, action: StartTrial) -> None:
        if (self.state.trial_dir(action.name) / "trial.yaml").exists():
            return  # the engine may re-issue a start it already made; never train twice
        self.state.write_trial(new_trial(self.experiment, action.name, action.parameters))  # on disk (Pending) first

    def _stop(self, action: StopTrial) -> None:
        trial = self.state.read_trial(action.name)
        asked = stopped(trial, action.reason, now())
        if asked is not trial:
            self.state.request_stop(action.name, action.reason)  # the trainer reads STOP between epochs
            self.state.write_trial(asked, with_status=False)

    def _step_trials(self) -> None:
        """Each trial's step, given its trainer process: launch, kill, settle, or nothing."""
        for trial in self.state.read_trials():
            name = trial.metadata.name
            run = self.exited.pop(name, None) or (Run("running") if name in self.processes else MISSING)
            outcome = step(trial, run, now())
            if isinstance(outcome, Launch) and len(self.processes) < self.concurrency:
                fresh = trial.spec.attempt == 0 and trial.status.startTime is None
                if not fresh:
                    self.display.event(f"{name} resumed from its checkpoint")
                self._spawn(name, resume=not fresh)
            elif isinstance(outcome, Kill):
                self.display.event(outcome.event.message)
                self.processes[name].popen.kill()
            elif isinstance(outcome, Settle):
                self.state.write_trial_status(name, outcome.status)
                if outcome.event is not None:
                    self.display.event(outcome.event.message)

    def _spawn(self, name: str, resume: bool) -> None:
        folder = self.state.trial_dir(name)
        argv = self.trainer_argv(folder, resume)
        env = dict(os.environ, YOLO_OFFLINE="1", PYTHONUNBUFFERED="1", MPLBACKEND="Agg",
                   OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads))
        if self.free_gpus:
            self.gpu_of[name] = self.free_gpus.pop(0)
            env["CUDA_VISIBLE_DEVICES"] = str(self.gpu_of[name])
        log = (folder / "stdout.log").open("ab")
        # Its own session: a terminal's Ctrl-C reaches the runner only, which then stops each trainer once.
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                 start_new_session=True, preexec_fn=die_with_parent(os.getpid()))
        pidfd = os.pidfd_open(popen.pid) if hasattr(os, "pidfd_open") else None
        self.processes[name] = TrainerProcess(name, popen, log, pidfd)
        self.state.write_pid(name, popen.pid)

    def trainer_argv(self, folder: Path, resume: bool) -> list[str]:
        return [sys.executable, "-m", "autodetect.cli", "train", "--trial", str(folder / "trial.yaml"),
                "--workdir", str(folder)] + (["--resume"] if resume else [])

    def _reap(self, reason: str = "") -> None:
        for name, process in list(self.processes.items()):
            code = process.popen.poll()
            if code is not None:
                process.close()
                del self.processes[name]
                if name in self.gpu_of:
                    self.free_gpus.append(self.gpu_of.pop(name))
                self.state.write_pid(name, None)
                self.exited[name] = Run("exited", now(), exit_code=code, reason=reason,
                                        message=self.state.log_tail(name))

    # --- resume, interrupt, end ----------------------------------------------------------

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
        for process in self.processes.values():
            process.popen.wait()
        self._reap(reason=INTERRUPTED)
        for name, run in list(self.exited.items()):
            outcome = step(self.state.read_trial(name), run, now())
            if isinstance(outcome, Settle):
                self.state.write_trial_status(name, outcome.status)
        self.exited.clear()
        status = self.experiment.status.model_copy(update={"message": "interrupted; `autodetect run` again resumes it"})
        self.state.write_status(status)
        self.display.close()

    def _end(self, end: Finish | Fail) -> int:
        trials = self.state.read_trials()
        status = self.experiment.status
        model = None
        if isinstance(end, Finish):
            model = self.state.register_model(self.experiment, next(t for t in trials if t.metadata.name == end.trial))
        plot_metrics(self.experiment, trials, self.state.plot_file)
        self.display.close()
        self.display.summary(status, trials, model, self.state.model_dir, self.state.plot_file)
        return 0 if isinstance(end, Finish) else 1


PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int):
    """A preexec_fn: the trainer gets SIGTERM when the runner dies, even by SIGKILL (Linux prctl), so no
    trainer trains on, orphaned, beside the runner's restart."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the runner died before the prctl
            os._exit(1)

    return preexec


def check_dataset(experiment: DetectionExperiment) -> None:
    """Every trial reads the same data: a bad file or line stops the run before any trial starts (the error
    names the file and line), rather than failing each trial in turn."""
    from autodetect.data.split import load_datasets

    dataset = experiment.spec.dataset
    load_datasets(dataset.training.uri, dataset.validation.uri if dataset.validation else None, dataset.validationSplit,
                  root=dataset.root, prefix=dataset.imageUrlPrefix)


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


def run_experiment(path: str | Path, runs_dir: str | Path = "runs", parallel: int | None = None,
                   trials_per_gpu: int = 1) -> int:
    """`autodetect run`: validate the experiment, then run (or resume) it under runs_dir/<name>/."""
    experiment = load_resource(path, DetectionExperiment)
    state = RunState(Path(runs_dir), experiment.metadata.name)
    with state.lock():
        experiment = state.open(experiment)
        if experiment.status.phase not in ENDED_PHASES:
            check_dataset(experiment)
        runner = Runner(experiment, state, make_display(experiment), parallel, trials_per_gpu)
        with sigterm_as_interrupt():
            return runner.run()
