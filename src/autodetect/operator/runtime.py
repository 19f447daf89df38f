"""The operator process: its configuration, and the context its kopf handlers call (`memo`). Each experiment has
one reconcile loop (a kopf daemon) that runs a pass when anything of the experiment changes (the experiment,
its trials, their Jobs and Pods wake it) and at least every timer_s (for the time limits). A change that may end
a trial or keep one from starting wakes the loop at once; any other (a running trial's evaluation, a pod
starting) within coalesce_s, so that many reporting trials cost one pass a second, not one pass a report. One
loop per object keeps passes of one experiment in order without a lock; the wake-ups are only hints, every pass
reads the truth from the cluster."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import kopf
from kubernetes.client.exceptions import ApiException

from autodetect.errors import SpecError
from autodetect.operator import admission, builders
from autodetect.operator.deployments import DeploymentPass
from autodetect.operator.experiments import ExperimentPass, ParsedTrials, Settings, now
from autodetect.operator.kube import Api, load_configuration
from autodetect.operator.metrics import OperatorMetrics
from autodetect.operator.watched import WatchedRuns
from autodetect.tuning.events import Event
from autodetect.vocabulary import DEPLOYMENT_LABEL, EXPERIMENT_LABEL, FINALIZER, GROUP

log = logging.getLogger(__name__)

EXPERIMENT, DEPLOYMENT = "DetectionExperiment", "DetectionDeployment"
PASS_THREADS = 32
ANNOTATIONS_PREFIX = GROUP  # kopf's progress annotations: autodetect.dev/...


@dataclass
class OperatorConfig:
    namespaces: list[str] = field(default_factory=list)  # empty: every namespace (clusterwide)
    standalone: bool = False
    peering_name: str = "autodetect"
    priority: int = 0
    peering_lifetime_s: int = 60
    kubeconfig: str | None = None
    metrics_port: int | None = 8000
    liveness_endpoint: str | None = "http://0.0.0.0:8080/healthz"
    webhook_port: int | None = 9443  # the validating admission webhook: HTTPS with the cert and key given
    webhook_certfile: str | None = None  # without: plain HTTP on localhost only (for a local run and the tests)
    webhook_keyfile: str | None = None
    timer_s: float = 10.0  # the longest a running experiment goes without a pass
    coalesce_s: float = 1.0  # the longest a change that needs no pass at once waits for one
    settings: Settings = field(default_factory=Settings)


class Operator:
    """What the handlers reach through kopf's memo: one API client, the metrics, the reconcile loops."""

    def __init__(self, config: OperatorConfig):
        self.config = config
        self.metrics = OperatorMetrics()
        self.kube_configuration = load_configuration(config.kubeconfig)
        self.api = Api(self.kube_configuration, on_error=self.metrics.api_error)
        self.wakeups: dict[tuple[str, str, str], Wakeup] = {}  # (kind, namespace, name) -> its loop's wake-up
        self.generations: dict[tuple[str, str, str], int | None] = {}  # the spec generation last woken for
        # A pass mostly waits on the API server: many may be under way at once, each object's in order.
        self.passes = concurrent.futures.ThreadPoolExecutor(PASS_THREADS, thread_name_prefix="autodetect-pass")
        self.events = EventPoster(self.api, config.settings.instance, self.metrics.event)
        self.runs = WatchedRuns()  # the trials' Jobs and pods, fed by the handlers

    # --- kopf's settings and credentials ---------------------------------------------------------------

    def configure(self, settings: kopf.OperatorSettings) -> None:
        settings.persistence.finalizer = FINALIZER
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATIONS_PREFIX)
        settings.persistence.diffbase_storage = NoDiffBase()
        settings.peering.name = self.config.peering_name
        settings.peering.priority = self.config.priority
        settings.peering.lifetime = self.config.peering_lifetime_s
        settings.peering.standalone = self.config.standalone
        settings.posting.level = logging.WARNING  # our own Events say what was decided; kopf's: what went wrong
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # not a line for every handled watch event
        # The API server filters the watches of Jobs, pods and Deployments to those the operator makes (a cluster
        # has many); the handlers' label filters say the same.
        for resource, label in ((("batch", "v1", "jobs"), EXPERIMENT_LABEL), (("v1", "pods"), EXPERIMENT_LABEL),
                                (("apps", "v1", "deployments"), DEPLOYMENT_LABEL)):
            settings.watching.label_selectors[resource] = label
        settings.admission.managed = None  # the chart installs the webhook configuration and its certificate
        secure = self.config.webhook_certfile is not None
        settings.admission.server = kopf.WebhookServer(
            addr="0.0.0.0" if secure else "127.0.0.1", port=self.config.webhook_port, insecure=not secure,
            certfile=self.config.webhook_certfile, pkeyfile=self.config.webhook_keyfile)

    def connection_info(self) -> kopf.ConnectionInfo:
        c = self.kube_configuration
        header = c.get_api_key_with_prefix("BearerToken") or c.get_api_key_with_prefix("authorization")
        scheme, _, token = (header or "").rpartition(" ")
        return kopf.ConnectionInfo(server=c.host, ca_path=c.ssl_ca_cert, insecure=not c.verify_ssl,
                                   username=c.username or None, password=c.password or None,
                                   scheme=scheme or None, token=token or None, certificate_path=c.cert_file,
                                   private_key_path=c.key_file)

    # --- the handlers' work --------------------------------------------------------------------------

    def wake(self, kind: str, namespace: str | None, name: str | None = None, *, at_once: bool = True) -> None:
        """Wake the loop of one object (or, without a name, of every object of that kind in the namespace): at
        once, or within coalesce_s."""
        if name is not None:
            key = (kind, namespace, name)
            wakeups = [self.wakeups[key]] if key in self.wakeups else []
        else:
            wakeups = [w for (k, ns, _), w in self.wakeups.items() if k == kind and ns == namespace]
        for wakeup in wakeups:
            wakeup.set(0.0 if at_once else self.config.coalesce_s)

    def wake_on_spec(self, kind: str, namespace: str, name: str, generation: int | None) -> None:
        """Wake an object's loop when its spec changed: not for the status its own pass has just written."""
        key = (kind, namespace, name)
        if self.generations.get(key) != generation:
            self.generations[key] = generation
            self.wake(kind, namespace, name)

    async def run_experiment(self, namespace: str, name: str, stopped: Any) -> None:
        settings = self.config.settings
        self.runs.unlisted(namespace, name)
        parsed = ParsedTrials()
        await self._loop(EXPERIMENT, namespace, name, stopped,
                         lambda: ExperimentPass(self.api, self.runs, namespace, name, settings, self.events.post,
                                                parsed).run(),
                         lambda outcome: self.metrics.experiment(namespace, name, outcome.phase))

    async def run_deployment(self, namespace: str, name: str, stopped: Any) -> None:
        await self._loop(DEPLOYMENT, namespace, name, stopped,
                         lambda: DeploymentPass(self.api, namespace, name, self.events.post).run(), lambda outcome: None)

    async def _loop(self, kind: str, namespace: str, name: str, stopped: Any, reconcile: Callable[[], Any],
                    record: Callable[[Any], None]) -> None:
        key = (kind, namespace, name)
        wake = self.wakeups.setdefault(key, Wakeup())
        failures = 0
        try:
            while not stopped:
                wake.clear()  # what changes from here on is read by this pass or wakes the next
                started = time.perf_counter()
                try:
                    outcome = await asyncio.get_running_loop().run_in_executor(self.passes, reconcile)
                    record(outcome)
                    failures, delay = 0, None if outcome.at_rest else self.config.timer_s
                except Exception as exc:  # noqa: BLE001 - a conflict, a refused write, the API away: pass again soon
                    failures += 1
                    delay = min(30.0, 0.25 * 2 ** failures)
                    if isinstance(exc, ApiException):
                        log.warning("%s %s/%s: the pass failed (%s %s: %s); again in %.1fs", kind, namespace, name,
                                    exc.status, exc.reason, _message(exc), delay)
                    else:
                        log.exception("%s %s/%s: the pass failed; again in %.1fs", kind, namespace, name, delay)
                finally:
                    self.metrics.reconcile_seconds.labels(kind).observe(time.perf_counter() - started)
                await _first(wake.wait(), stopped.wait(), timeout=delay)
        finally:
            if self.wakeups.get(key) is wake:
                del self.wakeups[key]
                self.generations.pop(key, None)

    def validate(self, body: dict, old: dict | None) -> None:
        try:
            admission.check(dict(body), dict(old) if old else None)
        except SpecError as exc:
            raise kopf.AdmissionError(str(exc), code=422) from None


