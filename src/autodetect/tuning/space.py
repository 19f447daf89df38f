"""Search space (placeholder until the tuning work lands)."""

from __future__ import annotations

from typing import Any


def parse_search_space(blocks: list[dict[str, Any]]) -> list:
    return blocks
