"""A Kubernetes API server emulator for the operator's tests (see server.py), and the tools around it."""

from apiserver.errors import ApiError
from apiserver.server import ANY, Emulator, Fault, Record

__all__ = ["ANY", "ApiError", "Emulator", "Fault", "Record"]