def _message(exc: ApiException) -> str:
    try:
        return json.loads(exc.body or "{}").get("message", "")
    except ValueError:
        return (exc.body or "")[:200]


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf's last-handled configuration serves on.create/on.update/on.resume handlers, and this operator has none
    (its loops read the cluster on every pass): it keeps none, and spares kopf a deep copy of every watched object."""

    def build(self, *, body, extra_fields=None):
        return {}

    def fetch(self, *, body):
        return None

    def store(self, *, body, patch, essence) -> None:
        pass


class Wakeup:
    """A loop's wake-up: set at once, or after a delay; a delayed set does not postpone one already due sooner."""

    def __init__(self):
        self.event = asyncio.Event()
        self.later: asyncio.TimerHandle | None = None

    def set(self, delay: float) -> None:
        if delay <= 0:
            self.event.set()
        elif self.later is None and not self.event.is_set():
            self.later = asyncio.get_running_loop().call_later(delay, self.event.set)

    def clear(self) -> None:
        self.event.clear()
        if self.later is not None:
            self.later.cancel()
            self.later = None

    def wait(self):
        return self.event.wait()


class EventPoster:
    """Events leave from a thread of their own, in order: a reconcile pass does not wait for them (kopf posts its
    own Events the same way). An Event that cannot be posted is logged, not retried."""

    def __init__(self, api: Api, instance: str, on_posted: Callable[[Event], None]):
        self.api, self.instance, self.on_posted = api, instance, on_posted
        self.queue: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="autodetect-events", daemon=True)
        self.thread.start()

    def post(self, event: Event, involved: dict) -> None:
        self.on_posted(event)
        self.queue.put(builders.event_object(event, involved, now(), self.instance))

    def _run(self) -> None:
        while (obj := self.queue.get()) is not None:
            try:
                self.api.create(obj)
            except ApiException as exc:
                log.warning("event %s about %s not posted: %s %s", obj["reason"], obj["involvedObject"]["name"],
                            exc.status, _message(exc))

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(10)


async def _first(*waits, timeout: float | None) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def operate(config: OperatorConfig, stop_flag: Any = None, ready_flag: Any = None) -> None:
    """Run the operator until stop_flag is set (or the process is signalled)."""
    from prometheus_client import start_http_server

    from autodetect.operator import handlers

    operator = Operator(config)
    if config.metrics_port is not None:
        start_http_server(config.metrics_port, registry=operator.metrics.registry)
    try:
        await kopf.operator(
            registry=handlers.registry, memo=kopf.Memo(operator=operator), standalone=config.standalone,
            priority=config.priority, liveness_endpoint=config.liveness_endpoint,
            peering_name=None if config.standalone else config.peering_name,  # a name makes peering mandatory
            clusterwide=not config.namespaces, namespaces=config.namespaces, stop_flag=stop_flag,
            ready_flag=ready_flag)
    finally:
        operator.events.close()
        operator.passes.shutdown(wait=True, cancel_futures=True)
        operator.api.close()
