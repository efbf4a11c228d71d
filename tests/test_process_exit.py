"""`exit_process` (stages/core/process_exit.py): the exit code, atexit handlers and flushed output are kept when
the interpreter's teardown is skipped; both command lines end through it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from stages.core.process_exit import exit_code

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("code, status", [(None, 0), (0, 0), (3, 3), ("error: bad input", 1)])
def test_exit_process_keeps_code_atexit_handlers_and_buffered_output(tmp_path, code, status) -> None:
    marker = tmp_path / "atexit.txt"
    script = textwrap.dedent(f"""
        import atexit, sys
        from pathlib import Path
        from stages.core.process_exit import exit_process
        atexit.register(lambda: Path({str(marker)!r}).write_text("ran"))
        sys.stdout.write("no newline, still buffered")
        exit_process({code!r})
        print("never reached")
    """)
    r = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == status, r.stderr
    assert r.stdout == "no newline, still buffered" and marker.read_text() == "ran"
    assert r.stderr.strip() == (code if isinstance(code, str) else "")


def test_exit_code_follows_systemexit() -> None:
    assert [exit_code(c) for c in (None, 0, 2, 130)] == [0, 0, 2, 130]


@pytest.mark.parametrize("argv, status, stream_text", [
    (["-m", "stages", "no_such_stage", "--out", "x"], 2, "error: unknown stage 'no_such_stage'"),
    (["-m", "flows.cli", "generate", "--method", "nosuch", "--prompt", "a red cube", "--out", "x"], 2,
     "error: unknown method 'nosuch'"),
])
def test_both_command_lines_exit_with_their_status_and_message(tmp_path, argv, status, stream_text) -> None:
    env = {**os.environ, "DISTILL3D_HOME": str(tmp_path / "home")}
    r = subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True, env=env)
    assert r.returncode == status and stream_text in r.stderr, r.stderr
    assert not (REPO / "x").exists()
