"""The trials' Jobs and pods as the operator's watches last delivered them, by namespace and experiment. A pass reads
its trials' runs here rather than listing them: the watch lists them once, then streams each change, and a pass
costs no large reads (Jobs carry their pod template, pods their whole spec). The trials themselves, which the
engine decides on, are listed on every pass.

kopf lists each resource before it watches it, so after a restart this holds what the cluster holds, a moment late.
A moment late is safe here: a Job not seen yet reads as a Job to make, whose create answers 409 (names are
deterministic); a change not seen yet is seen on the pass its own event wakes."""

from __future__ import annotations

import threading
from collections import defaultdict

from autodetect.vocabulary import EXPERIMENT_LABEL

DELETED = "DELETED"


class WatchedRuns:
    def __init__(self):
        self._lock = threading.Lock()  # fed from kopf's event loop, read from the passes' threads
        self._objects: dict[tuple[str, str, str], dict[str, dict]] = defaultdict(dict)

    def seen(self, plural: str, event_type: str | None, obj: dict) -> None:
        """A watch event (type None: kopf's initial listing) or a write's answer, of a Job or a pod."""
        meta = obj["metadata"]
        key = (plural, meta["namespace"], (meta.get("labels") or {}).get(EXPERIMENT_LABEL, ""))
        with self._lock:
            if event_type != DELETED:
                self._objects[key][meta["name"]] = obj
            elif self._objects.get(key, {}).pop(meta["name"], None) is not None and not self._objects[key]:
                del self._objects[key]

    def of(self, plural: str, namespace: str, experiment: str) -> list[dict]:
        with self._lock:
            return list(self._objects.get((plural, namespace, experiment), {}).values())
