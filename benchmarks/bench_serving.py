"""Scoring throughput and latency of `autodetect serve` against two baselines measured in the same run.

The model is yolov8n (ultralytics' yolov8n.yaml, untrained weights: speed does not depend on them) at
640, 80 classes, on the CPU; each request is one 640x480 JPEG. For concurrency 1, 4 and 16, closed-loop
clients (each sends its next request when the last is answered) measure, interleaved round by round
so that a busy spell of a shared machine hits every mode alike:

- raw onnx (L):   the served runtime (letterbox L, inference, NMS) called in-process on a decoded
                  image, c images a call back to back, what a zero-overhead batcher would reach: the
                  limit the targets refer to;
- raw torch:      ultralytics' predict called in-process, one image a call (for reference);
- naive:          a FastAPI server that decodes and calls ultralytics predict in its handler (the
                  usual first attempt), in its own uvicorn process; its torch threads are set again
                  after ultralytics' select_device has reset them to min(8, cores - 1);
- naive onnx:     the same server calling the served ONNX Runtime path (rect) in its handler, no
                  batching: the "against naive" figure then measures the server, not the runtime;
- autodetect:     `autodetect serve` (ONNX Runtime, micro-batching, auth on) in its own process, one
                  per LETTERBOX:MAX_BATCH_SIZE given to --servers.

Every runtime gets the same intra-op thread count; each process's actual count is printed. Targets: autodetect throughput >= 0.9x raw onnx
(same letterbox) and >= 1.5x naive at every level; p50 at concurrency 1 within 15% of raw onnx.
Run from the repository root (a few minutes):

    python benchmarks/bench_serving.py [--requests 32] [--rounds 3] [--threads 0] [--servers rect:8,square:8]
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
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fastapi import Body, Request  # module level: the naive handler's annotation is resolved from here

LEVELS = (1, 4, 16)
NAIVE, NAIVE_ONNX, RAW_TORCH = "naive (ultralytics)", "naive (onnxruntime)", "raw torch (in-process)"
KEY = "bench-key"
SIZE = 640


@dataclass
class Result:
    mode: str
    concurrency: int
    throughput: float  # images per second
    p50_ms: float
    p99_ms: float


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def build_artifact(root: Path) -> Path:
    """A yolov8n artifact written by the trainer's artifact code, with its ONNX export beside it."""
    import torch
    from ultralytics.nn.tasks import DetectionModel

    from autodetect.models.hyperparameters import resolve
    from autodetect.models.yolo import YoloDetector
    from autodetect.trainer.artifact import DatasetInfo, write_artifact

    torch.manual_seed(0)
    # model_size has no "nano" among Azure's values; the weights file, not the card, defines the network
    hp = resolve({"model_name": "yolov8", "model_size": "small", "image_size": SIZE, "pretrained": False})
    net = DetectionModel("yolov8n.yaml", nc=80, verbose=False).eval()
    detector = YoloDetector(hp, [f"class{i}" for i in range(80)], model=net)
    artifact = write_artifact(root / "yolov8n", detector, name="yolov8n", metrics={}, epoch=None,
                              dataset=DatasetInfo("none", "none", None, 0, 0))
    detector.export_onnx(artifact / "model.onnx")
    return artifact


def test_image(root: Path) -> bytes:
    from PIL import Image

    from autodetect.data.synth import synthesize

    synthesize(root / "image", classes=3, images=1, size=(640, 480), seed=3, image_format="jpg")
    out = io.BytesIO()
    Image.open(next((root / "image" / "images").iterdir())).save(out, "JPEG", quality=90)
    return out.getvalue()


# -- in-process baselines --------------------------------------------------------------------------

