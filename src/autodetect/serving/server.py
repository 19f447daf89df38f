"""The process: uvicorn serving the app. uvicorn handles SIGTERM and SIGINT itself: it stops
accepting connections, lets the requests in flight finish (up to graceful_timeout_s), then runs
the app's shutdown (the batcher stops last)."""

from __future__ import annotations

import os

import uvicorn
from fastapi import FastAPI

from autodetect.serving.app import create_app
from autodetect.serving.config import ENV_CONFIG, ServerConfig
from autodetect.serving.transport import DrainingServer, uvicorn_config


def serve(config: ServerConfig) -> None:
    if config.workers == 1:
        app = create_app(config)
        DrainingServer(uvicorn_config(app, config), app.state.plane.drain, config.drain_s).run()
        return
    # Several worker processes re-create the app from an import string; the config travels in the env.
    # (uvicorn.run's own steps, with the guarded Config; the supervisor stops its workers without a drain.)
    from uvicorn.supervisors import Multiprocess

    os.environ[ENV_CONFIG] = config.to_env()
    uv = uvicorn_config("autodetect.serving.server:app_from_env", config, factory=True)
    Multiprocess(uv, target=uvicorn.Server(uv).run, sockets=[uv.bind_socket()]).run()


def app_from_env() -> FastAPI:
    """The app factory uvicorn's worker processes call (--workers > 1)."""
    return create_app(ServerConfig.from_env())
