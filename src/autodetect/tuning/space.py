"""The search space in Azure ML's form: a list of blocks, each mapping hyperparameter names to a
distribution. A trial samples one block, then every key in it.

A distribution is written structured (`{type: uniform, min_value: 0.0001, max_value: 0.01}`), compact
(`"uniform(0.0001, 0.01)"`, `"choice('sgd', 'adam')"`) or as a plain value (fixed). Semantics are
Azure's: loguniform(min_value, max_value) is exp(uniform(min_value, max_value)), so its bounds are
natural logs; q-distributions return round(x / q) * q; randint(upper) is an integer in [0, upper).

Errors are SpecErrors whose field starts at the block index, e.g. "[1].learning_rate"; the API
loader prefixes it with "spec.searchSpace"."""

from __future__ import annotations

import ast
import itertools
import math
import re
from dataclasses import dataclass
from typing import Any, Iterator

from autodetect.errors import SpecError
from autodetect.models import hyperparameters as hp

# type -> its parameters, in the order the compact form takes them positionally
SIGNATURES: dict[str, tuple[str, ...]] = {
    "choice": ("values",),
    "uniform": ("min_value", "max_value"),
    "loguniform": ("min_value", "max_value"),
    "quniform": ("min_value", "max_value", "q"),
    "qloguniform": ("min_value", "max_value", "q"),
    "normal": ("mu", "sigma"),
    "lognormal": ("mu", "sigma"),
    "qnormal": ("mu", "sigma", "q"),
    "qlognormal": ("mu", "sigma", "q"),
    "randint": ("upper",),
}
LOG_TYPES = frozenset({"loguniform", "qloguniform", "lognormal", "qlognormal"})
NORMAL_TYPES = frozenset({"normal", "lognormal", "qnormal", "qlognormal"})
INT_TYPES = frozenset({"choice", "randint", "quniform", "qloguniform", "qnormal", "qlognormal"})  # with integer q
DEFAULT_MODEL = hp.PARAMS["model_name"].default[hp.YOLO]
_CALL = re.compile(r"^\s*([A-Za-z_]\w*)\s*\(.*\)\s*$", re.S)


@dataclass(frozen=True)
class Distribution:
    type: str
    values: tuple = ()  # choice: the coerced values (a fixed value is a one-value choice)
    min_value: float | None = None  # uniform family; natural logs for the log types
    max_value: float | None = None
    mu: float | None = None  # normal family; of the log for the log types
    sigma: float | None = None
    q: float | None = None
    upper: int | None = None  # randint

    @property
    def is_choice(self) -> bool:
        return self.type == "choice"

    def quantise(self, x: float) -> float:
        return x if self.q is None else float(f"{round(x / self.q) * self.q:.12g}")

    def bounds(self) -> tuple[float, float] | None:
        """The lowest and highest value it can give; None for the unbounded normal family."""
        if self.type == "randint":
            return 0, self.upper - 1
        if self.min_value is None:
            return None
        lo, hi = self.min_value, self.max_value
        if self.type in LOG_TYPES:
            lo, hi = math.exp(lo), math.exp(hi)
        return self.quantise(lo), self.quantise(hi)

    def contains(self, value: Any) -> bool:
        if self.is_choice:
            return any(value == v and isinstance(value, bool) == isinstance(v, bool) for v in self.values)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.q is not None and not math.isclose(value / self.q, round(value / self.q), abs_tol=1e-6):
            return False
        if self.type == "lognormal" and value <= 0:
            return False
        b = self.bounds()
        return b is None or b[0] - 1e-9 * abs(b[0]) <= value <= b[1] + 1e-9 * abs(b[1])


@dataclass(frozen=True)
class SearchSpace:
    blocks: tuple[dict[str, Distribution], ...]  # canonical name -> distribution; model_name always first

    @property
    def is_discrete(self) -> bool:
        return all(d.is_choice for block in self.blocks for d in block.values())

    def grid_size(self) -> int:
        return sum(math.prod(len(d.values) for d in block.values()) for block in self.blocks)

    def grid(self) -> Iterator[dict[str, Any]]:
        """Every point of a choice-only space, block by block, the last key varying fastest; no repeats."""
        if not self.is_discrete:
            raise ValueError("only a choice-only search space has a grid")
        seen: set = set()
        for block in self.blocks:
            names = list(block)
            for combo in itertools.product(*(block[n].values for n in names)):
                point = dict(zip(names, combo))
                if (key := point_key(point)) not in seen:
                    seen.add(key)
                    yield point

    def block_of(self, parameters: dict[str, Any]) -> int | None:
        """The index of the first block that could have given these parameters, or None."""
        for i, block in enumerate(self.blocks):
            if set(block) == set(parameters) and all(d.contains(parameters[n]) for n, d in block.items()):
                return i
        return None


