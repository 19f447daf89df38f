"""The quickstart example stays runnable: a valid experiment over the data set that the README's
`autodetect dataset synth --out runs/quickstart-data` writes. (A whole run takes minutes: see its README.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from autodetect.api import DetectionExperiment, load_resource
from autodetect.cli import build_parser
from autodetect.data.synth import ANNOTATIONS
from autodetect.tuning.engine import StartTrial, reconcile

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "quickstart" / "experiment.yaml"


def test_the_quickstart_is_a_valid_experiment_over_the_readme_data():
    experiment = load_resource(EXAMPLE, DetectionExperiment)
    readme = (ROOT / "README.md").read_text()
    assert "autodetect dataset synth --out runs/quickstart-data" in readme
    assert f"autodetect run {EXAMPLE.relative_to(ROOT)}" in readme
    assert experiment.spec.dataset.training.uri == f"file://./runs/quickstart-data/{ANNOTATIONS}"
    assert experiment.spec.earlyTermination.policy != "none"
    limits = experiment.spec.limits
    assert limits.maxConcurrentTrials == 2 and 6 <= limits.maxTrials <= 8


def test_its_first_trials_train_from_scratch_two_at_once():
    from datetime import datetime, timezone

    experiment = load_resource(EXAMPLE, DetectionExperiment)
    starts = [a for a in reconcile(experiment, [], datetime.now(timezone.utc)).actions if isinstance(a, StartTrial)]
    assert len(starts) == 2 and all(start.parameters["pretrained"] is False for start in starts)


def test_run_is_a_command():
    args = build_parser().parse_args(["run", str(EXAMPLE), "--parallel", "1", "--runs-dir", "elsewhere"])
    assert args.parallel == 1 and args.runs_dir == Path("elsewhere") and args.experiment == EXAMPLE
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", str(EXAMPLE), "--parallel", "0"])
