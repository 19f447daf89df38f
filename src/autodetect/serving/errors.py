"""The scoring server's typed errors. Each carries its HTTP status; the transport (app.py) turns
every one of them, and autodetect's ImageError, into a JSON error in one place."""

from __future__ import annotations

from autodetect.errors import AutodetectError


class ServingError(AutodetectError):
    status: int = 500


class BadRequest(ServingError):
    status = 400


class Unauthorized(ServingError):
    status = 401


class NotFound(ServingError):
    status = 404


class PayloadTooLarge(ServingError):
    status = 413


class UnsupportedMediaType(ServingError):
    status = 415


class NotReady(ServingError):
    """The model is still loading or warming up, or the server is stopping."""

    status = 503


class Overloaded(ServingError):
    """The queue of images waiting for the model is full: come back shortly (answered with Retry-After)."""

    status = 503
