"""Early termination, as Azure ML defines it (BanditPolicy, MedianStoppingPolicy, TruncationSelectionPolicy).

Semantics, for a pure function of the metric curves:
- Each evaluation a trial reports is one interval: `curves[name][i]` is its primary metric at interval i+1
  (None where that evaluation carried no primary metric; it neither counts toward a best nor an average).
- A policy acts at intervals that are multiples of evaluationInterval and >= delayEvaluation. A running trial
  that has reported n intervals is judged at its latest such interval m <= n, on values up to m only, and is
  compared with the other trials' values up to m ("when ranking a young run, the corresponding and earlier
  performance of older runs is used"). Only trials that reached interval m, with a metric by then, are compared.
- Finished trials (in `curves` but not in `running`) are never stopped but are compared with; truncation
  selection with excludeFinishedJobs leaves them out of its ranking.
- A trial exactly at a threshold is not stopped (Azure: "not within the slack" / "worse than the median").
- Bandit: best = the leading trial's best up to m; stop if the trial's best up to m is below best/(1+slackFactor)
  or best-slackAmount (minimize: above best*(1+slackFactor) or best+slackAmount).
- Median stopping: stop if the trial's best up to m is worse than the median of all compared trials' running
  averages over intervals 1..m.
- Truncation selection: rank the compared trials by their best up to m; the lowest floor(n*percentage/100)
  are stopped (a trial tied with the worst survivor is kept).
"""

from __future__ import annotations

import math
from statistics import median
from typing import Callable, Literal, Mapping, Sequence

from autodetect.api.v1alpha1 import EarlyTerminationSpec

Objective = Literal["maximize", "minimize"]
Curve = Sequence[float | None]


def decide_stops(policy: EarlyTerminationSpec, curves: Mapping[str, Curve], running: set[str],
                 objective: Objective) -> dict[str, str]:
    """Trial name -> why it should stop, for the running trials the policy terminates now."""
    if policy.policy == "none":
        return {}
    judged: dict[int, list[str]] = {}  # interval -> the running trials judged at it
    for name in sorted(running & curves.keys()):
        if (interval := judged_interval(policy, len(curves[name]))) is not None:
            judged.setdefault(interval, []).append(name)
    if not judged:
        return {}
    last = max(judged)
    progress = {name: _progress(curve[:last], objective) for name, curve in curves.items()}
    stops = {}
    for interval, names in judged.items():
        rule = _RULES[policy.policy](policy, interval, progress, running, objective)
        for name in names:  # a trial with no metric by then is not judged
            if progress[name][interval - 1] is not None and (reason := rule(name)):
                stops[name] = reason
    return dict(sorted(stops.items()))


def judged_interval(policy: EarlyTerminationSpec, reported: int) -> int | None:
    """The latest interval <= reported at which the policy acts, or None before the first one."""
    interval = reported - reported % policy.evaluationInterval
    return interval if interval >= max(policy.delayEvaluation, 1) else None


# Each rule sets its cut-off for one interval once, and returns the judge of a trial: its reason, or None.

def _bandit(policy, interval, progress, running, objective) -> Callable[[str], str | None]:
    bests = _at(progress, interval, 0)
    leader = _pick(bests.values(), objective)
    if policy.slackFactor is not None:
        if objective == "maximize":
            threshold, how = leader / (1 + policy.slackFactor), f"{_f(leader)}/(1+{_f(policy.slackFactor)})"
        else:
            threshold, how = leader * (1 + policy.slackFactor), f"{_f(leader)}*(1+{_f(policy.slackFactor)})"
    else:
        sign = "-" if objective == "maximize" else "+"
        threshold = leader - policy.slackAmount if objective == "maximize" else leader + policy.slackAmount
        how = f"{_f(leader)}{sign}{_f(policy.slackAmount)}"

    def judge(name: str) -> str | None:
        if _worse(bests[name], threshold, objective):
            return (f"bandit: best {_f(bests[name])} at interval {interval} is {_word(objective)} "
                    f"{_f(threshold)} = {how}")
        return None
    return judge


def _median_stopping(policy, interval, progress, running, objective) -> Callable[[str], str | None]:
    bests = _at(progress, interval, 0)
    cut = median(_at(progress, interval, 1).values())

    def judge(name: str) -> str | None:
        if _worse(bests[name], cut, objective):
            return (f"median stopping: best {_f(bests[name])} at interval {interval} is {_word(objective)} "
                    f"{_f(cut)}, the median of {len(bests)} trials' running averages")
        return None
    return judge


def _truncation_selection(policy, interval, progress, running, objective) -> Callable[[str], str | None]:
    bests = _at(progress, interval, 0)
    if policy.excludeFinishedJobs:
        bests = {name: value for name, value in bests.items() if name in running}
    count = len(bests) * policy.truncationPercentage // 100
    survivor = sorted(bests.values(), reverse=objective == "minimize")[count]  # the worst value that survives

    def judge(name: str) -> str | None:
        if count and _worse(bests[name], survivor, objective):
            return (f"truncation selection: best {_f(bests[name])} at interval {interval} is in the lowest "
                    f"{policy.truncationPercentage}% of {len(bests)} trials ({_word(objective)} {_f(survivor)})")
        return None
    return judge


_RULES = {"bandit": _bandit, "median_stopping": _median_stopping, "truncation_selection": _truncation_selection}


def _progress(curve: Curve, objective: Objective) -> list[tuple[float, float] | None]:
    """At each interval: (best so far, running average), None until the first metric."""
    out, best, total, count = [], None, 0.0, 0
    sign = 1.0 if objective == "maximize" else -1.0
    for value in curve:
        if value is not None and value == value:  # not NaN
            if best is None or sign * value > sign * best:
                best = value
            total, count = total + value, count + 1
        out.append(None if best is None else (best, total / count))
    return out


def _at(progress: Mapping[str, list], interval: int, which: int) -> dict[str, float]:
    """Best (which=0) or running average (1) at `interval` of every trial that reached it with a metric."""
    return {name: p[interval - 1][which] for name, p in progress.items()
            if len(p) >= interval and p[interval - 1] is not None}


def _pick(values, objective: Objective) -> float:
    return max(values) if objective == "maximize" else min(values)


def _worse(value: float, threshold: float, objective: Objective) -> bool:
    """Strictly worse; a value equal to the threshold up to float rounding is not."""
    if math.isclose(value, threshold, rel_tol=1e-9, abs_tol=1e-12):
        return False
    return value < threshold if objective == "maximize" else value > threshold


def _word(objective: Objective) -> str:
    return "below" if objective == "maximize" else "above"


def _f(value: float) -> str:
    return f"{value:.4g}"
