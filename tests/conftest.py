"""Fixtures for the operator's tests: a Kubernetes API server emulator over real HTTP, and a kubeconfig for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest
import yaml

import operator_requests
from apiserver import Emulator

CRDS = [doc for path in sorted((Path(__file__).resolve().parents[1] / "crds").glob("*.yaml"))
        for doc in yaml.load_all(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        if doc]  # read once: every test gets a fresh emulator


@pytest.fixture(autouse=True)
def no_weights_from_the_internet(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """`pretrained: true` downloads from a hub: in tests, from nowhere (a port nothing listens on), into an empty
    folder, unless a test serves weights itself. Subprocesses inherit both."""
    from autodetect.models.weights import WEIGHTS_DIR_ENV, WEIGHTS_URL_ENV

    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(tmp_path_factory.mktemp("weights")))
    monkeypatch.setenv(WEIGHTS_URL_ENV, "http://127.0.0.1:9/no-hub-in-tests")


@pytest.fixture
def emulator(request: pytest.FixtureRequest) -> Iterator[Emulator]:
    """The API server on 127.0.0.1 at a free port, with the repository's CRDs (autodetect's and kopf's peering).
    What the operator and the trainer asked of it is kept for the RBAC test (operator_requests)."""
    server = Emulator(crds=CRDS)
    with server.serve():
        yield server
    operator_requests.record(request.node.nodeid, [r for r in server.requests() if r.user in (
        *operator_requests.OPERATOR_USERS, operator_requests.TRAINER_USER)])
    assert not server.internal_errors, "the emulator failed on a request:\n" + "\n".join(server.internal_errors)


@pytest.fixture
def kubeconfig(emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kubeconfig for the emulator, also set as KUBECONFIG (kopf, the kubernetes client and kubectl read it);
    requests through it are logged as user "operator"."""
    path = emulator.kubeconfig(tmp_path / "kubeconfig", user="operator")
    monkeypatch.setenv("KUBECONFIG", str(path))
    # the kubernetes client reads KUBECONFIG once, at import; kopf.login_via_client goes through it
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    return path


@pytest.fixture
def kubectl(kubeconfig: Path):
    """The real kubectl (1.35) against the emulator: kubectl("get", "dexp") -> CompletedProcess."""
    import subprocess

    from apiserver import tools

    binary = tools.kubectl()

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([str(binary), "--kubeconfig", str(kubeconfig), *args], capture_output=True,
                              text=True, timeout=60)
        if check and done.returncode:
            raise AssertionError(f"kubectl {' '.join(args)}: {done.stderr}")
        return done
    return run


def pytest_sessionfinish(session: pytest.Session) -> None:
    if (path := operator_requests.requested_file()) is not None:
        operator_requests.write(path)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The RBAC test reads what the operator tests recorded: it runs after them."""
    items.sort(key=lambda item: item.nodeid.startswith("tests/test_operator_rbac.py"))
