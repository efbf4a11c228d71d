"""Dotted-path access into nested mappings (params.yaml sections, metrics.json)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def lookup(data: Mapping[str, Any] | None, path: str) -> Any:
    """``data["a"]["b"]`` for path "a.b"; None when any step is missing."""
    value: Any = data
    for key in path.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value
