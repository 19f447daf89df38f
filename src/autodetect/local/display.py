"""What a local run shows: a live table of trials in a terminal, plain log lines otherwise, and a summary."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from autodetect.api import DetectionExperiment, DetectionModel, DetectionTrial
from autodetect.api.v1alpha1 import ExperimentStatus
from autodetect.errors import SpecError
from autodetect.models.hyperparameters import PARAMS, family_of
from autodetect.tuning.engine import trial_metric
from autodetect.tuning.space import parse_search_space, searched_keys
from autodetect.tuning.trials import first_line

SHORT_NAMES = {"learning_rate": "lr", "image_size": "img", "optimizer": "opt", "training_batch_size": "batch",
               "number_of_epochs": "epochs", "weight_decay": "wd", "momentum": "mom",
               "learning_rate_scheduler": "sched", "min_size": "min", "max_size": "max"}
PHASE_STYLES = {"Pending": "dim", "Running": "cyan", "Succeeded": "green", "Pruned": "magenta", "Failed": "red"}


def format_value(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def format_parameters(parameters: dict[str, Any], keys: set[str] | None = None) -> str:
    shown = {k: v for k, v in parameters.items() if (keys is None or k in keys) and k not in ("model_name", "model_size")}
    return " ".join(f"{SHORT_NAMES.get(k, k)}={format_value(v)}" for k, v in sorted(shown.items()))


def model_label(parameters: dict[str, Any]) -> str:
    return " ".join(str(parameters[k]) for k in ("model_name", "model_size") if k in parameters)


def planned_epochs(parameters: dict[str, Any]) -> int | None:
    if "number_of_epochs" in parameters:
        return int(parameters["number_of_epochs"])
    try:
        return PARAMS["number_of_epochs"].default_for(family_of(parameters.get("model_name", "")))
    except SpecError:
        return None


def trials_table(experiment: DetectionExperiment, status: ExperimentStatus, trials: list[DetectionTrial]) -> Table:
    spec, counts = experiment.spec, status.trials
    best = status.bestTrial
    title = (f"{experiment.metadata.name}: {counts.succeeded + counts.pruned + counts.failed}/{spec.limits.maxTrials} "
             f"trials done · {counts.running} running · {counts.pruned} pruned · {counts.failed} failed")
    if best is not None:
        title += f" · best {best.name} {spec.primaryMetric}={best.metric:.4f}"
    table = Table(title=title, title_justify="left")
    for column in ("trial", "model", "parameters", "epoch", f"best {spec.primaryMetric}", "state"):
        table.add_column(column, no_wrap=column not in ("parameters", "state"), overflow="fold")
    keys = searched_keys(parse_search_space(experiment.spec.searchSpace))
    for trial in trials:
        parameters = trial.spec.hyperparameters
        done = trial.status.epochs[-1].epoch if trial.status.epochs else 0
        total = planned_epochs(parameters)
        metric = trial_metric(trial, spec.primaryMetric, spec.objective)
        phase = trial.status.phase
        state = Text(phase, style=PHASE_STYLES.get(phase, ""))
        if phase in ("Pruned", "Failed") and trial.status.message:
            state.append(f": {first_line(trial.status.message)}")
        is_best = best is not None and best.name == trial.metadata.name
        table.add_row(("★ " if is_best else "") + trial.metadata.name, model_label(parameters),
                      format_parameters(parameters, keys), f"{done}/{total}" if total else str(done),
                      "-" if metric is None else f"{metric:.4f}", state, style="bold" if is_best else None)
    return table


class Display:
    """Shows a run's progress; the runner calls update() on every pass and event() for what it does."""

    def __init__(self, experiment: DetectionExperiment, stream: TextIO | None = None):
        self.experiment = experiment
        self.keys = searched_keys(parse_search_space(experiment.spec.searchSpace))
        stream = stream or sys.stdout
        # A log file or pipe has no width: lines are not wrapped, tables get room for every column.
        self.console = Console(file=stream, soft_wrap=not stream.isatty(), width=None if stream.isatty() else 200)

    def event(self, message: str, parameters: dict[str, Any] | None = None) -> None:
        if parameters is not None:
            message += f": {model_label(parameters)} {format_parameters(parameters, self.keys)}"
        self.console.print(f"{datetime.now():%H:%M:%S} {message}", highlight=False, markup=False)

    def ended(self, trial: DetectionTrial) -> None:
        metric, phase = self.experiment.spec.primaryMetric, trial.status.phase
        best = trial_metric(trial, metric, self.experiment.spec.objective)
        detail = f" (best {metric}={best:.4f})" if best is not None else ""
        message = f": {first_line(trial.status.message)}" if phase != "Succeeded" and trial.status.message else ""
        self.event(f"{trial.metadata.name} {phase}{detail}{message}")

    def update(self, status: ExperimentStatus, trials: list[DetectionTrial]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def summary(self, status: ExperimentStatus, trials: list[DetectionTrial], model: DetectionModel | None,
                model_dir: Path, plot: Path) -> None:
        self.console.print(trials_table(self.experiment, status, trials))
        if model is not None:
            self.console.print(f"best model: {model.metadata.name} ({model.spec.lineage.trial}, "
                               f"{self.experiment.spec.primaryMetric}={status.bestTrial.metric:.4f}) in {model_dir}",
                               highlight=False, markup=False)
        else:
            self.console.print(f"experiment {status.phase}: {status.message}", highlight=False, markup=False)
        if plot.exists():
            self.console.print(f"metrics by epoch: {plot}", highlight=False, markup=False)


class LiveTable(Display):
    """A terminal: the table redrawn in place, events printed above it."""

    def __init__(self, experiment: DetectionExperiment, stream: TextIO | None = None):
        super().__init__(experiment, stream)
        self.live: Live | None = None

    def update(self, status: ExperimentStatus, trials: list[DetectionTrial]) -> None:
        table = trials_table(self.experiment, status, trials)
        if self.live is None:
            self.live = Live(table, console=self.console, refresh_per_second=4, transient=True)
            self.live.start()
        else:
            self.live.update(table)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


class PlainLog(Display):
    """Not a terminal (a pipe, a CI log): one line per evaluation, beside the runner's events."""

    def __init__(self, experiment: DetectionExperiment, stream: TextIO | None = None):
        super().__init__(experiment, stream)
        self.seen: dict[str, int] = {}  # trial -> the last epoch shown

    def update(self, status: ExperimentStatus, trials: list[DetectionTrial]) -> None:
        metric = self.experiment.spec.primaryMetric
        for trial in trials:
            name = trial.metadata.name
            done = trial.status.epochs[-1].epoch if trial.status.epochs else 0
            if done > self.seen.get(name, 0):
                value = trial.status.epochs[-1].metrics.get(metric)
                shown = f"{metric}={value:.4f}" if isinstance(value, (int, float)) else f"{metric}=-"
                total = planned_epochs(trial.spec.hyperparameters)
                self.event(f"{name} epoch {done}{f'/{total}' if total else ''} {shown}")
            self.seen[name] = done


def make_display(experiment: DetectionExperiment, stream: TextIO | None = None) -> Display:
    stream = stream or sys.stdout
    return LiveTable(experiment, stream) if stream.isatty() else PlainLog(experiment, stream)