def point_key(parameters: dict[str, Any]) -> tuple:
    """A hashable identity of a parameter dict (16 and 16.0 are the same point)."""
    return tuple(sorted(parameters.items()))


def parse_search_space(blocks: list[dict[str, Any]]) -> SearchSpace:
    if not isinstance(blocks, list) or not blocks:
        raise SpecError("", "the search space must be a non-empty list of blocks")
    return SearchSpace(tuple(_parse_block(block, f"[{i}]") for i, block in enumerate(blocks)))


def validate_for_algorithm(space: SearchSpace, algorithm: str) -> None:
    """Refuse a space the sampling algorithm cannot use: grid takes choice (and fixed values) only."""
    if algorithm not in ("random", "grid", "bayesian"):
        raise ValueError(f"unknown sampling algorithm {algorithm!r}; expected random, grid or bayesian")
    if algorithm == "grid":
        for i, block in enumerate(space.blocks):
            for name, d in block.items():
                if not d.is_choice:
                    raise SpecError(f"[{i}].{name}", f"grid sampling takes only choice or fixed values, not {d.type}; "
                                    "use random or bayesian sampling for a continuous range")


def _parse_block(block: Any, where: str) -> dict[str, Distribution]:
    if not isinstance(block, dict):
        raise SpecError(where, "a block must map hyperparameter names to distributions")
    keys: dict[str, str] = {}  # canonical -> as written
    for key in block:
        name = hp.canonical_name(str(key), where)
        if name in keys:
            raise SpecError(f"{where}.{key}", f"given twice (as {keys[name]!r} and {key!r})")
        keys[name] = str(key)
    parsed: dict[str, Distribution] = {}
    model_key = keys.get("model_name")
    models = _parse_value("model_name", block[model_key], f"{where}.{model_key}") if model_key \
        else Distribution("choice", (DEFAULT_MODEL,))
    if not models.is_choice:
        raise SpecError(f"{where}.{model_key}", f"model_name takes choice or a fixed value, not {models.type}")
    parsed["model_name"] = models
    for name, key in keys.items():
        if name == "model_name":
            continue
        field = f"{where}.{key}"
        for model in models.values:
            if not hp.PARAMS[name].takes(model):
                raise SpecError(field, f"model {model!r} does not take {key!r}")
        parsed[name] = _parse_value(name, block[key], field)
    return parsed


def _parse_value(name: str, raw: Any, field: str) -> Distribution:
    if isinstance(raw, str) and (m := _CALL.match(raw)) and m.group(1).lower() in SIGNATURES:
        raw = _parse_compact(raw, m.group(1).lower(), field)
    elif isinstance(raw, str) and _CALL.match(raw) and not _free_text(name):
        raise SpecError(field, f"unknown distribution in {raw!r}; expected one of {', '.join(SIGNATURES)}")
    if isinstance(raw, dict):
        return _parse_structured(name, raw, field)
    if isinstance(raw, (list, tuple)):
        raise SpecError(field, "expected a distribution, a compact form such as choice(16, 32), or a single value")
    return Distribution("choice", (_coerce(name, raw, field, "value"),))


def _free_text(name: str) -> bool:
    p = hp.PARAMS[name]
    return p.type is str and p.choices is None


def _parse_compact(text: str, kind: str, field: str) -> dict[str, Any]:
    """`uniform(0.0001, 0.01)` -> {type: uniform, min_value: 0.0001, max_value: 0.01}; literals only."""
    try:
        call = ast.parse(text.strip(), mode="eval").body
        if not isinstance(call, ast.Call) or any(isinstance(a, ast.Starred) for a in call.args):
            raise ValueError("not a plain call")
        args = [ast.literal_eval(a) for a in call.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg is not None}
        if len(kwargs) != len(call.keywords):
            raise ValueError("** is not allowed")
    except (SyntaxError, ValueError) as exc:
        raise SpecError(field, f"cannot read {text!r}: only literal arguments are allowed ({exc})") from None
    if kind == "choice":
        if kwargs:
            raise SpecError(field, "choice takes its values as arguments, e.g. choice('sgd', 'adam')")
        values = args[0] if len(args) == 1 and isinstance(args[0], (list, tuple)) else args
        return {"type": "choice", "values": list(values)}
    names = SIGNATURES[kind]
    if len(args) > len(names):
        raise SpecError(field, f"{kind} takes {len(names)} arguments ({', '.join(names)}), got {len(args)}")
    spec = {"type": kind, **dict(zip(names, args))}
    for k, v in kwargs.items():
        if k in spec:
            raise SpecError(field, f"{kind}: {k} given twice")
        spec[k] = v
    return spec


