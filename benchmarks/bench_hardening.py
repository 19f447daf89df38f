"""The figures of issue 11's closing note, against a real `autodetect serve` process:

- the load test: 10,000 requests at concurrency 32, the count of errors (target 0) and p50/p99;
- overload at concurrency 256: p99 of the requests served and the share answered 503 (+ Retry-After);
- RSS of the server under 40 PNGs of 6300 x 6300 sent at once (39.7 Mpx each, under the 40 Mpx limit);
- the time the server takes to close a connection whose headers never end (--header-timeout).

The model is yolov8n (untrained, its speed does not depend on the weights) at 64 px, built here in seconds.
Run from the repository root (a few minutes):

    python benchmarks/bench_hardening.py [--requests 10000] [--overload 2000] [--huge 40]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

KEY = "bench-key"
SIZE = 64


def build_artifact(root: Path) -> Path:
    import torch
    from ultralytics.nn.tasks import DetectionModel

    from autodetect.models.hyperparameters import resolve
    from autodetect.models.yolo import YoloDetector
    from autodetect.trainer.artifact import DatasetInfo, write_artifact

    torch.manual_seed(0)
    hp = resolve({"model_name": "yolov8", "model_size": "small", "image_size": SIZE, "pretrained": False})
    detector = YoloDetector(hp, ["a", "b"], model=DetectionModel("yolov8n.yaml", nc=2, verbose=False).eval())
    return write_artifact(root / "tiny", detector, name="tiny", metrics={}, epoch=None,
                          dataset=DatasetInfo("none", "none", None, 0, 0))


def encoded(size: tuple[int, int], kind: str) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size[::-1], 3), dtype=np.uint8)
                    if kind == "JPEG" else np.full((*size[::-1], 3), 100, np.uint8)).save(out, kind)
    return out.getvalue()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def load(base: str, image: bytes, total: int, concurrency: int, timeout: float = 120):
    latencies, codes, retry_after = [], {}, 0
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/octet-stream"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    remaining = total
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        async def worker():
            nonlocal remaining, retry_after
            while remaining > 0:
                remaining -= 1
                started = time.monotonic()
                try:
                    answer = await client.post(f"{base}/score", content=image, headers=headers)
                    code = answer.status_code
                    retry_after += code == 503 and "retry-after" in answer.headers
                except httpx.HTTPError as exc:
                    code = type(exc).__name__
                codes[code] = codes.get(code, 0) + 1
                if code == 200:
                    latencies.append(time.monotonic() - started)
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, codes, retry_after


def ms(values, q):
    return float(np.percentile(np.asarray(values) * 1000, q)) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--overload", type=int, default=2000)
    parser.add_argument("--huge", type=int, default=40)
    parser.add_argument("--header-timeout", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        artifact = build_artifact(Path(tmp))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "autodetect.cli", "serve", "--model", str(artifact), "--host", "127.0.0.1",
               "--port", str(port), "--header-timeout", str(args.header_timeout), "--drain-seconds", "0"]
        server = subprocess.Popen(cmd, env={**os.environ, "AUTODETECT_API_KEYS": KEY},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 300
            while True:
                try:
                    if httpx.get(f"{base}/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline and server.poll() is None, "the server did not become ready"
                time.sleep(0.2)
            print(f"server: {' '.join(cmd[1:4])} ... (yolov8n at {SIZE} px, ONNX), pid {server.pid}")
            image = encoded((320, 240), "JPEG")

            started = time.monotonic()
            lat, codes, _ = asyncio.run(load(base, image, args.requests, 32))
            took = time.monotonic() - started
            errors = sum(n for c, n in codes.items() if c != 200)
            print(f"load test: {args.requests} requests at c=32: {errors} errors {codes}, "
                  f"{args.requests / took:.0f} req/s, p50 {ms(lat, 50):.0f} ms, p99 {ms(lat, 99):.0f} ms; "
                  f"RSS {rss_mb(server.pid):.0f} MB")

            lat, codes, retry = asyncio.run(load(base, image, args.overload, 256))
            refused = codes.get(503, 0)
            print(f"overload: {args.overload} requests at c=256: served {len(lat)} (p50 {ms(lat, 50):.0f} ms, "
                  f"p99 {ms(lat, 99):.0f} ms), 503 {refused / args.overload:.1%} (all with Retry-After: "
                  f"{retry == refused}), other {{{', '.join(f'{c}: {n}' for c, n in codes.items() if c not in (200, 503))}}}")

            huge = encoded((6300, 6300), "PNG")
            before, peak, stop = rss_mb(server.pid), [0.0], threading.Event()

            def watch():
                while not stop.is_set():
                    peak[0] = max(peak[0], rss_mb(server.pid))
                    time.sleep(0.05)

            watcher = threading.Thread(target=watch)
            watcher.start()
            started = time.monotonic()
            lat, codes, _ = asyncio.run(load(base, huge, args.huge, args.huge, timeout=900))
            stop.set()
            watcher.join()
            time.sleep(1)
            print(f"pixel attack: {args.huge} PNGs of 6300x6300 ({len(huge) // 1024} KB each) at once: {codes} in "
                  f"{time.monotonic() - started:.0f} s; RSS {before:.0f} MB before, peak {peak[0]:.0f} MB, "
                  f"{rss_mb(server.pid):.0f} MB after")
            lat, _, _ = asyncio.run(load(base, image, 200, 4))
            print(f"  good requests after it: p50 {ms(lat, 50):.0f} ms")

            conn = socket.create_connection(("127.0.0.1", port))
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            started = time.monotonic()
            answer = b""
            while chunk := conn.recv(4096):
                answer += chunk
            first = answer.split(b"\r\n")[0].decode()
            print(f"slow header: closed after {time.monotonic() - started:.2f} s "
                  f"(--header-timeout {args.header_timeout}), answered {first!r}")
        finally:
            server.terminate()
            server.wait(60)


if __name__ == "__main__":
    main()
