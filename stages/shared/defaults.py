"""Stage-specific defaults for nested params sections that a stage shares with others (e.g. `optimize`, a
`DistillConfig`): keys params.yaml does not set keep the stage's own defaults instead of the library's."""

from __future__ import annotations

from typing import Any

from pydantic import model_validator


def section_defaults(**defaults: dict[str, Any]):
    """A pydantic before-validator to put in a Params class body: ``_defaults = section_defaults(optimize={...})``.
    A section given as a mapping is merged over these defaults; an absent section uses the field's default."""

    def fill(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for key, values in defaults.items():
                if isinstance(data.get(key), dict):
                    data[key] = {**values, **data[key]}
        return data

    return model_validator(mode="before")(classmethod(fill))
