"""metrics.png: every trial's primary metric by epoch; pruned trials dashed, with an x where they stopped."""

from __future__ import annotations

from pathlib import Path

from autodetect.api import DetectionExperiment, DetectionTrial


def metric_curve(trial: DetectionTrial, metric: str) -> list[tuple[int, float]]:
    return [(e.epoch, float(e.metrics[metric])) for e in trial.status.epochs
            if isinstance(e.metrics.get(metric), (int, float))]


def plot_metrics(experiment: DetectionExperiment, trials: list[DetectionTrial], path: Path) -> bool:
    """Write the plot; False (and no file) when no trial has reported the metric yet."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    metric = experiment.spec.primaryMetric
    best = experiment.status.bestTrial.name if experiment.status.bestTrial else None
    curves = [(trial, metric_curve(trial, metric)) for trial in trials]
    curves = [(trial, curve) for trial, curve in curves if curve]
    if not curves:
        return False
    figure = Figure(figsize=(9, 5.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for trial, curve in curves:
        epochs, values = zip(*curve)
        pruned = trial.status.phase == "Pruned"
        name = trial.metadata.name
        (line,) = axes.plot(epochs, values, linestyle="--" if pruned else "-", marker="o", markersize=3,
                            linewidth=2.8 if name == best else 1.4,
                            label=f"{name} ({trial.status.phase.lower()}{', best' if name == best else ''})")
        if pruned:
            axes.plot(epochs[-1], values[-1], marker="x", markersize=11, markeredgewidth=2.5, color=line.get_color())
    handles, _ = axes.get_legend_handles_labels()
    if any(trial.status.phase == "Pruned" for trial, _ in curves):
        handles.append(Line2D([], [], color="black", linestyle="--", marker="x", markersize=9, label="pruned here"))
    axes.legend(handles=handles, fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    axes.set_xlabel("epoch")
    axes.set_ylabel(metric)
    axes.set_title(f"{experiment.metadata.name}: {metric} by epoch")
    axes.grid(alpha=0.3)
    axes.xaxis.get_major_locator().set_params(integer=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    return True
