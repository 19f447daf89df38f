"""The process: uvicorn serving the app. uvicorn handles SIGTERM and SIGINT itself: it stops
accepting connections, lets the requests in flight finish (up to graceful_timeout_s), then runs
the app's shutdown (the batcher stops last)."""

from __future__ import annotations

import os

from fastapi import FastAPI

from autodetect.serving.app import create_app
from autodetect.serving.config import ENV_CONFIG, ServerConfig


def serve(config: ServerConfig) -> None:
    import uvicorn

    common = dict(host=config.host, port=config.port, timeout_graceful_shutdown=config.graceful_timeout_s,
                  log_level="info")
    if config.workers == 1:
        uvicorn.Server(uvicorn.Config(create_app(config), **common)).run()
        return
    # Several worker processes re-create the app from an import string; the config travels in the env.
    os.environ[ENV_CONFIG] = config.to_env()
    uvicorn.run("autodetect.serving.server:app_from_env", factory=True, workers=config.workers, **common)


def app_from_env() -> FastAPI:
    """The app factory uvicorn's worker processes call (--workers > 1)."""
    return create_app(ServerConfig.from_env())
