"""Prompt sources for batch generation: a text file, a CSV file, or a folder of them -> `PromptRow`s.

Text (`.txt`, `.prompts`, `.prompt`): one prompt per line; blank lines and `#` comments are skipped; options after
a `|`, separated by spaces (shell quoting allowed)::

    a red cube
    a blue torus | seed=3
    a green sphere | method=dreamfusion name=sphere nerf_sds.optimize.steps=500 export_asset.turntable_frames=24

CSV (`.csv`): a header with a `prompt` column and optionally `method`, `seed`, `name`, `set` (options as in text
files: `nerf_sds.optimize.steps=500 extract_mesh.resolution=64`) and any `STAGE.key` column (one override per
column, empty cells ignored)::

    prompt,seed,nerf_sds.optimize.steps
    a red cube,0,500

A folder: every such file in it (not recursive), in name order.

A malformed row does not stop the others: it becomes a row with `error` set (a one-line reason) that the batch
reports. Only an unreadable source (missing, empty, a CSV without a `prompt` column) raises `StageError`.
This module only reads sources; flows/jobs.py turns rows into asset requests and checks them.
"""

from __future__ import annotations

import csv
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages.core.params import parse_override
from stages.core.protocol import StageError

TEXT_SUFFIXES = (".txt", ".prompts", ".prompt")
CSV_SUFFIXES = (".csv",)
ROW_OPTIONS = ("method", "seed", "name")  # non-override options a row may set


@dataclass
class PromptRow:
    """One prompt of a batch. `overrides` is {stage: {dotted.key: value}}; `error` a one-line reason or None."""

    prompt: str
    source: str  # "file:line", for messages
    method: str | None = None
    seed: int | None = None
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    name: str = ""  # unique within the batch: the asset's folder under the batch's output dir
    error: str | None = None


def slug(text: str, limit: int = 48) -> str:
    """Filesystem- and URL-safe lower-case name of `text`."""
    return (re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "prompt")[:limit].strip("-")


def _apply_option(row: PromptRow, item: str) -> None:
    """Apply one `key=value` option (method/seed/name or STAGE.dotted.key) to `row`; StageError if malformed."""
    key, value = parse_override(item)
    if key in ROW_OPTIONS:
        if key == "seed":
            if isinstance(value, bool) or not isinstance(value, int):
                raise StageError(f"seed must be an integer, not {value!r}")
            row.seed = value
        elif not isinstance(value, str) or not value.strip():
            raise StageError(f"{key} must be a non-empty word, not {value!r}")
        elif key == "method":
            row.method = value.strip()
        else:
            row.name = slug(value)
        return
    section, _, rest = key.partition(".")
    if not rest:
        raise StageError(f"unknown option {key!r}: use method=, seed=, name= or STAGE.key=value "
                         "(e.g. nerf_sds.optimize.steps=500)")
    row.overrides.setdefault(section, {})[rest] = value


def _row(prompt: str, options: list[str], source: str) -> PromptRow:
    row = PromptRow(prompt=" ".join(prompt.split()), source=source)
    try:
        if not row.prompt:
            raise StageError("empty prompt")
        for item in options:
            _apply_option(row, item)
    except StageError as exc:
        row.error = " ".join(str(exc).split())
    return row


def _split_options(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:  # an unclosed quote
        raise StageError(f"cannot read options {text.strip()!r}: {exc}") from None


def parse_text(text: str, origin: str = "<text>") -> list[PromptRow]:
    """Rows of a text prompt file (see the module docstring)."""
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        prompt, sep, opts = line.partition("|")
        source = f"{origin}:{lineno}"
        try:
            options = _split_options(opts) if sep else []
        except StageError as exc:
            rows.append(PromptRow(prompt=prompt.strip(), source=source, error=str(exc)))
            continue
        rows.append(_row(prompt, options, source))
    return rows


def parse_csv(text: str, origin: str = "<csv>") -> list[PromptRow]:
    """Rows of a CSV prompt file (see the module docstring)."""
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in (reader.fieldnames or [])]
    if "prompt" not in header:
        raise StageError(f"{origin}: a CSV prompt file needs a 'prompt' column (found {header or 'no header'})")
    unknown = [h for h in header if h not in ("prompt", "set", *ROW_OPTIONS) and "." not in h]
    if unknown:
        raise StageError(f"{origin}: unknown column(s) {unknown}: use prompt, method, seed, name, set "
                         "or STAGE.key columns (e.g. nerf_sds.optimize.steps)")
    rows = []
    for record in reader:
        cells = {(k or "").strip(): (v or "").strip() for k, v in record.items() if k is not None}
        if not any(cells.values()):
            continue
        source = f"{origin}:{reader.line_num}"
        options = [f"{k}={v}" for k, v in cells.items() if k not in ("prompt", "set") and v]
        try:
            options += _split_options(cells.get("set", ""))
        except StageError as exc:
            rows.append(PromptRow(prompt=cells.get("prompt", ""), source=source, error=str(exc)))
            continue
        rows.append(_row(cells.get("prompt", ""), options, source))
    return rows


def _files(source: Path) -> list[Path]:
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES + CSV_SUFFIXES)
        if not files:
            raise StageError(f"prompt folder {source} holds no {'/'.join(TEXT_SUFFIXES + CSV_SUFFIXES)} files")
        return files
    if not source.is_file():
        raise StageError(f"prompt source {source} not found (a .txt/.csv file or a folder of them)")
    return [source]


def read_prompts(source: str | Path) -> list[PromptRow]:
    """All rows of a prompt file or folder, each with a unique `name` (StageError if the source is unusable)."""
    source = Path(source)
    rows: list[PromptRow] = []
    for path in _files(source):
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise StageError(f"cannot read prompt file {path}: {exc}") from None
        parse = parse_csv if path.suffix.lower() in CSV_SUFFIXES else parse_text
        rows += parse(text, path.name)
    if not rows:
        raise StageError(f"prompt source {source} has no prompts")
    name_rows(rows)
    return rows


def name_rows(rows: list[PromptRow]) -> None:
    """Give every row a unique folder name: its `name=` option, else a slug of the prompt (+ seed/method when
    set), with -2, -3, ... appended to repeats."""
    seen: dict[str, int] = {}
    for row in rows:
        base = row.name or slug(row.prompt) + (f"-{slug(row.method)}" if row.method else "") + (
            f"-s{row.seed}" if row.seed is not None else "")
        count = seen.get(base, 0) + 1
        seen[base] = count
        row.name = base if count == 1 else f"{base}-{count}"
