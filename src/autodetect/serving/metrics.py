"""Prometheus metrics of one server: requests by route and status, request latency, scoring requests in
flight, batch sizes, inference time, and the model's name and version. Each app has its own registry (no globals),
so several apps can live in one process (tests)."""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
NOT_SCORING = ("/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready")  # probes and scrapes


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("autodetect_requests", "Requests by route, method (GRPC for gRPC) and status (the HTTP "
                                "code, or the gRPC status name)",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("autodetect_request_duration_seconds", "Request latency (HTTP and gRPC)",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("autodetect_batch_size", "Images per model call (micro-batch size)",
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.inference = Histogram("autodetect_inference_duration_seconds", "Time of one batched model call",
                                   buckets=LATENCY_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("autodetect_requests_in_flight", "Scoring requests being served now, queued included "
                               "(the autoscaler's signal: a GPU pod's CPU says little)", registry=self.registry)
        self.model_info = Gauge("autodetect_model_info", "The model being served (value 1)",
                                ["name", "version", "family", "model_name", "runtime"], registry=self.registry)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference.observe(seconds)

    def set_model(self, name: str, version: str, family: str, model_name: str, runtime: str) -> None:
        self.model_info.clear()
        self.model_info.labels(name, version, family, model_name, runtime).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware (no body buffering): counts every HTTP response by its route template
    (so /v2/models/{name}/infer is one series whatever the name), and times it."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 500
        scoring = scope["path"] not in NOT_SCORING
        if scoring:
            self.metrics.in_flight.inc()

        async def send_and_note(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            if scoring:
                self.metrics.in_flight.dec()
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe_request(route, scope["method"], status, time.perf_counter() - started)
