"""Errors worded and shaped as the Kubernetes API server words them: a `Status` object with code and reason."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error answer of the emulated API server."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def status(self) -> dict[str, Any]:
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            body["details"] = self.details
        return body


def _subject(group_resource: str, name: str) -> str:
    return f'{group_resource} "{name}"' if name else group_resource


def _details(name: str, group: str, kind: str, **more: Any) -> dict[str, Any]:
    return {key: value for key, value in {"name": name, "group": group, "kind": kind, **more}.items() if value}


def bad_request(message: str, details: dict[str, Any] | None = None) -> ApiError:
    return ApiError(400, "BadRequest", message, details)


def not_found(group: str, plural: str, name: str) -> ApiError:
    group_resource = f"{plural}.{group}" if group else plural
    return ApiError(404, "NotFound", f"{_subject(group_resource, name)} not found", _details(name, group, plural))


def no_such_resource() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource")


def method_not_allowed(method: str) -> ApiError:
    return ApiError(405, "MethodNotAllowed", f"the server does not allow this method on the requested resource "
                                             f"({method})")


def already_exists(group: str, plural: str, name: str) -> ApiError:
    group_resource = f"{plural}.{group}" if group else plural
    return ApiError(409, "AlreadyExists", f"{_subject(group_resource, name)} already exists",
                    _details(name, group, plural))


def conflict(group: str, plural: str, name: str,
             why: str = "the object has been modified; please apply your changes to the latest version and try again",
             ) -> ApiError:
    group_resource = f"{plural}.{group}" if group else plural
    return ApiError(409, "Conflict", f"Operation cannot be fulfilled on {_subject(group_resource, name)}: {why}",
                    _details(name, group, plural))


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def invalid(group: str, kind: str, name: str, causes: list[tuple[str, str]]) -> ApiError:
    """422 Invalid; causes are (field, message) pairs such as ("spec.x", "Invalid value: 0: must be positive")."""
    group_kind = f"{kind}.{group}" if group else kind
    listed = "; ".join(f"{field}: {message}" for field, message in causes)
    if len(causes) > 1:
        listed = f"[{', '.join(f'{field}: {message}' for field, message in causes)}]"
    return ApiError(422, "Invalid", f"{_subject(group_kind, name)} is invalid: {listed}",
                    _details(name, group, kind, causes=[
                        {"reason": _cause_reason(message), "message": message, "field": field}
                        for field, message in causes]))


def _cause_reason(message: str) -> str:
    for prefix, reason in (("Required value", "FieldValueRequired"), ("Unsupported value", "FieldValueNotSupported"),
                           ("Forbidden", "FieldValueForbidden"), ("Too long", "FieldValueTooLong"),
                           ("Too many", "FieldValueTooMany"), ("Duplicate value", "FieldValueDuplicate")):
        if message.startswith(prefix):
            return reason
    return "FieldValueInvalid"


def unprocessable(message: str) -> ApiError:
    """A 422 with no field (a JSON Patch that does not apply), as the server's generic 422 reads."""
    return ApiError(422, "Invalid", message)


def internal(message: str) -> ApiError:
    return ApiError(500, "InternalError", f"Internal error occurred: {message}", {"causes": [{"message": message}]})


def unavailable(message: str = "the server is currently unable to handle the request") -> ApiError:
    return ApiError(503, "ServiceUnavailable", message)


def too_many_requests(message: str = "the server has received too many requests and has asked us to try again later",
                      ) -> ApiError:
    return ApiError(429, "TooManyRequests", message, {"retryAfterSeconds": 1})


def forbidden(group: str, plural: str, name: str, why: str) -> ApiError:
    group_resource = f"{plural}.{group}" if group else plural
    return ApiError(403, "Forbidden", f"{_subject(group_resource, name)} is forbidden: {why}",
                    _details(name, group, plural))
