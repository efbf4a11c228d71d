"""Prefect's environment, set before Prefect is imported (Prefect reads its settings at import).

`tasks/__init__.py` calls `configure()` first thing, so `import tasks...` (as `flows/` and the `distill3d` CLI do)
is enough. Variables already set by the user win; DISTILL3D_HOME is made absolute so the store and Prefect's home
stay put when the working directory changes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from stages.core.home import distill3d_home


def defaults(home: Path) -> dict[str, str]:
    """The environment distill3d runs Prefect in: offline, project-local, quiet."""
    return {
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": os.environ.get("DISTILL3D_LOG_LEVEL", "WARNING"),
        # the temporary server starts in ~4.5 s idle; leave room for a machine busy training
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "DO_NOT_TRACK": "1",
    }


def configure() -> Path:
    """Set Prefect's environment (user values win) and return DISTILL3D_HOME. Safe to call repeatedly."""
    home = distill3d_home()
    os.environ["DISTILL3D_HOME"] = str(home)
    for name, value in defaults(home).items():
        os.environ.setdefault(name, value)
    # Prefect creates PREFECT_HOME without parents; a missing one makes the temporary server fail to open its
    # database, exit with code 3, and be restarted until the start-up timeout (it reads 3 as "port in use").
    Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)
    if "prefect.context" in sys.modules:  # imported earlier (e.g. by a test): make it re-read the environment
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()
    return home


def results_dir() -> Path:
    """Where Prefect persists task results (a pathlib.Path: a str would be taken as a block name)."""
    return distill3d_home() / "prefect" / "results"
