"""What the server needs to sit on a network without a proxy in front: uvicorn's h11 protocol with header
and body read deadlines (408, then close), header size (h11: 400) and count (431) limits, a lingering close,
a connection cap, access logs without query strings, and a drain on SIGTERM (readiness false while the
listener still serves)."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING, Any, Callable

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

if TYPE_CHECKING:
    from autodetect.serving.config import ServerConfig

log = logging.getLogger(__name__)

LINGER_S = 2.0
TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                    b"content-length: 45\r\n\r\n" + b'{"error": "the request was not sent in time"}')


class LingeringTransport:
    """A transport whose close() sends the answer and a FIN, then discards what the client still sends until it
    hangs up or LINGER_S pass. Closing with unread bytes makes the kernel send a reset, and a reset throws away
    the answer the client has not read yet: a client still uploading an oversized header or body would see
    "connection reset" instead of its 400, 408, 413 or 431 (what Apache and nginx call a lingering close)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport, self._loop = transport, loop
        self._timer: asyncio.TimerHandle | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    @property
    def lingering(self) -> bool:
        return self._timer is not None

    def is_closing(self) -> bool:
        return self.lingering or self._transport.is_closing()

    def close(self) -> None:
        if self.is_closing():
            return
        if not self._transport.can_write_eof():
            return self._transport.close()
        self._transport.write_eof()
        self._transport.resume_reading()
        self._timer = self._loop.call_later(LINGER_S, self._transport.close)

    def lost(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


class GuardedH11Protocol(H11Protocol):
    """h11 with read deadlines: a request's headers must arrive within header_timeout_s of its first byte (or of
    the connection), its body within body_timeout_s of its headers; else 408 and the connection is closed.
    The deadlines come from the uvicorn Config (attribute `read_timeouts`), which workers get pickled."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any):
        super().__init__(config, *args, **kwargs)
        self._header_s, self._body_s = getattr(config, "read_timeouts", (10.0, 60.0))
        self._deadline: asyncio.TimerHandle | None = None
        self._reading: Any = None  # the cycle whose body is being read

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._linger = LingeringTransport(transport, self.loop)
        self.transport = self._linger  # type: ignore[assignment]
        self._arm(self._header_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._linger.lost()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._linger.lingering:
            return  # what the client sends after its answer and our FIN
        super().data_received(data)
        cycle = self.cycle
        if cycle is not None and cycle is not self._reading and not cycle.response_complete:
            self._reading = cycle  # a new request's headers are in: its body has a deadline of its own
            self._arm(self._body_s)
        if cycle is not None and cycle is self._reading and not cycle.more_body:
            self._disarm()  # read in full; what remains is the app's time, bounded elsewhere
        elif (cycle is None or cycle.response_complete) and self._deadline is None and not self.transport.is_closing():
            self._arm(self._header_s)  # the next request has begun

    def on_response_complete(self) -> None:
        if self.cycle is self._reading and self.cycle is not None and self.cycle.more_body:
            self._disarm()  # answered before its body was read (e.g. 413): the rest is not worth waiting for
            self.transport.close()
        super().on_response_complete()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        started = self.cycle is not None and self.cycle is self._reading and self.cycle.response_started
        log.info("closing %s:%s: the request's %s did not arrive in time", *(self.client or ("?", "?")),
                 "body" if self.cycle is self._reading and self.cycle is not None else "headers")
        if not started:
            self.transport.write(TIMEOUT_RESPONSE)
        self.transport.close()


class HeaderLimits:
    """ASGI middleware: 431 for a request with more than max_headers header lines or max_bytes of headers (h11
    bounds headers still arriving; this, those that arrived whole in one read)."""

    def __init__(self, app: Callable, max_headers: int, max_bytes: int):
        self.app, self.max_headers, self.max_bytes = app, max_headers, max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and (len(scope["headers"]) > self.max_headers or
                                        sum(len(k) + len(v) + 4 for k, v in scope["headers"]) > self.max_bytes):
            body = b'{"error": "too many header lines or bytes (at most %d, %d)"}' % (self.max_headers, self.max_bytes)
            await send({"type": "http.response.start", "status": 431,
                        "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


class RedactQuery(logging.Filter):
    """uvicorn's access log line without the query string (a key sent there must not land in a log)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0] + "?[redacted]", *args[3:])
        return True


class DrainingServer(uvicorn.Server):
    """On the first SIGTERM/SIGINT: readiness turns false at once (on_drain), the listener keeps serving for
    drain_s so that the balancer sees it and requests sent meanwhile are answered; then uvicorn's own graceful
    shutdown. A second signal skips the rest of the drain."""

    def __init__(self, config: uvicorn.Config, on_drain: Callable[[], None], drain_s: float):
        super().__init__(config)
        self.on_drain, self.drain_s = on_drain, drain_s
        self._draining = False

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self._draining or self.drain_s <= 0:
            return super().handle_exit(sig, frame)
        self._draining = True
        self.on_drain()
        log.info("draining for %.1f s before shutting down", self.drain_s)
        timer = threading.Timer(self.drain_s, super().handle_exit, (sig, frame))
        timer.daemon = True
        timer.start()


def uvicorn_config(app: Any, config: ServerConfig, **overrides: Any) -> uvicorn.Config:
    """uvicorn's Config with the guards above; overrides (e.g. log_level) win."""
    options = dict(host=config.host, port=config.port, timeout_graceful_shutdown=config.graceful_timeout_s,
                   log_level="info", http=GuardedH11Protocol, h11_max_incomplete_event_size=config.max_header_bytes,
                   limit_concurrency=config.max_connections, workers=config.workers)
    uv = uvicorn.Config(app, **(options | overrides))
    uv.read_timeouts = (config.header_timeout_s, config.body_timeout_s)
    logging.getLogger("uvicorn.access").addFilter(REDACT_QUERY)
    return uv


REDACT_QUERY = RedactQuery()
