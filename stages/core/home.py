"""Where distill3d keeps its state: $DISTILL3D_HOME (the store, work dirs, Prefect's home, the hash cache)."""

from __future__ import annotations

import os
from pathlib import Path


def distill3d_home() -> Path:
    """$DISTILL3D_HOME (default ./.distill3d) as an absolute path."""
    return Path(os.environ.get("DISTILL3D_HOME") or ".distill3d").expanduser().resolve()
