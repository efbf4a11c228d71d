"""Printing benchmark results as Markdown tables (pasteable into notes and the README) and saving them as JSON."""

from __future__ import annotations

import json
from pathlib import Path


class MarkdownTable:
    """Prints a header at construction, then one row per ``row`` call; each column (title, format spec) is as wide
    as its title, numbers formatted by the spec (e.g. ".2f")."""

    def __init__(self, *columns: tuple[str, str]) -> None:
        self.columns = columns
        print("| " + " | ".join(title for title, _ in columns) + " |")
        print("|" + "|".join("-" * (len(title) + 2) for title, _ in columns) + "|")

    def row(self, *values: object) -> None:
        cells = [f"{v:>{len(title)}{spec}}" for (title, spec), v in zip(self.columns, values, strict=True)]
        print("| " + " | ".join(cells) + " |", flush=True)


def save_json(path: Path | None, results: dict) -> None:
    """Writes ``results`` to ``path`` (its folder created); nothing when path is None."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n")
