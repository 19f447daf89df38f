"""The local runner against what happens to real machines (issue 11, items 6-8): a second run of one
experiment, damaged state files, a runner killed by SIGKILL. Real processes and real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from autodetect.api.v1alpha1 import TrialStatus
from autodetect.errors import AutodetectError
from autodetect.local.state import RunState, StateError

TRIAL = {"apiVersion": "autodetect.dev/v1alpha1", "kind": "DetectionTrial", "metadata": {"name": "e-000"},
         "spec": {"experiment": "e", "hyperparameters": {"model_name": "yolov8"},
                  "dataset": {"training": {"uri": "/nowhere/train.jsonl"}},
                  "primaryMetric": "mean_average_precision"}}


def wait_for(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# --- 6: one run at a time -------------------------------------------------------------------

HOLD = """
import sys, time
from autodetect.local.state import RunState
with RunState(sys.argv[1], "e").lock():
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_second_run_refuses_at_once_naming_the_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        with pytest.raises(AutodetectError, match=f"pid {holder.pid}"):
            with RunState(tmp_path, "e").lock():
                pass
        assert time.monotonic() - started < 1
    finally:
        holder.kill()
        holder.wait()
    with RunState(tmp_path, "e").lock():  # the holder died (SIGKILL): its stale lock is taken over
        assert (tmp_path / "e" / "lock").read_text().strip() == str(os.getpid())


def test_the_cli_refuses_a_second_run(tmp_path):
    spec = tmp_path / "e.yaml"
    spec.write_text(yaml.safe_dump({"apiVersion": "autodetect.dev/v1alpha1", "kind": "DetectionExperiment",
                                    "metadata": {"name": "e"}, "spec": {
                                        "dataset": {"training": {"uri": str(tmp_path / "none.jsonl")}},
                                        "searchSpace": [{"model_name": {"type": "choice", "values": ["yolov8"]}}]}}))
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "runs")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        done = subprocess.run([sys.executable, "-m", "autodetect.cli", "run", str(spec), "--runs-dir",
                               str(tmp_path / "runs")], capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode != 0 and f"pid {holder.pid}" in done.stderr + done.stdout
    finally:
        holder.kill()
        holder.wait()


# --- 7: damaged state -----------------------------------------------------------------------

def trial_folder(tmp_path: Path, **spec) -> tuple[RunState, Path]:
    state = RunState(tmp_path / "runs", "e")
    folder = state.trial_dir("e-000")
    folder.mkdir(parents=True)
    obj = json.loads(json.dumps(TRIAL))
    obj["spec"].update(spec)
    (folder / "trial.yaml").write_text(yaml.safe_dump(obj))
    return state, folder


def test_a_truncated_status_names_the_file_and_the_repair(tmp_path):
    state, folder = trial_folder(tmp_path)
    (folder / "status.json").write_text('{"phase": "Succ')
    with pytest.raises(StateError, match=str(folder / "status.json")) as caught:
        state.read_trial("e-000")
    assert "delete the folder" in str(caught.value)
    state.status_file.write_text("{")
    with pytest.raises(StateError, match=str(state.status_file)):
        state.open(_experiment(tmp_path, state))


def _experiment(tmp_path, state):
    from autodetect.api import DetectionExperiment, parse_resource

    exp = parse_resource({"apiVersion": "autodetect.dev/v1alpha1", "kind": "DetectionExperiment",
                          "metadata": {"name": "e"}, "spec": {"dataset": {"training": {"uri": "/x.jsonl"}},
                          "searchSpace": [{"model_name": {"type": "choice", "values": ["yolov8"]}}]}},
                         DetectionExperiment)
    from autodetect.local.state import dump_yaml

    state.experiment_file.write_text(dump_yaml(exp, exclude={"status"}))
    return exp


def test_a_lost_status_is_rebuilt_from_the_artifact_and_metrics(tmp_path):
    artifacts = tmp_path / "artifacts"
    state, folder = trial_folder(tmp_path, artifacts={"uri": artifacts.as_uri()})
    lines = [{"epoch": 1, "metrics": {"mean_average_precision": 0.1, "loss": 2.0}},
             {"epoch": 2, "metrics": {"mean_average_precision": 0.3, "loss": 1.0}}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (artifacts / "e-000").mkdir(parents=True)
    (artifacts / "e-000" / "model_card.json").write_text(json.dumps(
        {"format": "ultralytics", "classes": ["a"], "input_size": {"image_size": 64}, "epoch": 2, "metrics": {}}))
    trial = state.read_trial("e-000")
    assert trial.status.phase == "Succeeded" and trial.status.finalMetric == 0.3
    assert [e.epoch for e in trial.status.epochs] == [1, 2]
    assert trial.status.artifactUri.rstrip("/").endswith("e-000") and trial.status.model.classes == ["a"]
    assert TrialStatus.model_validate_json((folder / "status.json").read_text()).phase == "Succeeded"


def test_a_lost_status_without_an_artifact_is_not_guessed(tmp_path):
    state, folder = trial_folder(tmp_path, artifacts={"uri": (tmp_path / "artifacts").as_uri()})
    (folder / "metrics.jsonl").write_text('{"epoch": 1, "metrics": {"mean_average_precision": 0.1}}\n')
    with pytest.raises(StateError, match=str(folder / "status.json")):
        state.read_trial("e-000")
    assert not (folder / "status.json").exists()
    (folder / "metrics.jsonl").unlink()
    assert state.read_trial("e-000").status.phase == "Pending"  # never started: nothing to lose


# --- 8: trainers die with the runner ----------------------------------------------------------

RUNNER = """
import subprocess, sys, os
from autodetect.local.runner import die_with_parent
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True,
                         preexec_fn=die_with_parent(os.getpid()))
print(child.pid, flush=True)
import time; time.sleep(60)
"""


def test_trainers_die_with_a_killed_runner():
    runner = subprocess.Popen([sys.executable, "-c", RUNNER], stdout=subprocess.PIPE, text=True)
    child = int(runner.stdout.readline())
    assert Path(f"/proc/{child}").exists()
    runner.send_signal(signal.SIGKILL)
    runner.wait()

    def gone():
        try:
            return Path(f"/proc/{child}/stat").read_text().split()[2] in ("Z", "X")
        except OSError:
            return True
    wait_for(gone, timeout=10)
