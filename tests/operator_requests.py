"""Every request the operator made to the emulator during this test session, in RBAC's terms, for the RBAC test
(tests/test_operator_rbac.py). The emulator fixture (conftest.py) feeds it; the trainer, played by the tests or run
as a process, speaks as TRAINER_USER, so that its requests are held to the trial role, not the operator's."""

from __future__ import annotations

import json
import os
from pathlib import Path

OPERATOR_USERS = ("operator", "active", "standby")  # the users the operator tests give autodetect's operator
TRAINER_USER = "trainer"
RECORD_FILE_ENV = "AUTODETECT_RECORD_REQUESTS"  # a subprocess session writes what it recorded here, as JSON lines

# (test node id, user, verb, api group, resource incl. /subresource, namespace: "" when cluster-wide)
RECORDED: list[tuple[str, str, str, str, str, str]] = []


def record(test: str, records) -> None:
    for r in records:
        if r.resource is not None and (r.status or r.verb == "watch"):  # a watch is open (status 0) to the end
            RECORDED.append((test, r.user, r.verb, r.api_group or "", r.resource, r.namespace))


def write(path: Path) -> None:
    with path.open("a", encoding="utf-8") as out:
        for row in RECORDED:
            out.write(json.dumps(row) + "\n")


def requested_file() -> Path | None:
    return Path(os.environ[RECORD_FILE_ENV]) if os.environ.get(RECORD_FILE_ENV) else None
