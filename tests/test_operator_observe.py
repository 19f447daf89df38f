"""How a trial's Job and Pod read in the engine's terms (operator.observe.run_of), on objects shaped as the Job
controller and the kubelet write them; which of their changes want a pass at once; and the Jobs and pods as the
watches deliver them (operator.watched)."""

from autodetect.operator.observe import run_of, wants_a_pass_at_once
from autodetect.operator.watched import WatchedRuns
from autodetect.tuning.trials import MISSING

CREATED = "2026-01-01T00:00:00Z"


def job(**status) -> dict:
    return {"metadata": {"name": "exp-000-0", "creationTimestamp": CREATED}, "status": status}


def pod(phase: str, *, waiting: dict | None = None, terminated: dict | None = None, conditions=(), name="p1",
        created=CREATED) -> dict:
    state = {"waiting": waiting} if waiting else {"terminated": terminated} if terminated else {"running": {}}
    return {"metadata": {"name": name, "creationTimestamp": created,
                         "labels": {"batch.kubernetes.io/job-name": "exp-000-0"}},
            "status": {"phase": phase, "conditions": list(conditions),
                       "containerStatuses": [{"name": "trainer", "state": state}]}}


def condition(type_: str, reason: str = "", message: str = "") -> dict:
    return {"type": type_, "status": "True", "reason": reason, "message": message,
            "lastTransitionTime": "2026-01-01T01:00:00Z"}


def test_no_job_is_a_missing_run_and_a_job_without_a_pod_waits():
    assert run_of(None, []) == MISSING
    run = run_of(job(), [])
    assert run.state == "waiting" and run.reason == "" and run.since.isoformat() == "2026-01-01T00:00:00+00:00"


def test_a_pod_that_cannot_start_waits_with_its_reason():
    pulling = run_of(job(), [pod("Pending", waiting={"reason": "ImagePullBackOff", "message": "Back-off pulling"})])
    assert (pulling.state, pulling.reason, pulling.message) == ("waiting", "ImagePullBackOff", "Back-off pulling")
    unschedulable = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes"}
    waiting = pod("Pending", conditions=[unschedulable])
    waiting["status"]["containerStatuses"] = []
    assert run_of(job(), [waiting]).reason == "Unschedulable"
    creating = run_of(job(), [pod("Pending", waiting={"reason": "ContainerCreating"})])
    assert (creating.state, creating.reason) == ("waiting", "")


def test_running_and_finished_jobs():
    assert run_of(job(active=1), [pod("Running")]).state == "running"
    done = run_of(job(conditions=[condition("Complete")], completionTime="2026-01-01T02:00:00Z"),
                  [pod("Succeeded", terminated={"exitCode": 0, "reason": "Completed"})])
    assert (done.state, done.exit_code, done.reason) == ("exited", 0, "")


def test_a_failed_pod_surfaces_before_the_job_controller_marks_the_job():
    oom = run_of(job(active=1), [pod("Failed", terminated={"exitCode": 137, "reason": "OOMKilled",
                                                           "message": "last log line"})])
    assert (oom.state, oom.exit_code, oom.reason, oom.message) == ("exited", 137, "OOMKilled", "last log line")
    error = run_of(job(conditions=[condition("Failed", "BackoffLimitExceeded")]),
                   [pod("Failed", terminated={"exitCode": 1, "reason": "Error"})])
    assert (error.exit_code, error.reason) == (1, "")


def test_a_deadline_and_a_kill():
    deadline = run_of(job(conditions=[condition("Failed", "DeadlineExceeded", "Job was active longer than specified")]),
                      [pod("Failed", terminated={"exitCode": 137, "reason": "Error"})])
    assert (deadline.state, deadline.reason) == ("exited", "DeadlineExceeded")
    deleting = job()
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T03:00:00Z"
    assert run_of(deleting, [pod("Running")]).reason == "Killed"


def test_a_disrupted_pod_is_replaced_by_the_job_so_the_run_waits_on_the_newest():
    evicted = pod("Failed", terminated={"exitCode": 137}, conditions=[condition("DisruptionTarget", "EvictionByEvictionAPI")])
    assert run_of(job(active=1), [evicted]).state == "waiting"
    replacement = pod("Running", name="p2", created="2026-01-01T00:05:00Z")
    assert run_of(job(active=1), [evicted, replacement]).state == "running"


def test_what_may_end_a_trial_or_keep_it_from_starting_wants_a_pass_at_once():
    trial = {"status": {"phase": "Running", "epochs": [{"epoch": 1, "metrics": {"mean_average_precision": 0.5}}]}}
    assert not wants_a_pass_at_once("detectiontrials", trial)  # an evaluation: coalesced
    assert wants_a_pass_at_once("detectiontrials", {"status": {"phase": "Succeeded"}})
    assert not wants_a_pass_at_once("jobs", job(active=1))
    assert wants_a_pass_at_once("jobs", job(conditions=[condition("Failed", "BackoffLimitExceeded")]))
    assert not wants_a_pass_at_once("jobs", job(conditions=[condition("Complete")]))  # the trainer said so first
    assert not wants_a_pass_at_once("pods", pod("Succeeded", terminated={"exitCode": 0, "reason": "Completed"}))
    assert not wants_a_pass_at_once("pods", pod("Running"))
    assert not wants_a_pass_at_once("pods", pod("Pending", waiting={"reason": "ContainerCreating"}))
    assert wants_a_pass_at_once("pods", pod("Pending", waiting={"reason": "ImagePullBackOff"}))
    assert wants_a_pass_at_once("pods", pod("Failed", terminated={"exitCode": 137, "reason": "OOMKilled"}))


def test_the_watched_runs_keep_what_the_watches_deliver_by_experiment():
    def obj(name: str, experiment: str, **status) -> dict:
        return {"metadata": {"name": name, "namespace": "ns", "labels": {"autodetect.dev/experiment": experiment}},
                "status": status}

    runs = WatchedRuns()
    assert not runs.listed("ns", "a")
    runs.fill("ns", "a", [obj("a-000-0", "a")], [])  # what a first pass lists
    assert runs.listed("ns", "a") and runs.of("jobs", "ns", "a") == [obj("a-000-0", "a")]
    runs.seen("jobs", "MODIFIED", obj("a-000-0", "a", active=1))
    runs.seen("pods", None, obj("a-000-0-x", "a"))  # kopf's own listing
    runs.seen("jobs", "ADDED", obj("b-000-0", "b"))
    assert runs.of("jobs", "ns", "a") == [obj("a-000-0", "a", active=1)] and len(runs.of("pods", "ns", "a")) == 1
    runs.seen("jobs", "DELETED", obj("a-000-0", "a"))
    assert runs.of("jobs", "ns", "a") == [] and runs.of("jobs", "ns", "b") == [obj("b-000-0", "b")]
    runs.unlisted("ns", "a")  # its loop starts again (a restart, a takeover): the next pass lists again
    assert not runs.listed("ns", "a")
