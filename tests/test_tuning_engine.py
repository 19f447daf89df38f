"""The experiment state machine, driven step by step with a fake clock and trials advanced by hand."""

from datetime import datetime, timedelta, timezone

from autodetect.api.v1alpha1 import DetectionExperiment, DetectionTrial, EpochMetrics
from autodetect.tuning import conditions as cond
from autodetect.tuning.engine import Fail, Finish, RetryTrial, StartTrial, StopTrial, at_rest, reconcile
from autodetect.tuning.trials import new_trial, retried, stopped

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
DATASET = {"training": {"uri": "file:///data/train.jsonl"}}
RANDOM_SPACE = [{"model_name": "yolov8", "learning_rate": "uniform(0.001, 0.01)"}]
GRID_SPACE = [{"model_name": "yolov8", "learning_rate": {"type": "choice", "values": [0.01, 0.02, 0.03]}}]


def make_experiment(limits=None, space=RANDOM_SPACE, algorithm="random", **spec):
    return DetectionExperiment.model_validate({
        "metadata": {"name": "exp"},
        "spec": {"dataset": DATASET, "searchSpace": space, "sampling": {"algorithm": algorithm, "seed": 3},
                 "limits": limits or {}, **spec}})


class Sim:
    """Carries decisions out the way a backend would, so that the next reconcile sees their effect."""

    def __init__(self, experiment):
        self.exp, self.trials, self.now = experiment, {}, T0

    def decide(self):
        return reconcile(self.exp, list(self.trials.values()), self.now)

    def step(self):
        decision = self.decide()
        self.exp = self.exp.model_copy(update={"status": decision.status})
        for action in decision.actions:
            if isinstance(action, StartTrial):
                self.trials[action.name] = new_trial(self.exp, action.name, action.parameters)
            elif isinstance(action, StopTrial):
                assert not self.trials[action.name].spec.stop, f"{action.name} stopped twice"
                self.trials[action.name] = stopped(self.trials[action.name], action.reason, self.now)
            elif isinstance(action, RetryTrial):
                self.trials[action.name] = retried(self.trials[action.name], action.attempt, self.now)
        return decision

    def report(self, name, *values, phase=None):
        trial = self.trials[name]
        if trial.status.phase == "Pending":
            trial.status.phase, trial.status.startTime = "Running", self.now
        for value in values:
            metrics = {} if value is None else {self.exp.spec.primaryMetric: value}
            trial.status.epochs = [*trial.status.epochs, EpochMetrics(epoch=len(trial.status.epochs) + 1,
                                                                      metrics=metrics)]
        if phase:
            trial.status.phase = phase

    def tick(self, minutes):
        self.now += timedelta(minutes=minutes)


def kinds(decision):
    return [type(a).__name__ for a in decision.actions]


def test_scripted_run_to_max_trials():
    sim = Sim(make_experiment({"maxTrials": 4, "maxConcurrentTrials": 2}))
    first = sim.decide()
    assert first == sim.decide()  # the same inputs give the same decision (restart-safety)
    d = sim.step()
    assert [a.name for a in d.actions] == ["exp-000", "exp-001"] and kinds(d) == ["StartTrial"] * 2
    assert d.status.phase == "Running" and d.status.startTime == T0
    assert cond.is_created(d.status.conditions) and cond.is_running(d.status.conditions)
    # feeding back the state with the started trials: no duplicate start, both slots are taken
    assert sim.step().actions == ()
    sim.tick(5)
    sim.report("exp-000", 0.3, 0.5, phase="Succeeded")
    sim.report("exp-001", 0.4)
    d = sim.step()
    assert kinds(d) == ["StartTrial"] and d.actions[0].name == "exp-002"
    assert not at_rest(d.status, runs_alive=False)  # running: its time limits need the clock
    assert d.status.trials.model_dump() == {"total": 2, "running": 1, "succeeded": 1, "pruned": 0, "failed": 0}
    assert d.status.bestTrial.name == "exp-000" and d.status.bestTrial.metric == 0.5
    sim.report("exp-001", 0.7, phase="Succeeded")
    d = sim.step()
    assert [a.name for a in d.actions] == ["exp-003"]
    sim.report("exp-002", 0.6, phase="Succeeded")
    assert sim.step().actions == ()  # maxTrials reached, exp-003 still running: wait
    sim.report("exp-003", 0.65, phase="Succeeded")
    sim.tick(1)
    d = sim.step()
    assert d.actions == (Finish("exp-001", 0.7),)
    assert d.status.phase == "Succeeded" and d.status.completionTime == sim.now
    assert d.status.bestTrial.hyperparameters == sim.trials["exp-001"].spec.hyperparameters
    succeeded = cond.get_condition(d.status.conditions, cond.SUCCEEDED)
    assert succeeded.reason == cond.MAX_TRIALS_REACHED and "exp-001" in succeeded.message
    assert not cond.is_running(d.status.conditions)
    # an ended experiment repeats its outcome and starts nothing
    sim.tick(1)
    again = sim.step()
    assert again.actions == (Finish("exp-001", 0.7),) and again.status.conditions == d.status.conditions
    assert at_rest(again.status, runs_alive=False)  # no clock can change it: no timer pass is needed
    assert not at_rest(again.status, runs_alive=True)  # a lingering pod is killed after its grace


