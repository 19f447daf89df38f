"""A Kubernetes API server emulator for kopf, the kubernetes client and kubectl, on kmock's KubernetesEmulator.

kmock serves the HTTP (its `Server`), keeps the request-matching DSL (a test's own `emulator['get /x'] << ...`
reactions answer first) and knows the discovery facts of the built-in kinds. This subclass replaces kmock's
object handling with what a real API server does: resourceVersion, uid, generation and timestamps; the status
subresource split from the main resource; merge, strategic merge and JSON patches with their preconditions; CRD
schemas with pruning, defaulting and validation; selectors; watches from a resourceVersion; finalizers and garbage
collection by ownerReferences; errors worded as the real server words them; a request log in RBAC's terms; and
injected faults.

The store is touched under one lock by plain functions, so a test may read and write it from its own thread (the
`get`/`list`/`create`/`patch`/`delete`/`wait_for` methods) while the server runs on its event loop in another.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import dataclasses
import datetime
import json
import random
import threading
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp.web
import kmock
import multidict
import yaml
from kmock._internal import rendering  # kmock's parsed request: what its DSL matches against

from apiserver import builtins, errors, patches, selectors, tables
from apiserver.errors import ApiError
from apiserver.resources import ResourceType, builtin_types, custom_types
from apiserver.schemas import BuiltinSchemas

T = TypeVar("T")
CRDS = "apiextensions.k8s.io/v1/customresourcedefinitions"
NAMESPACES = "v1/namespaces"
INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
GENERATED_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what the API server draws generateName suffixes from
SERVER_VERSION = {"major": "1", "minor": "35", "gitVersion": "v1.35.0", "gitCommit": "emulated",
                  "gitTreeState": "clean", "buildDate": "2025-12-17T00:00:00Z", "goVersion": "go1.25.5",
                  "compiler": "gc",
                  "platform": "linux/amd64"}
ANY = "*"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


@dataclasses.dataclass
class Record:
    """One request the emulator served, with the attributes RBAC authorizes (resource includes `/subresource`;
    api_group and resource are None for a non-resource URL such as /api or /version)."""
    user: str
    method: str
    path: str
    query: dict[str, str]
    verb: str
    api_group: str | None
    resource: str | None
    namespace: str
    name: str
    status: int = 0  # 0 while the request is being served (an open watch)


@dataclasses.dataclass
class Fault:
    """The next `times` writes that match answer `code` as the real server words it (then the fault is spent).

    `resource` is a plural, `plural.group` or `group/version/plural`; `subresource` None matches the main resource
    only, "*" any; `commit` carries the write out before answering the error (a write whose answer was lost)."""
    code: int
    method: str | None = None
    resource: str | None = None
    subresource: str | None = ANY
    namespace: str | None = None
    name: str | None = None
    times: int = 1
    commit: bool = False
    reason: str | None = None
    hits: list[Record] = dataclasses.field(default_factory=list)

    def matches(self, method: str, rt: ResourceType, subresource: str | None, namespace: str | None,
                name: str | None) -> bool:
        return (self.times > 0 and self.method in (None, method)
                and self.resource in (None, rt.plural, rt.group_resource, rt.key)
                and (self.subresource == ANY or self.subresource == subresource)
                and self.namespace in (None, namespace) and self.name in (None, name))

    def error(self, rt: ResourceType, name: str) -> ApiError:
        match self.code:
            case 409 if self.reason == "AlreadyExists":
                return errors.already_exists(rt.group, rt.plural, name)
            case 409:
                return errors.conflict(rt.group, rt.plural, name)
            case 422:
                return errors.invalid(rt.group, rt.kind, name, [("metadata.name", f'Invalid value: "{name}": '
                                                                                  "injected fault")])
            case 404:
                return errors.not_found(rt.group, rt.plural, name)
            case 429:
                return errors.too_many_requests()
            case 503:
                return errors.unavailable()
            case _:
                return errors.internal("injected fault")


@dataclasses.dataclass
class Event:
    rv: int
    type: str
    obj: dict[str, Any]
    old: dict[str, Any] | None = None
    _line: bytes | None = None

    def line(self) -> bytes:
        if self._line is None:
            self._line = _dumps({"type": self.type, "object": self.obj}) + b"\n"
        return self._line


class Watcher:
    """One open watch: what it selects, and the events waiting to be written to it."""

    def __init__(self, emulator: Emulator, rt: ResourceType, namespace: str | None, name: str | None,
                 labels: selectors.Matcher | None, fields: selectors.Matcher | None, as_table: bool):
        self.emulator, self.rt, self.namespace, self.name = emulator, rt, namespace, name
        self.labels, self.fields, self.as_table = labels, fields, as_table
        self.pending: collections.deque[bytes] = collections.deque()
        self.wakeup = asyncio.Event()
        self.done = False

    def selects(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        meta = obj["metadata"]
        return ((self.namespace is None or meta.get("namespace") == self.namespace)
                and (self.name is None or meta["name"] == self.name)
                and (self.labels is None or self.labels(obj)) and (self.fields is None or self.fields(obj)))

    def offer(self, event: Event) -> None:
        selected = self.selects(event.obj)
        kind, obj = event.type, event.obj
        if kind == "MODIFIED":
            was = self.selects(event.old)
            if not selected and not was:
                return
            if not was:
                kind = "ADDED"
            elif not selected:  # left the selection: the real watch cache says DELETED, with the old state
                assert event.old is not None
                kind, obj = "DELETED", {**event.old, "metadata": {**event.old["metadata"],
                                                                  "resourceVersion": str(event.rv)}}
        elif not selected:
            return
        self.push(event.line() if kind == event.type and obj is event.obj and not self.as_table
                  and obj.get("apiVersion") == self.rt.api_version else self.render(kind, obj))

    def render(self, kind: str, obj: dict[str, Any]) -> bytes:
        obj = self.emulator._served(self.rt, obj)
        if self.as_table:
            obj = tables.table(self.rt, [obj], obj["metadata"]["resourceVersion"])
        return _dumps({"type": kind, "object": obj}) + b"\n"

    def push(self, line: bytes) -> None:
        self.pending.append(line)
        self.emulator._wake(self)


class Emulator(kmock.KubernetesEmulator):
    """The API server. `Emulator(crds=[...])`, then `with emulator.serve(): ...` serves it on 127.0.0.1."""

    def __init__(self, *, crds: Iterable[str | Path | dict[str, Any]] = (), validate_builtins: bool = True,
                 history: int = 10_000):
        super().__init__()
        self._mutex = threading.RLock()
        self._changed = threading.Condition(self._mutex)
        self._rv = 0
        self._types: dict[str, ResourceType] = {}
        self._storage_types: dict[tuple[str, str], ResourceType] = {}
        self._store: dict[tuple[str, str], dict[str | None, dict[str, dict[str, Any]]]] = {}
        self._uids: dict[str, tuple[tuple[str, str], str | None, str]] = {}
        self._dependents: dict[str, set[tuple[tuple[str, str], str | None, str]]] = {}
        self._namespace_sizes: collections.Counter[str] = collections.Counter()
        self._history: dict[tuple[str, str], collections.deque[Event]] = {}
        self._compacted: dict[tuple[str, str], int] = {}
        self._watchers: dict[tuple[str, str], set[Watcher]] = collections.defaultdict(set)
        self._history_size = history
        self._builtin_schemas = BuiltinSchemas.shared() if validate_builtins else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._stopping: asyncio.Event | None = None
        self.log: list[Record] = []
        self.faults: list[Fault] = []
        self.internal_errors: list[str] = []
        self.pod_logs: dict[tuple[str, str], str] = {}
        for rt in builtin_types():
            self._register(rt)
        for name in INITIAL_NAMESPACES:
            self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        for crd in crds:
            for document in self._documents(crd):
                self.create(document)

    def __attrs_post_init__(self) -> None:
        pass  # kmock's fallback reactions are replaced by _serve(); only a test's own reactions go in the DSL

    @staticmethod
    def _documents(source: str | Path | dict[str, Any]) -> list[dict[str, Any]]:
        if isinstance(source, dict):
            return [source]
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        return [doc for doc in yaml.load_all(Path(source).read_text(encoding="utf-8"), Loader=loader) if doc]

    # ---- serving ----------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def serve(self, host: str = "127.0.0.1", port: int | None = None) -> Iterator[Emulator]:
        """Serve over HTTP from a thread with its own event loop; `self.url` (kmock's) is where, while it runs."""
        ready, failure = threading.Event(), []

        async def main() -> None:
            self._loop, self._loop_thread = asyncio.get_running_loop(), threading.get_ident()
            self._stopping = asyncio.Event()
            try:
                async with self, kmock.Server(self, host=host, port=port) as server:
                    ready.set()
                    await self._stopping.wait()
                    with self._mutex:
                        watchers = [w for group in self._watchers.values() for w in group]
                    for watcher in watchers:
                        watcher.done = True
                        watcher.wakeup.set()
                    await asyncio.sleep(0.05)  # let the watch streams end before the server closes
            except BaseException as error:
                failure.append(error)
                ready.set()
                raise

        thread = threading.Thread(target=asyncio.run, args=(main(),), name="apiserver-emulator", daemon=True)
        thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        try:
            yield self
        finally:
            assert self._loop is not None and self._stopping is not None
            self._loop.call_soon_threadsafe(self._stopping.set)
            thread.join(30)
            self._loop = self._loop_thread = None

    def kubeconfig(self, path: str | Path, user: str = "tester", namespace: str = "default") -> Path:
        """A kubeconfig for this server; `user` becomes the bearer token, and so the user in the request log."""
        path = Path(path)
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "emulator", "preferences": {},
            "clusters": [{"name": "emulator", "cluster": {"server": str(self.url).rstrip("/")}}],
            "users": [{"name": user, "user": {"token": user}}],
            "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": user,
                                                           "namespace": namespace}}]}), encoding="utf-8")
        return path

    def _wake(self, watcher: Watcher) -> None:
        if self._loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            watcher.wakeup.set()
        else:
            self._loop.call_soon_threadsafe(watcher.wakeup.set)

    # ---- resource types -----------------------------------------------------------------------------------------

    def _register(self, rt: ResourceType) -> None:
        self._types[rt.key] = rt
        self._storage_types.setdefault(rt.storage, rt)
        self._store.setdefault(rt.storage, {})
        self._history.setdefault(rt.storage, collections.deque(maxlen=self._history_size))
        self._compacted.setdefault(rt.storage, 0)

    def resource(self, name: str) -> ResourceType:
        """A resource type by `group/version/plural`, plural, `plural.group`, kind or short name."""
        if name in self._types:
            return self._types[name]
        found = {rt.storage: rt for rt in self._types.values()
                 if name.lower() in (rt.plural, rt.group_resource, rt.kind.lower(), rt.singular, *rt.short_names)}
        if len(found) != 1:
            raise KeyError(f"{'no' if not found else 'more than one'} resource type is called {name!r}")
        return next(iter(found.values()))

    def _type_of(self, obj: dict[str, Any]) -> ResourceType:
        for rt in self._types.values():
            if rt.api_version == obj.get("apiVersion") and rt.kind == obj.get("kind"):
                return rt
        raise KeyError(f"no resource type serves {obj.get('apiVersion')} {obj.get('kind')}")

    def _served(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        return obj if obj.get("apiVersion") == rt.api_version else {**obj, "apiVersion": rt.api_version}

    # ---- the store ---------------------------------------------------------------------------------------------

    def _lookup(self, rt: ResourceType, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self._store[rt.storage].get(namespace, {}).get(name)

    def _existing(self, rt: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        obj = self._lookup(rt, namespace, name)
        if obj is None:
            raise errors.not_found(rt.group, rt.plural, name)
        return obj

    def _select(self, rt: ResourceType, namespace: str | None, labels: selectors.Matcher | None = None,
                fields: selectors.Matcher | None = None) -> list[dict[str, Any]]:
        buckets = self._store[rt.storage]
        spaces = [namespace] if namespace is not None or not rt.namespaced else sorted(buckets, key=str)
        found = []
        for space in spaces:
            for name in sorted(buckets.get(space, {})):
                obj = buckets[space][name]
                if (labels is None or labels(obj)) and (fields is None or fields(obj)):
                    found.append(obj)
        return found

    def _emit(self, rt: ResourceType, event: Event) -> None:
        history = self._history[rt.storage]
        if len(history) == history.maxlen:
            self._compacted[rt.storage] = history[0].rv
        history.append(event)
        for watcher in self._watchers.get(rt.storage, ()):
            watcher.offer(event)
        self._changed.notify_all()

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _index(self, rt: ResourceType, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        meta = (new or old or {})["metadata"]
        key = (rt.storage, meta.get("namespace"), meta["name"])
        old_owners = {ref["uid"] for ref in ((old or {}).get("metadata") or {}).get("ownerReferences") or ()}
        new_owners = {ref["uid"] for ref in ((new or {}).get("metadata") or {}).get("ownerReferences") or ()}
        for uid in old_owners - new_owners:
            self._dependents.get(uid, set()).discard(key)
        for uid in new_owners - old_owners:
            self._dependents.setdefault(uid, set()).add(key)

    def _commit(self, rt: ResourceType, old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
        """Store a new state (no change: nothing happens, as on a real server) and tell the watchers."""
        if old is not None and new == old:
            return old
        meta = new["metadata"]
        meta["resourceVersion"] = self._next_rv()
        namespace, name = meta.get("namespace"), meta["name"]
        self._store[rt.storage].setdefault(namespace, {})[name] = new
        self._uids[meta["uid"]] = (rt.storage, namespace, name)
        self._index(rt, old, new)
        if old is None and namespace is not None:
            self._namespace_sizes[namespace] += 1
        self._emit(rt, Event(self._rv, "ADDED" if old is None else "MODIFIED", new, old))
        if rt.key == CRDS:
            self._crd_changed(new)
        elif rt.key == NAMESPACES and old is None:
            self._create(self._types["v1/serviceaccounts"], name, {
                "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}})
        return new

    def _remove(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        """Take an object out of the store (its finalizers are gone), then collect its dependents."""
        meta = obj["metadata"]
        namespace, name, uid = meta.get("namespace"), meta["name"], meta["uid"]
        gone = {**obj, "metadata": {**meta, "resourceVersion": self._next_rv()}}
        del self._store[rt.storage][namespace][name]
        del self._uids[uid]
        self._index(rt, obj, None)
        self._emit(rt, Event(self._rv, "DELETED", gone))
        if rt.key == CRDS:
            self._crd_removed(obj)
        self._collect(uid)
        for ref in meta.get("ownerReferences") or ():
            self._release_foreground(ref["uid"])
        if namespace is not None:
            self._namespace_sizes[namespace] -= 1
            self._finish_namespace(namespace)
        elif rt.key == NAMESPACES:
            self._namespace_sizes.pop(name, None)
        return gone

    # ---- garbage collection --------------------------------------------------------------------------------------

    def _collect(self, owner_uid: str) -> None:
        """Background propagation: a dependent whose owners are all gone is deleted; one that keeps a live owner
        loses the dangling reference."""
        for storage, namespace, name in sorted(self._dependents.pop(owner_uid, set()), key=str):
            rt = self._storage_types[storage]
            dependent = self._lookup(rt, namespace, name)
            if dependent is None:
                continue
            refs = dependent["metadata"].get("ownerReferences") or []
            if any(ref["uid"] != owner_uid and ref["uid"] in self._uids for ref in refs):
                self._drop_owner(rt, dependent, owner_uid)
            else:
                self._delete(rt, namespace, name, propagation="Background")

    def _drop_owner(self, rt: ResourceType, obj: dict[str, Any], owner_uid: str) -> None:
        new = copy.deepcopy(obj)
        new["metadata"]["ownerReferences"] = [r for r in new["metadata"]["ownerReferences"] if r["uid"] != owner_uid]
        if not new["metadata"]["ownerReferences"]:
            del new["metadata"]["ownerReferences"]
        self._commit(rt, obj, new)

    def _orphan(self, owner_uid: str) -> None:
        for storage, namespace, name in sorted(self._dependents.pop(owner_uid, set()), key=str):
            rt = self._storage_types[storage]
            dependent = self._lookup(rt, namespace, name)
            if dependent is not None:
                self._drop_owner(rt, dependent, owner_uid)

    def _release_foreground(self, owner_uid: str) -> None:
        if owner_uid not in self._uids or self._dependents.get(owner_uid):
            return
        storage, namespace, name = self._uids[owner_uid]
        rt = self._storage_types[storage]
        owner = self._existing(rt, namespace, name)
        if "foregroundDeletion" in (owner["metadata"].get("finalizers") or ()):
            new = copy.deepcopy(owner)
            new["metadata"]["finalizers"].remove("foregroundDeletion")
            self._settle(rt, owner, new)

    def _settle(self, rt: ResourceType, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        """Commit, or remove when a deleted object's last finalizer went."""
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            new["metadata"].pop("finalizers", None)
            return self._remove(rt, new)
        return self._commit(rt, old, new)

    def _collect_dangling(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        """A new object whose owners do not exist is collected, as the garbage collector does soon after."""
        refs = obj["metadata"].get("ownerReferences") or []
        if refs and not any(ref["uid"] in self._uids for ref in refs):
            self._delete(rt, obj["metadata"].get("namespace"), obj["metadata"]["name"], propagation="Background")

    # ---- namespaces and CRDs -----------------------------------------------------------------------------------

    def _finish_namespace(self, namespace: str) -> None:
        rt = self._types[NAMESPACES]
        space = self._lookup(rt, None, namespace)
        if (space is not None and space["metadata"].get("deletionTimestamp") and not self._namespace_sizes[namespace]
                and not space["metadata"].get("finalizers")):
            self._remove(rt, space)

    def _empty_namespace(self, namespace: str) -> None:
        for storage, buckets in list(self._store.items()):
            rt = self._storage_types[storage]
            for name in sorted(buckets.get(namespace, {})):
                if name in buckets.get(namespace, {}):
                    self._delete(rt, namespace, name, propagation="Background")
        self._finish_namespace(namespace)

    def _crd_changed(self, crd: dict[str, Any]) -> None:
        storage = (crd["spec"]["group"], crd["spec"]["names"]["plural"])
        for key in [key for key, rt in self._types.items() if rt.storage == storage]:
            del self._types[key]
        self._storage_types.pop(storage, None)
        for rt in custom_types(crd):
            self._register(rt)

    def _crd_removed(self, crd: dict[str, Any]) -> None:
        storage = (crd["spec"]["group"], crd["spec"]["names"]["plural"])
        rt = self._storage_types.get(storage)
        if rt is None:
            return
        for obj in self._select(rt, None):
            self._remove(rt, obj)
        for key in [key for key, each in self._types.items() if each.storage == storage]:
            del self._types[key]

    # ---- writes ------------------------------------------------------------------------------------------------

    def _admit(self, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None, validation: str,
               ) -> list[str]:
        """Prune, default and validate as the server does before it stores; returns the warnings."""
        name = obj["metadata"].get("name", "")
        causes = builtins.prepare_write(rt.key, obj)
        dropped: list[str] = []
        if rt.schema is not None:
            obj, dropped, more = rt.schema.admit(obj, old)
            causes += more
        elif self._builtin_schemas is not None and not rt.custom:
            obj, dropped, more = self._builtin_schemas.admit(obj, old)
            causes += more
        if dropped and validation == "Strict":
            unknown = ", ".join(f'unknown field "{field}"' for field in dropped)
            raise errors.bad_request(f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                                     f"strict decoding error: {unknown}")
        if old is None:
            causes = builtins.name_causes(rt.key, name) + causes
        causes += builtins.metadata_causes(obj["metadata"], old)
        causes += builtins.validate(rt.key, obj, old)
        if rt.key == CRDS:
            causes += self._crd_causes(obj)
        if causes:
            raise errors.invalid(rt.group, rt.kind, name, causes)
        return [f'unknown field "{field}"' for field in dropped] if validation != "Ignore" else []

    @staticmethod
    def _crd_causes(crd: dict[str, Any]) -> list[tuple[str, str]]:
        spec = crd.get("spec") or {}
        expected = f"{(spec.get('names') or {}).get('plural')}.{spec.get('group')}"
        if crd["metadata"].get("name") != expected:
            return [("metadata.name", f'Invalid value: "{crd["metadata"].get("name")}": must be spec.names.plural+"."'
                                      f"+spec.group")]
        return []

    def _check_kind(self, rt: ResourceType, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request was in an unknown format - accepted media types "
                                     "include: application/json, application/yaml")
        if body.get("kind") and body["kind"] != rt.kind:
            raise errors.bad_request(f"the server could not find the requested resource: kind {body['kind']} is "
                                     f"not {rt.kind}")
        if body.get("apiVersion") and body["apiVersion"] not in (rt.api_version, ):
            raise errors.bad_request(f"the API version in the data ({body['apiVersion']}) does not match the "
                                     f"expected API version ({rt.api_version})")
        return body

    def _create(self, rt: ResourceType, namespace: str | None, body: Any, *, validation: str = "Warn",
                dry_run: bool = False) -> tuple[dict[str, Any], list[str]]:
        obj = copy.deepcopy(self._check_kind(rt, body))
        meta = obj.setdefault("metadata", {})
        if rt.namespaced:
            if meta.get("namespace") and namespace and meta["namespace"] != namespace:
                raise errors.bad_request("the namespace of the provided object does not match the namespace sent "
                                         "on the request")
            namespace = namespace or meta.get("namespace")
            if not namespace:
                raise errors.bad_request("an empty namespace may not be set during creation")
            space = self._lookup(self._types[NAMESPACES], None, namespace)
            if space is None:
                raise errors.not_found("", "namespaces", namespace)
            if space["metadata"].get("deletionTimestamp"):
                raise errors.forbidden(rt.group, rt.plural, meta.get("name", ""),
                                       f"unable to create new content in namespace {namespace} because it is being "
                                       f"terminated")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
            namespace = None
        if meta.get("resourceVersion"):
            raise errors.internal("resourceVersion should not be set on objects to be created")
        if not meta.get("name") and meta.get("generateName"):
            for _ in range(8):
                meta["name"] = meta["generateName"] + "".join(random.choices(GENERATED_NAME_ALPHABET, k=5))
                if self._lookup(rt, namespace, meta["name"]) is None:
                    break
        if not meta.get("name"):
            raise errors.invalid(rt.group, rt.kind, "", [("metadata.name", "Required value: name or generateName "
                                                                           "is required")])
        if self._lookup(rt, namespace, meta["name"]) is not None:
            raise errors.already_exists(rt.group, rt.plural, meta["name"])
        for field in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation",
                      "selfLink", "managedFields"):
            meta.pop(field, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        if rt.has_status:
            obj.pop("status", None)
        builtins.prepare_create(rt.key, obj)
        if rt.key == CRDS:
            obj["status"] = self._crd_status(obj)
        warnings = self._admit(rt, obj, None, validation)
        if dry_run:
            return obj, warnings
        stored = self._commit(rt, None, obj)
        self._collect_dangling(rt, stored)
        return stored, warnings

    @staticmethod
    def _crd_status(crd: dict[str, Any]) -> dict[str, Any]:
        stamp = now()
        conditions = [{"type": kind, "status": "True", "reason": reason, "message": message,
                       "lastTransitionTime": stamp}
                      for kind, reason, message in (("NamesAccepted", "NoConflicts", "no conflicts found"),
                                                    ("Established", "InitialNamesAccepted",
                                                     "the initial names have been accepted"))]
        stored = [v["name"] for v in crd.get("spec", {}).get("versions", ()) if v.get("storage")]
        return {"acceptedNames": crd.get("spec", {}).get("names", {}), "conditions": conditions,
                "storedVersions": stored}

    def _write(self, rt: ResourceType, namespace: str | None, name: str, candidate: Any, subresource: str | None,
               *, validation: str = "Warn", dry_run: bool = False, require_version: bool = False,
               ) -> tuple[dict[str, Any], list[str]]:
        """An update of the main resource or of its status, from the full new state a PUT or PATCH gives."""
        old = self._existing(rt, namespace, name)
        candidate = copy.deepcopy(self._check_kind(rt, candidate))
        given = candidate.get("metadata") or {}
        if given.get("name") not in (None, name):
            raise errors.bad_request(f"the name of the object ({given['name']}) does not match the name on the URL "
                                     f"({name})")
        version = given.get("resourceVersion")
        if version and version != old["metadata"]["resourceVersion"]:
            raise errors.conflict(rt.group, rt.plural, name)
        if not version and require_version and rt.custom:
            raise errors.invalid(rt.group, rt.kind, name, [("metadata.resourceVersion",
                                                             "Invalid value: 0x0: must be specified for an update")])
        if subresource == "status":
            new = copy.deepcopy(old)
            if "status" in candidate:
                new["status"] = candidate["status"]
            else:
                new.pop("status", None)
        elif subresource == "finalize":
            new = copy.deepcopy(old)
            new.setdefault("spec", {})["finalizers"] = (candidate.get("spec") or {}).get("finalizers") or []
        else:
            new = candidate
            if rt.has_status:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            meta = new.setdefault("metadata", {})
            for field in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                          "generation", "namespace", "name", "resourceVersion"):
                if field in old["metadata"]:
                    meta[field] = old["metadata"][field]
                else:
                    meta.pop(field, None)
            builtins.prepare_update(rt.key, new, old)
        new["apiVersion"], new["kind"] = rt.api_version, rt.kind
        warnings = self._admit(rt, new, old, validation)
        if self._spec_of(rt, new) != self._spec_of(rt, old):
            new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        if dry_run:
            return new, warnings
        return self._settle(rt, old, new), warnings

    @staticmethod
    def _spec_of(rt: ResourceType, obj: dict[str, Any]) -> Any:
        if rt.custom:
            return {key: value for key, value in obj.items() if key not in ("metadata", "status", "apiVersion", "kind")}
        return obj.get("spec")

    def _patch(self, rt: ResourceType, namespace: str | None, name: str, patch: Any, content_type: str,
               subresource: str | None, *, validation: str = "Warn", dry_run: bool = False,
               ) -> tuple[dict[str, Any], list[str], bool]:
        current = self._lookup(rt, namespace, name)
        if content_type == patches.APPLY_PATCH and current is None:
            obj, warnings = self._create(rt, namespace, {**patch, "metadata": {**patch.get("metadata", {}),
                                                                                "name": name}},
                                         validation=validation, dry_run=dry_run)
            return obj, warnings, True
        if current is None:
            raise errors.not_found(rt.group, rt.plural, name)
        base = copy.deepcopy(self._served(rt, current))
        if content_type == patches.JSON_PATCH:
            patched = patches.json_patch(base, patch)
        elif content_type == patches.MERGE_PATCH:
            patched = patches.merge_patch(base, patch)
        elif content_type in (patches.STRATEGIC_MERGE_PATCH, patches.APPLY_PATCH):
            if rt.custom and content_type == patches.STRATEGIC_MERGE_PATCH:
                raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                                                            f"accepted media types include: "
                                                            f"{patches.JSON_PATCH}, {patches.MERGE_PATCH}, "
                                                            f"{patches.APPLY_PATCH}")
            patched = (patches.merge_patch if rt.custom else patches.strategic_merge_patch)(base, patch)
        else:
            raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - accepted "
                                                        f"media types include: {patches.JSON_PATCH}, "
                                                        f"{patches.MERGE_PATCH}, {patches.STRATEGIC_MERGE_PATCH}, "
                                                        f"{patches.APPLY_PATCH}")
        if not isinstance(patched, dict):
            raise errors.bad_request("the patch does not give an object")
        obj, warnings = self._write(rt, namespace, name, patched, subresource, validation=validation,
                                    dry_run=dry_run)
        return obj, warnings, False

    def _delete(self, rt: ResourceType, namespace: str | None, name: str, *, propagation: str | None = None,
                preconditions: dict[str, Any] | None = None, grace: int | None = None, dry_run: bool = False,
                ) -> tuple[dict[str, Any], bool]:
        """Returns the object's last state and whether it is gone (False: it waits for its finalizers)."""
        obj = self._existing(rt, namespace, name)
        meta = obj["metadata"]
        for field, what in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
            wanted = (preconditions or {}).get(field)
            if wanted and wanted != meta.get(field):
                raise errors.conflict(rt.group, rt.plural, name, f"Precondition failed: {what} in precondition: "
                                                                 f"{wanted}, {what} in object meta: {meta.get(field)}")
        if dry_run:
            return obj, False
        if meta.get("deletionTimestamp"):
            return obj, False
        if propagation is None:  # batch/v1 Jobs orphan their pods unless told otherwise, for old clients' sake
            propagation = "Orphan" if rt.key == "batch/v1/jobs" else "Background"
        if propagation == "Orphan":
            self._orphan(meta["uid"])
        finalizers = list(meta.get("finalizers") or ())
        if propagation == "Foreground" and self._dependents.get(meta["uid"]):
            finalizers.append("foregroundDeletion")
        if rt.key == NAMESPACES:
            new = copy.deepcopy(obj)
            new["metadata"].update(deletionTimestamp=now(), deletionGracePeriodSeconds=0)
            new["status"] = {"phase": "Terminating"}
            self._commit(rt, obj, new)
            self._empty_namespace(name)
            return new, self._lookup(rt, None, name) is None
        if not finalizers:
            return self._remove(rt, obj), True
        new = copy.deepcopy(obj)
        new["metadata"].update(deletionTimestamp=now(), finalizers=finalizers,
                               deletionGracePeriodSeconds=grace if grace is not None else 0)
        stored = self._commit(rt, obj, new)
        if "foregroundDeletion" in finalizers:
            for storage, dep_namespace, dep_name in sorted(self._dependents.get(meta["uid"], set()), key=str):
                if self._lookup(self._storage_types[storage], dep_namespace, dep_name) is not None:
                    self._delete(self._storage_types[storage], dep_namespace, dep_name, propagation="Background")
            self._release_foreground(meta["uid"])
        return self._lookup(rt, namespace, name) or stored, self._lookup(rt, namespace, name) is None

    # ---- a test's own access to the store (thread-safe, the same rules as over HTTP, not in the request log) -----

    def get(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        with self._mutex:
            rt = self.resource(resource)
            obj = self._lookup(rt, namespace if rt.namespaced else None, name)
            return copy.deepcopy(self._served(rt, obj)) if obj is not None else None

    def list(self, resource: str, namespace: str | None = None, *, labels: str | None = None,
             fields: str | None = None) -> list[dict[str, Any]]:
        with self._mutex:
            rt = self.resource(resource)
            found = self._select(rt, namespace, selectors.label_selector(labels),
                                 selectors.field_selector(fields, rt.fields, rt.plural))
            return [copy.deepcopy(self._served(rt, obj)) for obj in found]

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        with self._mutex:
            rt = self._type_of(obj)
            created, _ = self._create(rt, (obj.get("metadata") or {}).get("namespace"), obj)
            return copy.deepcopy(created)

    def patch(self, resource: str, namespace: str | None, name: str, patch: Any, *, subresource: str | None = None,
              content_type: str = patches.MERGE_PATCH) -> dict[str, Any]:
        with self._mutex:
            rt = self.resource(resource)
            obj, _, _ = self._patch(rt, namespace if rt.namespaced else None, name, patch, content_type, subresource)
            return copy.deepcopy(obj)

    def delete(self, resource: str, namespace: str | None, name: str, *, propagation: str | None = None) -> bool:
        """Delete as a client would; returns whether the object is gone (False: finalizers hold it)."""
        with self._mutex:
            rt = self.resource(resource)
            return self._delete(rt, namespace if rt.namespaced else None, name, propagation=propagation)[1]

    def wait_for(self, condition: Callable[[], T], timeout: float = 10) -> T:
        """Wait until condition() returns something truthy; it is called under the store's lock, after each change
        and each request."""
        with self._changed:
            result = self._changed.wait_for(condition, timeout)
        if not result:
            raise TimeoutError(f"not so after {timeout} s: {getattr(condition, '__name__', condition)}")
        return result

    def inject(self, code: int, method: str | None = None, resource: str | None = None,
               subresource: str | None = ANY, namespace: str | None = None, name: str | None = None, *,
               times: int = 1, commit: bool = False, reason: str | None = None) -> Fault:
        """Make the next `times` matching writes (POST/PUT/PATCH/DELETE) answer `code`: 409, 422, 500, ..."""
        fault = Fault(code, method.upper() if method else None, resource, subresource, namespace, name, times, commit,
                      reason)
        with self._mutex:
            self.faults.append(fault)
        return fault

    def compact(self) -> None:
        """Forget the watch history, so that a watch from any older resourceVersion gets 410 Gone."""
        with self._mutex:
            for storage in self._history:
                self._history[storage].clear()
                self._compacted[storage] = self._rv

    def requests(self, user: str | None = None) -> list[Record]:
        with self._mutex:
            return [record for record in self.log if user is None or record.user == user]

    # ---- HTTP --------------------------------------------------------------------------------------------------

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        body = await raw.read()
        target = _parse_path(raw.path)
        query = dict(raw.query)
        watching = query.get("watch") in ("true", "1")
        verb = _verb(raw.method, target, watching)
        record = Record(
            user=(raw.headers.get("Authorization") or "").removeprefix("Bearer ") or "system:anonymous",
            method=raw.method, path=raw.path, query=query, verb=verb,
            api_group=target.group if target else None,
            resource=(f"{target.plural}/{target.subresource}" if target.subresource else target.plural)
            if target else None,
            namespace=(target.namespace or (target.name if target.plural == "namespaces" and not target.group
                                            else None) or "") if target else "",
            name=(target.name or (selectors.exact_name(query.get("fieldSelector")) if verb in ("list", "watch")
                                  else None) or "") if target else "")
        data = None
        if body:
            try:
                data = json.loads(body)
            except ValueError:
                try:
                    data = yaml.safe_load(body)
                except yaml.YAMLError:
                    data = None
        request = rendering.Request(
            id=len(self.log), raw_request=raw, url=raw.url, method=raw.method, params=query,
            headers=dict(raw.headers), body=body, data=data,
            action=_ACTIONS.get(verb), namespace=target.namespace if target else None,
            name=target.name if target else None, subresource=target.subresource if target else None,
            resource=kmock.resource(target.group, target.version, target.plural) if target else None)
        with self._mutex:
            self.log.append(record)  # at arrival: a watch may stay open until the end
            self._changed.notify_all()
        try:
            response = await self._handle(request)
        except ApiError as error:
            response = aiohttp.web.Response(body=_dumps(error.status()), status=error.code,
                                            content_type="application/json")
        except Exception:  # a bug of the emulator: answer as the real server would, and keep it for the test
            self.internal_errors.append(traceback.format_exc())
            response = aiohttp.web.Response(body=_dumps(errors.internal(traceback.format_exc(limit=3)).status()),
                                            status=500, content_type="application/json")
        record.status = response.status
        return response

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if self._payloads:  # a test's own kmock reactions answer first, as in plain kmock
            try:
                return await kmock.RawHandler._handle(self, request)
            except NotImplementedError:
                pass
        return await self._serve(request)

    async def _serve(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        raw = request._raw_request
        assert raw is not None
        path, method, query = raw.path, raw.method, request.params
        target = _parse_path(path)
        if target is None:
            return self._non_resource(path)
        with self._mutex:
            rt = self._types.get(f"{target.group}/{target.version}/{target.plural}" if target.group
                                 else f"{target.version}/{target.plural}")
            if rt is None or (target.namespace and not rt.namespaced) or (
                    target.subresource and target.subresource not in rt.subresources):
                raise errors.no_such_resource()
        namespace = target.namespace if rt.namespaced else None
        accept = raw.headers.get("Accept", "")
        as_table = "as=Table" in accept
        watching = query.get("watch") in ("true", "1")
        if method in ("GET", "HEAD") and (watching or target.name is None):
            labels = selectors.label_selector(query.get("labelSelector"))
            fields = selectors.field_selector(query.get("fieldSelector"), rt.fields, rt.plural)
            name = target.name
            if watching:
                return await self._watch(raw, rt, namespace, name, labels, fields, query, as_table)
            return self._list(rt, namespace, labels, fields, query, as_table)
        if method == "GET":
            if target.subresource == "log":
                with self._mutex:
                    self._existing(rt, namespace, target.name)
                return aiohttp.web.Response(text=self.pod_logs.get((namespace, target.name), ""),
                                            content_type="text/plain")
            with self._mutex:
                obj = self._served(rt, self._existing(rt, namespace, target.name))
                if as_table:
                    obj = tables.table(rt, [obj], obj["metadata"]["resourceVersion"],
                                       query.get("includeObject", "Metadata"))
                return _json(obj)
        if "protobuf" in raw.headers.get("Content-Type", ""):  # kubectl's typed generators (`kubectl create job`)
            raise ApiError(415, "UnsupportedMediaType", "the emulator reads JSON and YAML bodies, not protobuf")
        validation = query.get("fieldValidation", "Warn")
        dry_run = query.get("dryRun") == "All"
        data = request.data
        with self._mutex:
            body_name = (data.get("metadata") or {}).get("name") if isinstance(data, dict) else None
            fault_name = target.name or body_name
            fault = next((f for f in self.faults if f.matches(method, rt, target.subresource, namespace, fault_name)),
                         None)
            if fault is not None:
                fault.times -= 1
                if not fault.commit:
                    raise fault.error(rt, fault_name or "")
            try:
                response = self._write_request(method, rt, namespace, target, data, raw, query, validation, dry_run)
            except ApiError:
                if fault is None:
                    raise
                response = None
            if fault is not None:
                raise fault.error(rt, fault_name or "")
            return response

    def _write_request(self, method: str, rt: ResourceType, namespace: str | None, target: _Target, data: Any,
                       raw: aiohttp.web.BaseRequest, query: dict[str, str], validation: str, dry_run: bool,
                       ) -> aiohttp.web.Response:
        if method == "POST" and target.name is None:
            obj, warnings = self._create(rt, namespace, data, validation=validation, dry_run=dry_run)
            return _json(self._served(rt, obj), 201, warnings)
        if method == "PUT" and target.name:
            obj, warnings = self._write(rt, namespace, target.name, data, target.subresource, validation=validation,
                                        dry_run=dry_run, require_version=True)
            return _json(self._served(rt, obj), 200, warnings)
        if method == "PATCH" and target.name:
            content_type = raw.headers.get("Content-Type", "").split(";")[0].strip()
            obj, warnings, created = self._patch(rt, namespace, target.name, data, content_type, target.subresource,
                                                 validation=validation, dry_run=dry_run)
            return _json(self._served(rt, obj), 201 if created else 200, warnings)
        if method == "DELETE":
            options = data if isinstance(data, dict) else {}
            propagation = options.get("propagationPolicy") or query.get("propagationPolicy")
            if options.get("orphanDependents") is not None or query.get("orphanDependents"):
                orphan = options.get("orphanDependents", query.get("orphanDependents") in ("true", "1"))
                propagation = propagation or ("Orphan" if orphan else "Background")
            grace = options.get("gracePeriodSeconds", query.get("gracePeriodSeconds"))
            grace = int(grace) if grace is not None else None
            if target.name is None:
                labels = selectors.label_selector(query.get("labelSelector"))
                fields = selectors.field_selector(query.get("fieldSelector"), rt.fields, rt.plural)
                for obj in self._select(rt, namespace, labels, fields):
                    self._delete(rt, namespace or obj["metadata"].get("namespace"), obj["metadata"]["name"],
                                 propagation=propagation, grace=grace, dry_run=dry_run)
                return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
            obj, removed = self._delete(rt, namespace, target.name, propagation=propagation,
                                        preconditions=options.get("preconditions"), grace=grace, dry_run=dry_run)
            if removed and not (rt.custom or rt.key in ("v1/pods", NAMESPACES)):
                return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                              "details": {"name": target.name, "group": rt.group, "kind": rt.plural,
                                          "uid": obj["metadata"]["uid"]}})
            return _json(self._served(rt, obj))
        raise errors.method_not_allowed(method)

    def _list(self, rt: ResourceType, namespace: str | None, labels: selectors.Matcher | None,
              fields: selectors.Matcher | None, query: dict[str, str], as_table: bool) -> aiohttp.web.Response:
        with self._mutex:
            found = self._select(rt, namespace, labels, fields)
            version = str(self._rv)
        start = int(query.get("continue") or 0)
        limit = int(query.get("limit") or 0)
        page = found[start:start + limit] if limit else found[start:]
        items = [self._served(rt, obj) for obj in page]
        if as_table:
            return _json(tables.table(rt, items, version, query.get("includeObject", "Metadata")))
        if not rt.custom:  # items of built-in lists carry no kind or apiVersion
            items = [{key: value for key, value in obj.items() if key not in ("kind", "apiVersion")} for obj in items]
        meta: dict[str, Any] = {"resourceVersion": version}
        if limit and start + limit < len(found):
            meta.update({"continue": str(start + limit), "remainingItemCount": len(found) - start - limit})
        return _json({"kind": f"{rt.kind}List", "apiVersion": rt.api_version, "metadata": meta, "items": items})

    async def _watch(self, raw: aiohttp.web.BaseRequest, rt: ResourceType, namespace: str | None, name: str | None,
                     labels: selectors.Matcher | None, fields: selectors.Matcher | None, query: dict[str, str],
                     as_table: bool) -> aiohttp.web.StreamResponse:
        watcher = Watcher(self, rt, namespace, name, labels, fields, as_table)
        since = query.get("resourceVersion") or ""
        with self._mutex:
            if since not in ("", "0") and int(since) < self._compacted[rt.storage]:
                error = errors.gone(f"too old resource version: {since} ({self._compacted[rt.storage]})")
                watcher.pending.append(_dumps({"type": "ERROR", "object": error.status()}) + b"\n")
                watcher.done = True
            elif since in ("", "0") or query.get("sendInitialEvents") == "true":
                for obj in self._select(rt, namespace, labels, fields):
                    if watcher.selects(obj):
                        watcher.pending.append(watcher.render("ADDED", obj))
                if query.get("sendInitialEvents") == "true":
                    bookmark = {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": {
                        "resourceVersion": str(self._rv), "annotations": {"k8s.io/initial-events-end": "true"}}}
                    watcher.pending.append(_dumps({"type": "BOOKMARK", "object": bookmark}) + b"\n")
            else:
                for event in self._history[rt.storage]:
                    if event.rv > int(since):
                        watcher.offer(event)
            if not watcher.done:
                self._watchers[rt.storage].add(watcher)
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        loop = asyncio.get_running_loop()
        timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
        deadline = loop.time() + timeout if timeout else None
        try:
            await response.prepare(raw)
            while True:
                watcher.wakeup.clear()
                if watcher.pending:
                    chunk = b"".join(watcher.pending.popleft() for _ in range(len(watcher.pending)))
                    await response.write(chunk)
                    continue
                if watcher.done:
                    break
                remaining = None if deadline is None else deadline - loop.time()
                if (remaining is not None and remaining <= 0) or raw.transport is None or raw.transport.is_closing():
                    break  # timeoutSeconds passed, or the client went away
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(watcher.wakeup.wait(), min(remaining or 1.0, 1.0))
            await response.write_eof()
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            pass
        finally:
            with self._mutex:
                self._watchers[rt.storage].discard(watcher)
        return response

    def _non_resource(self, path: str) -> aiohttp.web.Response:
        parts = [part for part in path.split("/") if part]
        with self._mutex:
            types = list(self._types.values())
        if parts in (["healthz"], ["livez"], ["readyz"]):
            return aiohttp.web.Response(text="ok")
        if parts == ["version"]:
            return _json(SERVER_VERSION)
        if parts == ["api"]:
            return _json({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.url.host}:{self.url.port}"}]})
        groups: dict[str, list[str]] = {}
        for rt in types:
            if rt.group and rt.version not in groups.setdefault(rt.group, []):
                groups[rt.group].append(rt.version)

        def group_entry(group: str) -> dict[str, Any]:
            versions = [{"groupVersion": f"{group}/{v}", "version": v} for v in groups[group]]
            return {"name": group, "versions": versions, "preferredVersion": versions[0]}

        if parts[:2] == ["openapi", "v3"]:
            return self._openapi(types, parts[2:])
        if parts == ["apis"]:
            return _json({"kind": "APIGroupList", "apiVersion": "v1", "groups": [group_entry(g) for g in groups]})
        if len(parts) == 2 and parts[0] == "apis" and parts[1] in groups:
            return _json({"kind": "APIGroup", "apiVersion": "v1", **group_entry(parts[1])})
        if parts == ["api", "v1"] or (len(parts) == 3 and parts[0] == "apis" and parts[2] in groups.get(parts[1], ())):
            group, version = ("", "v1") if parts[0] == "api" else (parts[1], parts[2])
            served = [entry for rt in types if (rt.group, rt.version) == (group, version) for entry in rt.discovery()]
            return _json({"kind": "APIResourceList", "apiVersion": "v1",
                          "groupVersion": f"{group}/{version}" if group else version, "resources": served})
        raise errors.no_such_resource()


    def _openapi(self, types: list[ResourceType], group_version: list[str]) -> aiohttp.web.Response:
        """Just enough OpenAPI v3 for kubectl to see that the server validates fields itself (fieldValidation),
        so that it sends fieldValidation=Strict instead of validating against schemas it would download."""
        served = {f"apis/{rt.group}/{rt.version}" if rt.group else "api/v1" for rt in types}
        if not group_version:
            return _json({"paths": {gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash={self._rv}"}
                                    for gv in sorted(served)}})
        wanted = "/".join(group_version)
        if wanted not in served:
            raise errors.no_such_resource()
        paths = {}
        for rt in types:
            if (f"apis/{rt.group}/{rt.version}" if rt.group else "api/v1") != wanted:
                continue
            scope = "/namespaces/{namespace}" if rt.namespaced else ""
            paths[f"/{wanted}{scope}/{rt.plural}/{{name}}"] = {"patch": {
                "x-kubernetes-group-version-kind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
                "parameters": [{"name": name, "in": "query", "schema": {"type": "string"}}
                               for name in ("dryRun", "fieldManager", "fieldValidation", "force")],
                "requestBody": {"content": {kind: {"schema": {}} for kind in (
                    patches.JSON_PATCH, patches.MERGE_PATCH, patches.APPLY_PATCH)}},
                "responses": {"200": {"description": "OK"}}}}
        return _json({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": SERVER_VERSION["gitVersion"]},
                      "paths": paths, "components": {"schemas": {}}})


@dataclasses.dataclass(frozen=True)
class _Target:
    group: str
    version: str
    plural: str
    namespace: str | None
    name: str | None
    subresource: str | None


def _parse_path(path: str) -> _Target | None:
    """A resource URL, or None for anything else (discovery, /version, ...)."""
    parts = [part for part in path.split("/") if part]
    if len(parts) >= 3 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3 and not (len(rest) == 3 and rest[2] in ("status", "finalize")):
        namespace, rest = rest[1], rest[2:]
    return _Target(group, version, rest[0], namespace, rest[1] if len(rest) > 1 else None,
                   "/".join(rest[2:]) or None)


def _verb(method: str, target: _Target | None, watching: bool) -> str:
    if target is None:
        return method.lower()
    if method in ("GET", "HEAD"):
        return "watch" if watching else ("get" if target.name else "list")
    return {"POST": "create", "PUT": "update", "PATCH": "patch",
            "DELETE": "delete" if target.name else "deletecollection"}.get(method, method.lower())


_ACTIONS = {"list": kmock.action.LIST, "watch": kmock.action.WATCH, "get": kmock.action.FETCH,
            "create": kmock.action.CREATE, "patch": kmock.action.UPDATE, "update": kmock.action.UPDATE,
            "delete": kmock.action.DELETE}


def _json(body: Any, status: int = 200, warnings: list[str] | None = None) -> aiohttp.web.Response:
    headers = multidict.CIMultiDict()
    for warning in warnings or ():
        escaped = warning.replace("\\", "\\\\").replace('"', '\\"')
        headers.add("Warning", f'299 - "{escaped}"')
    return aiohttp.web.Response(body=_dumps(body), status=status, content_type="application/json", headers=headers)
