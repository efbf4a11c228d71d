"""A file the project generates (dvc.yaml, README.md's results block): check it is current, or rewrite it atomically."""

from __future__ import annotations

import sys
from pathlib import Path


def sync(path: Path, wanted: str, check: bool, command: str) -> int:
    """With ``check``: 0 when ``path`` holds ``wanted``, else 1 and a line naming ``command``. Without: write
    ``wanted`` (temp file + rename) when it differs. Returns the exit code."""
    current = path.read_text() if path.is_file() else ""
    if check:
        if current != wanted:
            print(f"{path} is out of date: run `{command}`", file=sys.stderr)
            return 1
        return 0
    if current != wanted:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(wanted)
        tmp.replace(path)
        print(f"wrote {path}", file=sys.stderr)
    return 0
