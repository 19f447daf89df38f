"""Samplers: the hyperparameters of the next trials. Stateless and pure, so the state machine,
re-run after a crash or by the operator, proposes the same trials again.

The n-th trial (n = its position in the history: every trial proposed so far, in order) depends only
on the seed, n and, for bayesian, the finished observations:
- random: a numpy Generator seeded by (seed, n) picks a block, then draws each key. In a choice-only
  space it never repeats a point and, like grid, returns fewer trials once every point is taken.
- grid: the full product of every block's choices in a fixed order, skipping points already tried.
- bayesian: optuna's TPE (seed derived from (seed, n)) over an in-memory study of the finished
  observations; a categorical "block" parameter picks the block, each block's keys are separate
  parameters, so a trial of one block says nothing about another's keys. TPE cannot model the
  normal family, so those keys are drawn from the seeded Generator as random would.
Values of the normal family are truncated (redrawn) to the hyperparameter's legal range."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Sequence

import numpy as np

from autodetect.models import hyperparameters as hp
from autodetect.tuning.space import LOG_TYPES, NORMAL_TYPES, Distribution, SearchSpace, point_key, validate_for_algorithm

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.trial import Trial

_RANDOM, _NORMAL_KEYS, _TPE = 0, 1, 2  # independent random streams per trial
_REDRAWS = 100


@dataclass(frozen=True)
class Observation:
    parameters: dict[str, Any]
    value: float | None = None  # final primary metric; None while running, or failed


def suggest(space: SearchSpace, algorithm: str, seed: int | None, history: Sequence[Observation], count: int,
            objective: Literal["maximize", "minimize"] = "maximize") -> list[dict[str, Any]]:
    """Up to `count` new trials' parameters (canonical names, model_name included); fewer, possibly
    none, once a choice-only space is exhausted. A seed of None means 0."""
    validate_for_algorithm(space, algorithm)
    if objective not in ("maximize", "minimize"):
        raise ValueError(f"objective must be maximize or minimize, not {objective!r}")
    if count <= 0:
        return []
    seed, first = 0 if seed is None else seed, len(history)
    if algorithm == "grid":
        taken = {point_key(o.parameters) for o in history}
        return list(itertools.islice((p for p in space.grid() if point_key(p) not in taken), count))
    if algorithm == "random":
        return _random(space, seed, history, first, count)
    return _bayesian(space, seed, history, first, count, objective)


def _rng(seed: int, n: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFF_FFFF_FFFF_FFFF, n, stream])


def _random(space: SearchSpace, seed: int, history: Sequence[Observation], first: int, count: int) -> list[dict]:
    taken = {point_key(o.parameters) for o in history} if space.is_discrete else None
    out = []
    for n in range(first, first + count):
        rng = _rng(seed, n, _RANDOM)
        point = _draw_point(space, rng)
        if taken is not None:
            for _ in range(_REDRAWS):
                if point_key(point) not in taken:
                    break
                point = _draw_point(space, rng)
            else:  # nearly exhausted: pick among what is left
                left = [p for p in space.grid() if point_key(p) not in taken]
                if not left:
                    break
                point = left[int(rng.integers(len(left)))]
            taken.add(point_key(point))
        out.append(point)
    return out


def _draw_point(space: SearchSpace, rng: np.random.Generator) -> dict[str, Any]:
    block = space.blocks[int(rng.integers(len(space.blocks)))]
    return {name: _draw(name, d, rng) for name, d in block.items()}


def _draw(name: str, d: Distribution, rng: np.random.Generator) -> Any:
    if d.is_choice:
        return d.values[int(rng.integers(len(d.values)))]
    if d.type == "randint":
        return int(rng.integers(d.upper))
    p = hp.PARAMS[name]
    for _ in range(_REDRAWS):
        x = rng.normal(d.mu, d.sigma) if d.mu is not None else rng.uniform(d.min_value, d.max_value)
        x = d.quantise(math.exp(min(x, 700.0)) if d.type in LOG_TYPES else float(x))
        if (p.low is None or x >= p.low) and (p.high is None or x <= p.high):
            break
    else:
        x = min(max(x, p.low if p.low is not None else x), p.high if p.high is not None else x)
    return _typed(name, x)


def _typed(name: str, x: float) -> int | float:
    return int(round(x)) if hp.PARAMS[name].type is int else float(x)


# --- bayesian ----------------------------------------------------------------------------

def _bayesian(space: SearchSpace, seed: int, history: Sequence[Observation], first: int, count: int,
              objective: str) -> list[dict]:
    import optuna
    from optuna.distributions import CategoricalDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    block_dist = CategoricalDistribution(tuple(range(len(space.blocks))))
    modelled = [{name: _to_optuna(name, d) for name, d in block.items() if d.type not in NORMAL_TYPES}
                for block in space.blocks]
    finished = []
    for o in history:
        if o.value is None or not math.isfinite(o.value) or (b := space.block_of(o.parameters)) is None:
            continue
        params, dists = {"block": b}, {"block": block_dist}
        for name, od in modelled[b].items():
            params[f"{b}.{name}"], dists[f"{b}.{name}"] = _snap(od, o.parameters[name]), od
        finished.append(optuna.trial.create_trial(params=params, distributions=dists, value=float(o.value)))
    out = []
    for n in range(first, first + count):
        tpe_seed = int(_rng(seed, n, _TPE).integers(2**31))
        study = optuna.create_study(direction=objective, sampler=optuna.samplers.TPESampler(seed=tpe_seed))
        study.add_trials(finished)
        trial = study.ask()
        b = trial.suggest_categorical("block", block_dist.choices)
        rng = _rng(seed, n, _NORMAL_KEYS)
        point = {}
        for name, d in space.blocks[b].items():
            od = modelled[b].get(name)
            point[name] = _draw(name, d, rng) if od is None else _from_optuna(name, d, _ask(trial, f"{b}.{name}", od))
        out.append(point)
    return out


def _to_optuna(name: str, d: Distribution) -> "BaseDistribution":
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if d.is_choice:
        return CategoricalDistribution(d.values)
    if d.type == "randint":
        return IntDistribution(0, d.upper - 1)
    if d.type in ("loguniform", "qloguniform"):  # optuna has no log+step: qloguniform is quantised afterwards
        return FloatDistribution(math.exp(d.min_value), math.exp(d.max_value), log=True)
    low, high = d.bounds()
    if d.type == "uniform":
        return FloatDistribution(low, high)
    if hp.PARAMS[name].type is int:  # quniform
        return IntDistribution(int(low), int(high), step=int(d.q))
    return FloatDistribution(low, high, step=d.q)


def _snap(od: "BaseDistribution", value: Any) -> Any:
    """An observed value as the distribution holds it (bounds and steps after float round-off)."""
    if not hasattr(od, "step"):
        return value
    x = min(max(float(value), od.low), od.high)
    if od.step is not None:
        x = od.low + round((x - od.low) / od.step) * od.step
    return int(round(x)) if isinstance(od.low, int) else x


def _ask(trial: "Trial", key: str, od: "BaseDistribution") -> Any:
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(od, CategoricalDistribution):
        return trial.suggest_categorical(key, od.choices)
    suggest_fn = trial.suggest_int if isinstance(od, IntDistribution) else trial.suggest_float
    return suggest_fn(key, od.low, od.high, step=od.step, log=od.log)


def _from_optuna(name: str, d: Distribution, value: Any) -> Any:
    if d.is_choice:
        return value
    return _typed(name, d.quantise(value))  # also clears optuna's float round-off on a step