def test_sampled_parameters_depend_on_the_seed_and_history_only():
    one, two = Sim(make_experiment({"maxTrials": 3, "maxConcurrentTrials": 3})), Sim(
        make_experiment({"maxTrials": 3, "maxConcurrentTrials": 3}))
    two.now += timedelta(hours=3)
    assert one.decide().actions == two.decide().actions
    assert len({a.parameters["learning_rate"] for a in one.decide().actions}) == 3


def test_policy_prunes_once_and_pruned_trials_still_count():
    early = {"policy": "bandit", "slackFactor": 0.1, "evaluationInterval": 1, "delayEvaluation": 2}
    sim = Sim(make_experiment({"maxTrials": 3, "maxConcurrentTrials": 3}, earlyTermination=early))
    sim.step()
    sim.report("exp-000", 0.5, 0.8, phase="Succeeded")
    sim.report("exp-001", 0.2)  # one interval: before delayEvaluation
    sim.report("exp-002", 0.6, 0.75)  # within slack of 0.8
    assert sim.step().actions == ()
    sim.report("exp-001", 0.3)
    d = sim.step()
    assert d.actions == (StopTrial("exp-001", "bandit: best 0.3 at interval 2 is below 0.7273 = 0.8/(1+0.1)"),)
    # the pod has not stopped yet: it is not stopped again, and it still holds its slot
    sim.report("exp-001", 0.35)
    assert sim.step().actions == ()
    sim.report("exp-001", phase="Pruned")
    sim.report("exp-002", 0.79, phase="Succeeded")
    d = sim.step()
    assert d.actions == (Finish("exp-000", 0.8),)
    assert d.status.trials.pruned == 1 and d.status.trials.succeeded == 2


def test_trial_timeout_stops_a_running_trial():
    sim = Sim(make_experiment({"maxTrials": 2, "maxConcurrentTrials": 2, "trialTimeoutMinutes": 30}))
    sim.step()
    sim.report("exp-000", 0.1)
    sim.tick(10)
    sim.report("exp-001", 0.2)
    sim.tick(20)  # exp-000 has run 30 minutes, exp-001 20
    d = sim.step()
    assert d.actions == (StopTrial("exp-000", "trial timeout (30 min) reached"),)
    sim.tick(15)
    assert sim.step().actions == (StopTrial("exp-001", "trial timeout (30 min) reached"),)
    sim.report("exp-000", phase="Pruned")
    sim.report("exp-001", phase="Pruned")
    assert sim.step().actions == (Finish("exp-001", 0.2),)


def test_experiment_timeout_stops_everything_then_finishes_with_the_best():
    sim = Sim(make_experiment({"maxTrials": 10, "maxConcurrentTrials": 2, "timeoutMinutes": 60}))
    sim.step()
    sim.tick(30)
    sim.report("exp-000", 0.4, phase="Succeeded")
    sim.step()  # starts exp-002
    sim.report("exp-001", 0.5)
    sim.tick(30)
    d = sim.step()
    reason = "experiment timeout (60 min) reached"
    assert d.actions == (StopTrial("exp-001", reason), StopTrial("exp-002", reason))
    assert d.status.phase == "Running" and "waiting for 2" in d.status.message
    assert sim.step().actions == ()  # stopping: nothing new starts, nothing stopped twice
    sim.report("exp-001", 0.6, phase="Pruned")
    sim.report("exp-002", phase="Pruned")
    d = sim.step()
    assert d.actions == (Finish("exp-001", 0.6),)
    assert cond.get_condition(d.status.conditions, cond.SUCCEEDED).reason == cond.TIMEOUT_REACHED


def test_timeout_without_any_metric_fails():
    sim = Sim(make_experiment({"maxTrials": 10, "timeoutMinutes": 5}))
    sim.step()
    sim.report("exp-000", None)
    sim.tick(5)
    assert kinds(sim.step()) == ["StopTrial"]
    sim.report("exp-000", phase="Pruned")
    d = sim.step()
    assert kinds(d) == ["Fail"] and "no trial produced a mean_average_precision" in d.actions[0].reason
    assert d.status.phase == "Failed"
    assert cond.get_condition(d.status.conditions, cond.FAILED).reason == cond.NO_TRIAL_METRIC


