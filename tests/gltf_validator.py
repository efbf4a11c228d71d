"""Test helper: run the Khronos glTF validator (tools/gltf/validate.mjs, npm package gltf-validator) on a file."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[1] / "tools" / "gltf"
SCRIPT = TOOLS / "validate.mjs"


def validator_available() -> bool:
    """True when node is on PATH and ``cd tools/gltf && npm install`` has been run."""
    return shutil.which("node") is not None and (TOOLS / "node_modules" / "gltf-validator").is_dir()


def validate_glb(path: str | Path, timeout: float = 60.0) -> dict:
    """The validator's JSON report for ``path`` (keys ``issues`` -> ``numErrors``, ``numWarnings``, ``messages``...).

    Raises RuntimeError when the validator cannot run or cannot read the file at all.
    """
    proc = subprocess.run(
        ["node", str(SCRIPT), str(path), "--json"], capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode not in (0, 1):  # 1 = the report has errors (still a report)
        raise RuntimeError(f"gltf validator failed ({proc.returncode}): {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def issue_summary(report: dict) -> list[str]:
    """'SEVERITY CODE pointer' for each reported issue (for assertion messages)."""
    names = ["ERROR", "WARNING", "INFO", "HINT"]
    return [f"{names[m['severity']]} {m['code']} {m.get('pointer', '')}" for m in report["issues"]["messages"]]
