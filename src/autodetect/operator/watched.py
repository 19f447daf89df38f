"""The trials' Jobs and pods as the operator's watches last delivered them, by namespace and experiment. A pass reads
its trials' runs here rather than listing them: the watch lists them once, then streams each change, and a pass
costs no large reads (Jobs carry their pod template, pods their whole spec). The trials themselves, which the
engine decides on, are listed on every pass.

A moment late is safe: a Job not seen yet reads as a Job to make, whose create answers 409 (names are
deterministic), and a change not seen yet is seen on the pass its own event wakes. Missing is not safe (a trial
asked to stop whose pod seems gone ends Pruned): so an experiment's loop lists its Jobs and pods on its first pass,
after a start, a restart or a takeover, before kopf's own listing may have come."""

from __future__ import annotations

import threading
from collections import defaultdict

from autodetect.operator.kube import JOBS, PODS
from autodetect.vocabulary import EXPERIMENT_LABEL

DELETED = "DELETED"


class WatchedRuns:
    def __init__(self):
        self._lock = threading.Lock()  # fed from kopf's event loop, read from the passes' threads
        self._objects: dict[tuple[str, str, str], dict[str, dict]] = defaultdict(dict)
        self._listed: set[tuple[str, str]] = set()  # (namespace, experiment) listed since its loop started

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

    def listed(self, namespace: str, experiment: str) -> bool:
        with self._lock:
            return (namespace, experiment) in self._listed

    def fill(self, namespace: str, experiment: str, jobs: list[dict], pods: list[dict]) -> None:
        """What a pass listed of an experiment's Jobs and pods."""
        for plural, objects in ((JOBS.plural, jobs), (PODS.plural, pods)):
            for obj in objects:
                self.seen(plural, None, obj)
        with self._lock:
            self._listed.add((namespace, experiment))

    def unlisted(self, namespace: str, experiment: str) -> None:
        """An experiment's loop starts: its next pass lists again."""
        with self._lock:
            self._listed.discard((namespace, experiment))
