"""Label and field selectors as the API server parses and applies them."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from apiserver.errors import bad_request

Matcher = Callable[[Mapping[str, Any]], bool]

_REQUIREMENT = re.compile(r"""^\s*(?:
    (?P<absent>!)\s*(?P<akey>[^\s!=<>(),]+) |
    (?P<key>[^\s!=<>(),]+)\s*(?:
        (?P<op>==|=|!=|<|>)\s*(?P<value>[^\s!=<>(),]*) |
        \s(?P<setop>in|notin)\s*\((?P<values>[^()]*)\) |
    )
)\s*$""", re.VERBOSE)


def _split(text: str) -> list[str]:
    """Split on the commas that are not inside `in (...)` sets."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return [part for part in parts if part.strip()]


def label_selector(text: str | None) -> Matcher | None:
    """`app=x,tier!=db,env in (a,b),!legacy,release`; None for no selector."""
    if not text or not text.strip():
        return None
    tests = []
    for part in _split(text):
        found = _REQUIREMENT.match(part)
        if not found:
            raise bad_request(f"unable to parse requirement: {part.strip()!r}: found unexpected input")
        if found["absent"]:
            key = found["akey"]
            tests.append(lambda labels, key=key: key not in labels)
        elif found["setop"]:
            key, values = found["key"], {v.strip() for v in found["values"].split(",") if v.strip()}
            if found["setop"] == "in":
                tests.append(lambda labels, key=key, values=values: labels.get(key) in values)
            else:
                tests.append(lambda labels, key=key, values=values: labels.get(key) not in values)
        elif found["op"] in ("=", "=="):
            key, value = found["key"], found["value"]
            tests.append(lambda labels, key=key, value=value: labels.get(key) == value)
        elif found["op"] == "!=":
            key, value = found["key"], found["value"]
            tests.append(lambda labels, key=key, value=value: labels.get(key) != value)
        elif found["op"] in ("<", ">"):
            key, op = found["key"], found["op"]
            try:
                bound = int(found["value"])
            except ValueError:
                raise bad_request(f"unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an "
                                  f"integer: {part.strip()!r}") from None
            tests.append(lambda labels, key=key, op=op, bound=bound: _compare(labels.get(key), op, bound))
        else:
            key = found["key"]
            tests.append(lambda labels, key=key: key in labels)
    return lambda obj: all(test((obj.get("metadata") or {}).get("labels") or {}) for test in tests)


def _compare(value: str | None, op: str, bound: int) -> bool:
    try:
        number = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return number < bound if op == "<" else number > bound


def _field(obj: Mapping[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_TERM = re.compile(r"^(?P<field>[^=!]+?)\s*(?P<op>==|=|!=)\s*(?P<value>.*)$")


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def field_selector(text: str | None, supported: frozenset[str], resource: str) -> Matcher | None:
    """`metadata.name=x,status.phase!=Running` over the fields this resource supports; None for no selector."""
    if not text or not text.strip():
        return None
    tests = []
    for part in re.split(r"(?<!\\),", text):
        if not part.strip():
            continue
        found = _TERM.match(part.strip())
        if not found:
            raise bad_request(f"invalid selector: {text!r}; can't understand {part!r}")
        field, value = found["field"].strip(), _unescape(found["value"].strip())
        if field not in supported:
            raise bad_request(f'field label not supported: {field}', details={"kind": resource})
        if found["op"] == "!=":
            tests.append(lambda obj, field=field, value=value: _field(obj, field) != value)
        else:
            tests.append(lambda obj, field=field, value=value: _field(obj, field) == value)
    return lambda obj: all(test(obj) for test in tests)


def exact_name(text: str | None) -> str | None:
    """The name a field selector pins down with `metadata.name=X` (RBAC authorizes it as that name)."""
    for part in re.split(r"(?<!\\),", text or ""):
        found = _TERM.match(part.strip())
        if found and found["field"].strip() == "metadata.name" and found["op"] != "!=":
            return _unescape(found["value"].strip())
    return None
