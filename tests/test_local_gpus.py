"""Which GPU a local trial gets (local.runner.place_trials), with fake GPU counts; and a cluster trial's
GPU share, which is its template's resources, passed through by the Job builder."""

from __future__ import annotations

from autodetect.local.runner import Placement, place_trials
from autodetect.operator import builders
from test_operator_builders import experiment, trial_dict


def test_each_trial_gets_its_own_gpu_and_the_gpus_bound_concurrency():
    assert place_trials(4, None, cpus=16, gpus=4) == Placement(4, 4, (0, 1, 2, 3))
    assert place_trials(8, None, cpus=16, gpus=4) == Placement(4, 4, (0, 1, 2, 3))  # bounded by the GPUs
    assert place_trials(8, 2, cpus=16, gpus=4) == Placement(2, 8, (0, 1))  # --parallel still bounds


def test_trials_per_gpu_packs_k_trials_on_each():
    assert place_trials(8, None, cpus=16, gpus=4, trials_per_gpu=2) == Placement(8, 2, (0, 1, 2, 3, 0, 1, 2, 3))
    assert place_trials(3, None, cpus=4, gpus=1, trials_per_gpu=4) == Placement(3, 1, (0, 0, 0))


def test_cpu_only_keeps_the_thread_split():
    assert place_trials(4, None, cpus=2, gpus=0) == Placement(2, 1, ())
    assert place_trials(2, None, cpus=8, gpus=0, trials_per_gpu=3) == Placement(2, 4, ())


def test_a_cluster_trial_carries_its_gpu_share_from_the_template():
    for share in ({"limits": {"nvidia.com/gpu.shared": 1}}, {"limits": {"nvidia.com/mig-1g.10gb": 1}}):
        pod = builders.trial_job(trial_dict(), experiment(resources=share))["spec"]["template"]["spec"]
        assert pod["containers"][0]["resources"] == share