def test_failed_trials_are_retried_until_the_failure_limit():
    sim = Sim(make_experiment({"maxTrials": 3, "maxConcurrentTrials": 2, "maxFailedTrials": 1}))
    sim.step()
    sim.report("exp-000", phase="Failed")
    sim.report("exp-001", 0.5)
    d = sim.step()
    assert d.actions == (RetryTrial("exp-000", 1),)  # the one free slot goes to the retry, before a new trial
    assert d.status.trials.failed == 1
    assert sim.trials["exp-000"].status.phase == "Pending"
    sim.report("exp-000", phase="Failed")  # second failed attempt: 2 > maxFailedTrials
    d = sim.step()
    assert isinstance(d.actions[1], Fail) and "2 failed trial attempts" in d.actions[1].reason
    assert d.actions[0] == StopTrial("exp-001", f"the experiment failed: {d.actions[1].reason}")
    assert cond.get_condition(d.status.conditions, cond.FAILED).reason == cond.MAX_FAILED_TRIALS_REACHED
    assert not cond.is_running(d.status.conditions)
    # ended: the outcome repeats, the already-stopped trial is not stopped again
    assert sim.step().actions == (Fail(d.actions[1].reason),)


def test_retry_waits_for_a_free_slot_and_failures_up_to_the_limit_are_tolerated():
    sim = Sim(make_experiment({"maxTrials": 3, "maxConcurrentTrials": 3, "maxFailedTrials": 3}))
    sim.step()
    # the concurrency bound drops to 2 (as a local runner on a small machine sets it)
    limits = sim.exp.spec.limits.model_copy(update={"maxConcurrentTrials": 2})
    sim.exp = sim.exp.model_copy(update={"spec": sim.exp.spec.model_copy(update={"limits": limits})})
    sim.report("exp-000", phase="Failed")
    sim.report("exp-001", 0.1)
    assert sim.step().actions == ()  # exp-001 and exp-002 hold both slots
    sim.report("exp-001", phase="Succeeded")
    assert sim.step().actions == (RetryTrial("exp-000", 1),)
    for attempt in (2, 3):
        sim.report("exp-000", phase="Failed")
        assert sim.step().actions == (RetryTrial("exp-000", attempt),)
    sim.report("exp-000", phase="Failed")  # the fourth failed attempt is one too many
    d = sim.step()
    assert kinds(d) == ["StopTrial", "Fail"] and d.actions[0].name == "exp-002"


def test_no_failure_tolerated_with_zero():
    sim = Sim(make_experiment({"maxTrials": 3, "maxFailedTrials": 0}))
    sim.step()
    sim.report("exp-000", phase="Failed")
    assert kinds(sim.step()) == ["Fail"]


def test_grid_exhaustion_finishes_the_experiment():
    sim = Sim(make_experiment({"maxTrials": 10, "maxConcurrentTrials": 2}, space=GRID_SPACE, algorithm="grid"))
    d = sim.step()
    assert [a.parameters["learning_rate"] for a in d.actions] == [0.01, 0.02]
    sim.report("exp-000", 0.3, phase="Succeeded")
    d = sim.step()
    assert [(a.name, a.parameters["learning_rate"]) for a in d.actions] == [("exp-002", 0.03)]
    sim.report("exp-001", 0.5, phase="Succeeded")
    assert sim.step().actions == ()  # grid exhausted but exp-002 still running
    sim.report("exp-002", 0.4, phase="Succeeded")
    d = sim.step()
    assert d.actions == (Finish("exp-001", 0.5),)
    assert cond.get_condition(d.status.conditions, cond.SUCCEEDED).reason == cond.SEARCH_SPACE_EXHAUSTED


def test_minimised_metric_and_final_metric():
    sim = Sim(make_experiment({"maxTrials": 3, "maxConcurrentTrials": 3}, primaryMetric="loss",
                              objective="minimize",
                              earlyTermination={"policy": "median_stopping"}))
    sim.step()
    sim.report("exp-000", 0.9, 0.5, phase="Succeeded")
    sim.report("exp-001", 0.8, 0.4, phase="Succeeded")
    sim.report("exp-002", 1.2, 1.1)
    d = sim.step()  # averages .7 .6 1.15 -> median .7; exp-002's best 1.1 is above it
    assert kinds(d) == ["StopTrial"]
    assert d.actions[0].reason.startswith("median stopping: best 1.1 at interval 2 is above 0.7")
    sim.report("exp-002", phase="Pruned")
    sim.trials["exp-001"].status.finalMetric = 0.6  # the artifact's metric wins over the best evaluation
    assert sim.step().actions == (Finish("exp-000", 0.5),)


def test_names_take_the_lowest_free_indices_and_start_time_is_kept():
    sim = Sim(make_experiment({"maxTrials": 5, "maxConcurrentTrials": 3}))
    sim.step()
    del sim.trials["exp-001"]  # its create never got through (or it was deleted by hand): it is made again
    sim.report("exp-000", 0.1, phase="Succeeded")
    sim.tick(7)
    d = sim.step()
    assert [a.name for a in d.actions] == ["exp-001", "exp-003"] and d.status.startTime == T0


def test_conditions_keep_transition_time_while_running():
    sim = Sim(make_experiment({"maxTrials": 2}))
    created = sim.step().status.conditions
    sim.tick(3)
    sim.report("exp-000", 0.2)
    later = sim.step().status.conditions
    assert later == created  # nothing changed: same conditions, same lastTransitionTime
