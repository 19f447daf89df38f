"""A kopf operator in a background thread with its own event loop (kopf's embedding mode), stopped cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import kopf


def registry(login: Any = kopf.login_via_client) -> kopf.OperatorRegistry:
    """A registry of one's own for a test's handlers, logging in from KUBECONFIG: through the kubernetes client
    (`kopf.login_via_client`, the default) or kopf's own reading of it (`kopf.login_with_kubeconfig`)."""
    own = kopf.OperatorRegistry()
    kopf.on.login(registry=own)(login)
    return own


class RunningOperator:
    def __init__(self, thread: threading.Thread, stop: threading.Event, errors: list[BaseException]):
        self.thread, self.stop_flag, self.errors = thread, stop, errors

    def stop(self, timeout: float = 30) -> None:
        self.stop_flag.set()
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise TimeoutError(f"the kopf operator did not stop within {timeout} s")
        if self.errors:
            raise self.errors[0]


@contextlib.contextmanager
def running(registry: kopf.OperatorRegistry, *, settings: kopf.OperatorSettings | None = None,
            namespaces: tuple[str, ...] = (), clusterwide: bool | None = None, standalone: bool = True,
            priority: int = 0, peering_name: str = "default", memo: Any = None, timeout: float = 30,
            ) -> Iterator[RunningOperator]:
    """Run `kopf.operator(...)` on the handlers of `registry` until the block ends.

    Credentials come as kopf finds them (KUBECONFIG: the `kubeconfig` fixture sets it). Without namespaces the
    operator serves the whole cluster. With standalone=False it peers through the KopfPeering (namespaced) or
    ClusterKopfPeering named `peering_name`, which must exist, as the Helm chart creates it.
    """
    stop, ready, errors = threading.Event(), threading.Event(), []
    settings = settings or kopf.OperatorSettings()
    if clusterwide is None:
        clusterwide = not namespaces

    def main() -> None:
        try:
            asyncio.run(kopf.operator(registry=registry, settings=settings, namespaces=namespaces,
                                      clusterwide=clusterwide, standalone=standalone, priority=priority,
                                      peering_name=None if standalone else peering_name,  # a name makes it mandatory
                                      memo=memo, stop_flag=stop, ready_flag=ready))
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            errors.append(error)
            ready.set()

    thread = threading.Thread(target=main, name=f"kopf-operator-{priority}", daemon=True)
    thread.start()
    if not ready.wait(timeout):
        stop.set()
        raise TimeoutError(f"the kopf operator was not ready within {timeout} s")
    operator = RunningOperator(thread, stop, errors)
    if errors:
        raise errors[0]
    try:
        yield operator
    finally:
        if thread.is_alive() or not stop.is_set():
            operator.stop(timeout)
