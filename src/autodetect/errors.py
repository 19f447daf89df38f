"""Typed errors. Each names where the problem is (file, line, field) so a user can fix it."""

from __future__ import annotations


class AutodetectError(Exception):
    """Base of every error autodetect raises on purpose; the CLI prints it without a traceback."""


class DataError(AutodetectError):
    """A data set problem, located by file and (where known) line."""

    def __init__(self, reason: str, *, file: str | None = None, line: int | None = None):
        self.reason, self.file, self.line = reason, file, line
        where = f"{file}:{line}" if file and line else (file or "")
        super().__init__(f"{where}: {reason}" if where else reason)


class SpecError(AutodetectError):
    """An invalid spec or hyperparameter, located by its dotted field path."""

    def __init__(self, field: str, reason: str):
        self.field, self.reason = field, reason
        super().__init__(f"{field}: {reason}")


class ImageError(AutodetectError):
    """An image that cannot be used: unreadable, truncated, too large, or a decompression bomb."""


class WeightsUnavailable(AutodetectError):
    """Pretrained weights were asked for and could not be had."""


class TransientError(AutodetectError):
    """A failure the input did not cause, which a retry may not meet (a network fetch refused or cut short)."""


class WeightsDownloadFailed(WeightsUnavailable, TransientError):
    """Pretrained weights could not be downloaded this time."""
