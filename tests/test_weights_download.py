"""`pretrained: true` fetches the family's standard weights once, checked against the publisher's hash
(issue 9, item 4). A local HTTP server stands in for GitHub's releases, its API and a mirror; nothing is
fetched from the internet."""

from __future__ import annotations

import hashlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from autodetect.errors import TransientError, WeightsUnavailable
from autodetect.models import weights
from autodetect.models.hyperparameters import resolve
from autodetect.models.weights import WEIGHTS_DIR_ENV, WEIGHTS_URL_ENV, Release, fetch, torchvision_release
from autodetect.models.yolo import build_model, pretrained_weights


class Hub:
    """Files by path; GitHub-like downloads redirect to a CDN path, ranges are honoured, and a path in `cut`
    sends half its bytes once and hangs up."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                hub.requests.append((self.path, self.headers.get("Range")))
                if self.path.startswith("/download/"):  # as GitHub answers a release asset
                    self.send_response(302)
                    self.send_header("Location", "/cdn/" + self.path.removeprefix("/download/"))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = hub.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-")) if self.headers.get("Range") else 0
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(body) - start))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if self.path in hub.cut:
                    hub.cut.discard(self.path)
                    self.wfile.write(body[start:start + (len(body) - start) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def gets(self, suffix: str) -> list[tuple[str, str | None]]:
        return [r for r in self.requests if r[0].endswith(suffix)]


@pytest.fixture
def hub(monkeypatch):
    server = Hub()
    monkeypatch.setattr(weights, "ULTRALYTICS_DOWNLOADS", f"{server.url}/download/v8.3.0")
    monkeypatch.setattr(weights, "ULTRALYTICS_RELEASE_API", f"{server.url}/api/releases/tags/v8.3.0")
    monkeypatch.delenv(WEIGHTS_URL_ENV)  # the publisher itself, not the conftest's unreachable mirror
    yield server
    server.server.shutdown()


def checkpoint(tmp_path: Path, config="yolov8s.yaml") -> bytes:
    from ultralytics.nn.tasks import DetectionModel

    torch.save({"model": DetectionModel(config, nc=80, verbose=False).half(), "train_args": {}}, tmp_path / "ckpt.pt")
    return (tmp_path / "ckpt.pt").read_bytes()


def publish(hub: Hub, name: str, body: bytes, digest: str | None = None) -> None:
    hub.files[f"/cdn/v8.3.0/{name}"] = body
    asset = {"name": name, "digest": f"sha256:{digest or hashlib.sha256(body).hexdigest()}"}
    hub.files["/api/releases/tags/v8.3.0"] = json.dumps({"tag_name": "v8.3.0", "assets": [asset]}).encode()


HP = resolve({"model_name": "yolov8", "model_size": "small", "pretrained": True, "image_size": 64})


def test_twenty_trials_download_the_release_once_and_load_it(hub, tmp_path, monkeypatch):
    body = checkpoint(tmp_path)
    publish(hub, "yolov8s.pt", body)
    with ThreadPoolExecutor(8) as pool:
        paths = list(pool.map(lambda _: pretrained_weights(HP), range(20)))
    folder = Path(weights.weights_dir())
    assert set(paths) == {folder / "yolov8s.pt"} and (folder / "yolov8s.pt").read_bytes() == body
    assert len(hub.gets("/cdn/v8.3.0/yolov8s.pt")) == 1  # one download; the others waited on the lock
    assert sorted(p.name for p in folder.iterdir()) == [".yolov8s.pt.lock", "yolov8s.pt"]  # no partial left
    model = build_model(HP, ["a", "b"], paths[0])
    assert model.model[-1].nc == 2


def test_a_download_whose_hash_is_not_the_published_one_is_refused_and_discarded(hub, tmp_path):
    publish(hub, "yolov8s.pt", b"tampered bytes", digest="ab" * 32)
    with pytest.raises(WeightsUnavailable, match=r"yolov8s.pt: its sha256 is [0-9a-f]{64}, not the published (ab){32}"):
        pretrained_weights(HP)
    assert not [p for p in weights.weights_dir().iterdir() if not p.name.endswith(".lock")]


def test_an_interrupted_download_resumes_where_it_stopped(hub, tmp_path):
    body = checkpoint(tmp_path)
    publish(hub, "yolov8s.pt", body)
    hub.cut.add("/cdn/v8.3.0/yolov8s.pt")
    with pytest.raises(TransientError, match=r"yolov8s.pt could not be downloaded .*expected %d.*a retry resumes it" % len(body)):
        pretrained_weights(HP)  # the trial is retried: not the input's fault
    assert pretrained_weights(HP).read_bytes() == body
    first, second = hub.gets("/cdn/v8.3.0/yolov8s.pt")
    assert first[1] is None and 0 < int(second[1].removeprefix("bytes=").rstrip("-")) <= len(body) // 2


def test_a_mirror_serves_the_files_and_their_digests(hub, tmp_path, monkeypatch):
    body = checkpoint(tmp_path)
    hub.files["/mirror/yolov8s.pt"] = body
    hub.files["/mirror/yolov8s.pt.sha256"] = f"{hashlib.sha256(body).hexdigest()}  yolov8s.pt\n".encode()
    monkeypatch.setenv(WEIGHTS_URL_ENV, f"{hub.url}/mirror/")
    assert pretrained_weights(HP).read_bytes() == body
    assert not hub.gets("v8.3.0") and not hub.gets("/api/releases/tags/v8.3.0")  # the publisher is not asked
    monkeypatch.setenv(WEIGHTS_URL_ENV, f"{hub.url}/wrong-mirror")
    with pytest.raises(WeightsUnavailable, match="wrong-mirror/yolov8m.pt.sha256 could not be fetched .HTTP 404") as caught:
        pretrained_weights(resolve({**HP, "model_size": "medium"}))
    assert not isinstance(caught.value, TransientError)  # a mirror without the file: the trial is not retried


def test_a_torchvision_file_is_checked_against_the_digest_in_its_name(hub, tmp_path):
    body = b"weights of a detector"
    prefix = hashlib.sha256(body).hexdigest()[:8]
    hub.files[f"/models/tiny-{prefix}.pth"] = body
    release = Release(f"tiny-{prefix}.pth", f"{hub.url}/models/tiny-{prefix}.pth", sha256_prefix=prefix)
    assert fetch(release, tmp_path / "w").read_bytes() == body
    liar = Release("tiny-00000000.pth", f"{hub.url}/models/tiny-{prefix}.pth", sha256_prefix="00000000")
    with pytest.raises(WeightsUnavailable, match="not the published 00000000"):
        fetch(liar, tmp_path / "w")
    hub.files[f"/mirror/tiny-{prefix}.pth"] = body  # a mirror's .sha256 must agree with the name, too
    hub.files[f"/mirror/tiny-{prefix}.pth.sha256"] = b"cd" * 32
    with pytest.raises(WeightsUnavailable, match=f"says (cd){{32}}, but the file's name says {prefix}"):
        fetch(release.mirrored(f"{hub.url}/mirror"), tmp_path / "m")


def test_torchvision_releases_are_its_published_files():
    release = torchvision_release("fasterrcnn_resnet50_fpn")
    assert release.url == "https://download.pytorch.org/models/fasterrcnn_resnet50_fpn_coco-258fb6c6.pth"
    assert (release.file, release.sha256_prefix) == ("fasterrcnn_resnet50_fpn_coco-258fb6c6.pth", "258fb6c6")


def test_offline_the_error_names_the_file_and_the_folder(monkeypatch, tmp_path):
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(tmp_path / "cache"))  # the conftest's mirror: nothing listens there
    with pytest.raises(TransientError) as caught:  # refused connections may pass on a retry
        pretrained_weights(HP)
    message = str(caught.value)
    assert "127.0.0.1:9/no-hub-in-tests/yolov8s.pt" in message and "could not be fetched" in message
    assert f"Put yolov8s.pt in {tmp_path / 'cache'}" in message
    assert WEIGHTS_URL_ENV in message and "pretrained: false" in message