def _parse_structured(name: str, raw: dict[str, Any], field: str) -> Distribution:
    kind = raw.get("type")
    if not isinstance(kind, str) or kind.lower() not in SIGNATURES:
        raise SpecError(field, f"unknown distribution type {kind!r}; expected one of {', '.join(SIGNATURES)}")
    kind = kind.lower()
    wanted = SIGNATURES[kind]
    if extra := sorted(set(map(str, raw)) - {"type", *wanted}):
        raise SpecError(field, f"{kind} does not take {', '.join(extra)}; it takes {', '.join(wanted)}")
    if missing := [k for k in wanted if k not in raw]:
        raise SpecError(field, f"{kind} needs {', '.join(wanted)}; missing {', '.join(missing)}")
    p = hp.PARAMS[name]
    if kind == "choice":
        values = raw["values"]
        if not isinstance(values, (list, tuple)) or not values:
            raise SpecError(field, "choice needs a non-empty list of values")
        coerced = tuple(_coerce(name, v, field, "choice value") for v in values)
        if len(set(coerced)) != len(coerced):
            raise SpecError(field, f"choice lists a value twice: {list(values)}")
        return Distribution("choice", coerced)
    if p.type not in (int, float):
        raise SpecError(field, f"{name} is a {p.type.__name__}: it takes choice or a fixed value, not {kind}")
    args = {k: _number(raw[k], f"{kind}: {k}", field) for k in wanted}
    if kind == "randint":
        if not float(args["upper"]).is_integer() or args["upper"] < 1:
            raise SpecError(field, f"randint: upper must be an integer of at least 1, got {raw['upper']!r}")
        args["upper"] = int(args["upper"])
    if "q" in args and args["q"] <= 0:
        raise SpecError(field, f"{kind}: q must be greater than 0, got {raw['q']!r}")
    if "sigma" in args and args["sigma"] <= 0:
        raise SpecError(field, f"{kind}: sigma must be greater than 0, got {raw['sigma']!r}")
    if "min_value" in args and args["min_value"] >= args["max_value"]:
        raise SpecError(field, f"{kind}: min_value ({raw['min_value']}) must be below max_value ({raw['max_value']})")
    if p.type is int and (kind not in INT_TYPES or ("q" in args and not float(args["q"]).is_integer())):
        raise SpecError(field, f"{name} is an integer: use choice, randint or a q-distribution with an integer q, "
                        f"not {kind}" + (f" with q={raw['q']}" if "q" in args else ""))
    d = Distribution(kind, **args)
    log_hint = " (log distributions take natural logs: values run from exp(min_value) to exp(max_value))" \
        if kind in LOG_TYPES else ""
    try:
        if (b := d.bounds()) is not None:
            _coerce(name, b[0], field, f"{kind} lowest value", log_hint)
            _coerce(name, b[1], field, f"{kind} highest value", log_hint)
        elif d.mu is not None:
            _coerce(name, d.quantise(math.exp(d.mu) if kind in LOG_TYPES else d.mu), field, f"{kind} centre", log_hint)
    except OverflowError:
        raise SpecError(field, f"{kind}: exp() of the bounds overflows{log_hint}") from None
    return d


def _number(value: Any, what: str, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpecError(field, f"{what} must be a finite number, got {value!r}")
    return value


def _coerce(name: str, value: Any, field: str, what: str, hint: str = "") -> Any:
    try:
        return hp.coerce(name, value)
    except SpecError as exc:
        raise SpecError(field, f"{what}: {exc.reason}{hint}") from None


def searched_keys(space: SearchSpace) -> set[str]:
    """The hyperparameters that differ between trials: sampled ones, and fixed ones that differ by block
    (the model's name and size are left out: every line names them anyway)."""
    values: dict[str, set] = {}
    searched = set()
    for block in space.blocks:
        for key, distribution in block.items():
            if not distribution.is_choice or len(distribution.values) > 1:
                searched.add(key)
            else:
                values.setdefault(key, set()).add(repr(distribution.values[0]))
    return (searched | {key for key, seen in values.items() if len(seen) > 1}) - {"model_name", "model_size"}
