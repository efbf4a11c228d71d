"""Prefect artifacts a person looks at: a markdown table of stage outputs with an embedded render."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from pathlib import Path

from stages.core.store import read_manifest

MAX_EMBED_BYTES = 2_000_000


def outputs_markdown(title: str, outputs: Mapping[str, str], image: Path | None = None) -> str:
    """Markdown: a table (stage, key, seconds, output) from each output's manifest, then `image` as a data URI."""
    lines = [f"## {title}", "", "| stage | key | seconds | output |", "|---|---|---|---|"]
    for stage, path in outputs.items():
        manifest = read_manifest(Path(path)) or {}
        key = str(manifest.get("key", ""))[:12]
        seconds = manifest.get("seconds", "")
        lines.append(f"| {stage} | `{key}` | {seconds} | `{path}` |")
    if image is not None and Path(image).is_file() and Path(image).stat().st_size <= MAX_EMBED_BYTES:
        data = base64.b64encode(Path(image).read_bytes()).decode()
        lines += ["", f"![{Path(image).name}](data:image/png;base64,{data})"]
    return "\n".join(lines) + "\n"


def artifact_key(text: str) -> str:
    """A valid artifact key (lowercase letters, digits, dashes) from any text."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]", "-", text.lower())).strip("-")[:64] or "distill3d"


def publish_outputs(title: str, outputs: Mapping[str, str], image: Path | None = None, key: str | None = None):
    """Create the markdown artifact inside the running flow (imports Prefect)."""
    from prefect.artifacts import create_markdown_artifact

    return create_markdown_artifact(
        markdown=outputs_markdown(title, outputs, image), key=artifact_key(key or title), description=title
    )