class RawOnnx:
    """The served runtime in-process: prepare (letterbox) and predict on min(c, batch) decoded images
    a call, back to back."""

    def __init__(self, artifact: Path, image: bytes, threads: int, letterbox: str, batch: int):
        self.batch = batch
        from autodetect.data.images import load_rgb
        from autodetect.models.base import PredictOptions
        from autodetect.models.registry import read_model_card
        from autodetect.serving.onnx_runtime import OnnxYoloRuntime

        card = read_model_card(artifact)
        self.runtime = OnnxYoloRuntime(artifact / "model.onnx", card["classes"], SIZE, threads, letterbox)
        self.options = PredictOptions.from_hyperparameters(card["hyperparameters"])
        self.decoded = load_rgb(image)
        for c in LEVELS:  # warm-up at each batch size
            self.call(min(c, batch))

    def call(self, c: int) -> None:
        self.runtime.predict([self.runtime.prepare(self.decoded) for _ in range(c)], self.options)

    def measure(self, c: int, requests: int) -> tuple[list[float], float]:
        """c requests arrive together: each waits for the calls before its own and then its own."""
        latencies = []
        size = min(c, self.batch)
        started = time.perf_counter()
        for _ in range(max(1, requests // c)):
            t = time.perf_counter()
            for _ in range(c // size):
                self.call(size)
                latencies += [time.perf_counter() - t] * size
        return latencies, time.perf_counter() - started


class RawTorch:
    """ultralytics' predict in-process, one decoded image a call (for reference)."""

    def __init__(self, artifact: Path, image: bytes, threads: int):
        import torch
        from ultralytics import YOLO

        from autodetect.data.images import load_rgb
        from autodetect.models.registry import read_model_card

        hp = read_model_card(artifact)["hyperparameters"]
        self.model = YOLO(str(artifact / "model.pt"), task="detect")
        self.bgr = np.ascontiguousarray(load_rgb(image)[..., ::-1])
        self.kwargs = dict(imgsz=SIZE, conf=hp["box_score_threshold"], iou=hp["nms_iou_threshold"],
                           max_det=hp["box_detections_per_image"], verbose=False)
        for _ in range(2):
            self.model.predict(self.bgr, **self.kwargs)
        torch.set_num_threads(threads)  # ultralytics' select_device set it to min(8, cores - 1) in predict's setup
        self.threads = torch.get_num_threads()

    def measure(self, c: int, requests: int) -> tuple[list[float], float]:
        latencies = []
        started = time.perf_counter()
        for _ in range(requests):
            t = time.perf_counter()
            self.model.predict(self.bgr, **self.kwargs)
            latencies.append(time.perf_counter() - t)
        return latencies, time.perf_counter() - started


# -- servers ---------------------------------------------------------------------------------------

def naive_onnx_app(artifact: Path, threads: int):
    """The same first attempt on ONNX Runtime: the served runtime called in the handler, no batching."""
    from fastapi import FastAPI

    from autodetect.data.images import load_rgb
    from autodetect.models.base import PredictOptions
    from autodetect.models.registry import read_model_card
    from autodetect.serving.onnx_runtime import OnnxYoloRuntime

    card = read_model_card(artifact)
    runtime = OnnxYoloRuntime(artifact / "model.onnx", card["classes"], SIZE, threads, "rect")
    options = PredictOptions.from_hyperparameters(card["hyperparameters"])
    app = FastAPI()

    @app.get("/readyz")
    async def ready():
        return {"status": "ready", "threads": runtime.session.get_session_options().intra_op_num_threads}

    @app.post("/score")
    def score(body: bytes = Body(..., media_type="application/octet-stream")):
        return {"boxes": [d.__dict__ for d in runtime.predict([runtime.prepare(load_rgb(body))], options)[0]]}

    return app


def naive_app(artifact: Path, threads: int):
    """The usual first attempt: decode and call ultralytics predict in the request handler."""
    import torch
    from fastapi import FastAPI
    from ultralytics import YOLO

    from autodetect.data.images import load_rgb
    from autodetect.models.registry import read_model_card

    card = read_model_card(artifact)
    hp, names = card["hyperparameters"], card["classes"]
    model = YOLO(str(artifact / "model.pt"), task="detect")
    model.predict(np.full((SIZE, SIZE, 3), 114, np.uint8), imgsz=SIZE, verbose=False)
    torch.set_num_threads(threads)  # after predict's setup: ultralytics' select_device resets it to min(8, cores - 1)
    app = FastAPI()

    @app.get("/readyz")
    async def ready():
        return {"status": "ready", "threads": torch.get_num_threads()}

    @app.post("/score")
    async def score(request: Request):
        image = load_rgb(await request.body())
        result = model.predict(image[..., ::-1], imgsz=SIZE, conf=hp["box_score_threshold"],
                               iou=hp["nms_iou_threshold"], max_det=hp["box_detections_per_image"], verbose=False)[0]
        height, width = image.shape[:2]
        return {"boxes": [{"box": {"topX": x1 / width, "topY": y1 / height, "bottomX": x2 / width, "bottomY": y2 / height},
                           "label": names[int(c)], "score": float(s)}
                          for (x1, y1, x2, y2), s, c in zip(result.boxes.xyxy.tolist(), result.boxes.conf.tolist(),
                                                            result.boxes.cls.tolist())]}

    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command: list[str], url: str, log: Path) -> subprocess.Popen:
    import httpx

    env = {**os.environ, "AUTODETECT_API_KEYS": KEY}
    process = subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{command[:4]} exited with {process.returncode}; see {log}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    process.kill()
    raise SystemExit(f"{command[:4]} was not ready within 300 s; see {log}")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()


async def load(url: str, image: bytes, concurrency: int, requests: int) -> tuple[list[float], float]:
    """Closed-loop clients; the latencies of every request and the wall time. aiohttp, not httpx: on a
    machine the servers share with their clients, httpx's ~3.5 ms of CPU a request (aiohttp: ~1) is
    taken from the server under test."""
    import aiohttp

    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/octet-stream"}
    latencies: list[float] = []
    per_client = max(2, requests // concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300)) as session:
        async def one() -> None:
            async with session.post(f"{url}/score", data=image, headers=headers) as response:
                response.raise_for_status()
                await response.read()

        await asyncio.gather(*(one() for _ in range(concurrency)))  # connections up, caches warm

        async def client_loop():
            for _ in range(per_client):
                t = time.perf_counter()
                await one()
                latencies.append(time.perf_counter() - t)

        started = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        return latencies, time.perf_counter() - started


def measure_server(url: str, image: bytes, c: int, requests: int) -> tuple[list[float], float]:
    return asyncio.run(load(url, image, c, requests))


# -- report ----------------------------------------------------------------------------------------

def report(results: list[Result], ours: dict[str, str]) -> bool:
    """The table, then each autodetect server against the raw runtime of its letterbox and the naive server."""
    width = max(len(r.mode) for r in results) + 2
    print(f"\n{'mode':<{width}}{'conc':>5}{'img/s':>9}{'p50 ms':>9}{'p99 ms':>9}")
    for r in results:
        print(f"{r.mode:<{width}}{r.concurrency:>5}{r.throughput:>9.2f}{r.p50_ms:>9.1f}{r.p99_ms:>9.1f}")
    by = {(r.mode, r.concurrency): r for r in results}
    ok = True
    for mode, raw_mode in ours.items():
        print(f"\ntargets for {mode}, against {raw_mode} and the naive server of this run:")
        for c in LEVELS:
            result, raw, naive = by[mode, c], by[raw_mode, c], by[NAIVE, c]
            for name, value, target in ((f"c={c:<2} throughput / raw onnx", result.throughput / raw.throughput, 0.9),
                                        (f"c={c:<2} throughput / naive", result.throughput / naive.throughput, 1.5)):
                ok &= value >= target
                print(f"  {name:<32}{value:6.2f}x  (target >= {target}x)  {'ok' if value >= target else 'MISSED'}")
        ratio = by[mode, 1].p50_ms / by[raw_mode, 1].p50_ms
        ok &= ratio <= 1.15
        print(f"  {'c=1  p50 / raw onnx p50':<32}{ratio:6.2f}x  (target <= 1.15x)  {'ok' if ratio <= 1.15 else 'MISSED'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=32, help="requests per concurrency level and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; every mode is measured once a round, interleaved")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads of every runtime (0: the CPUs available)")
    parser.add_argument("--servers", default="rect:0,square:0",
                        help="autodetect servers to run, LETTERBOX:MAX_BATCH_SIZE,... (0: the server's default)")
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--naive-server", type=Path, help=argparse.SUPPRESS)  # internal: run the naive server
    parser.add_argument("--naive-onnx", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from autodetect.serving.model import available_cpus, default_batch_size

    threads = args.threads or available_cpus()
    if args.naive_server:
        import uvicorn

        app = (naive_onnx_app if args.naive_onnx else naive_app)(args.naive_server, threads)
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
        return 0

    import onnxruntime
    import torch

    configs = [(letterbox, int(batch)) for letterbox, batch in (item.split(":") for item in args.servers.split(","))]
    torch.set_num_threads(threads)
    print(f"CPU: {available_cpus()} available (load average {os.getloadavg()[0]:.1f}); {threads} intra-op threads "
          f"for every runtime; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}")
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        root = Path(tmp)
        artifact, image = build_artifact(root), test_image(root)
        print(f"yolov8n at {SIZE}, one {len(image) // 1024} KB 640x480 JPEG a request; {args.rounds} rounds of "
              f"{args.requests} requests a level", flush=True)
        naive_port = free_port()
        naive_url = f"http://127.0.0.1:{naive_port}"
        naive_onnx_url = f"http://127.0.0.1:{(naive_onnx_port := free_port())}"
        servers = [start([sys.executable, __file__, "--naive-server", str(artifact), "--port", str(naive_port),
                          "--threads", str(threads)], naive_url, root / "naive.log"),
                   start([sys.executable, __file__, "--naive-server", str(artifact), "--port", str(naive_onnx_port),
                          "--threads", str(threads), "--naive-onnx"], naive_onnx_url, root / "naive-onnx.log")]
        import httpx

        for name, url in ((NAIVE, naive_url), (NAIVE_ONNX, naive_onnx_url)):
            print(f"{name}: {httpx.get(url + '/readyz').json()['threads']} intra-op threads")
        ours: dict[str, str] = {}  # mode -> its raw mode
        urls: dict[str, str] = {}
        raws: dict[str, tuple[str, int]] = {}  # raw mode -> (letterbox, batch)
        for letterbox, batch in configs:
            port = free_port()
            servers.append(start([sys.executable, "-m", "autodetect.cli", "serve", "--model", str(artifact),
                                  "--host", "127.0.0.1", "--port", str(port), "--threads", str(threads),
                                  "--letterbox", letterbox, "--max-batch-size", str(batch),
                                  "--max-wait-ms", str(args.max_wait_ms)],
                                 f"http://127.0.0.1:{port}", root / f"autodetect-{letterbox}-{batch}.log"))
            resolved = batch or default_batch_size("cpu")
            mode = f"autodetect ({letterbox}, batch<={resolved})"
            raw = f"raw onnx ({letterbox}, batch<={resolved})"
            ours[mode], urls[mode], raws[raw] = raw, f"http://127.0.0.1:{port}", (letterbox, resolved)
        try:
            modes = {raw: (RawOnnx(artifact, image, threads, letterbox, batch).measure, LEVELS)
                     for raw, (letterbox, batch) in raws.items()}
            raw_torch = RawTorch(artifact, image, threads)
            print(f"{RAW_TORCH}: {raw_torch.threads} intra-op threads; autodetect servers: --threads {threads}", flush=True)
            modes[RAW_TORCH] = (raw_torch.measure, (1,))
            modes[NAIVE] = (lambda c, n: measure_server(naive_url, image, c, n), LEVELS)
            modes[NAIVE_ONNX] = (lambda c, n: measure_server(naive_onnx_url, image, c, n), LEVELS)
            for mode, url in urls.items():
                modes[mode] = (lambda c, n, url=url: measure_server(url, image, c, n), LEVELS)
            pooled: dict[tuple[str, int], tuple[list[float], float]] = {}
            for round_ in range(args.rounds):
                for c in LEVELS:  # interleaved, so that a busy spell of the machine hits every mode alike
                    for mode, (measure, levels) in modes.items():
                        if c in levels:
                            latencies, wall = measure(c, args.requests)
                            old = pooled.get((mode, c), ([], 0.0))
                            pooled[(mode, c)] = (old[0] + latencies, old[1] + wall)
                print(f"round {round_ + 1} of {args.rounds} done (load average {os.getloadavg()[0]:.1f})", flush=True)
        finally:
            for server in servers:
                stop(server)
    results = [Result(mode, c, len(lat) / wall, percentile(lat, 50), percentile(lat, 99))
               for (mode, c), (lat, wall) in pooled.items()]
    results.sort(key=lambda r: (list(modes).index(r.mode), r.concurrency))
    return 0 if report(results, ours) else 1


if __name__ == "__main__":
    sys.exit(main())
