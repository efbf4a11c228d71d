"""Headless Chromium for tests: find it (installing Debian's ``chromium`` package when possible) and dump a page's
DOM after its scripts ran. CI installs the package up front (``apt-get install -y chromium``); a test skips only when
no Chromium exists and it cannot be installed here."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import pytest

CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "chromium", "chromium-browser")


def find_chromium() -> str | None:
    """Path of a Chromium binary, or None."""
    for name in CANDIDATES:
        path = name if os.path.isabs(name) else shutil.which(name)
        if path and os.access(path, os.X_OK):
            return path
    return None


def _try_install() -> str:
    """Install Debian's chromium (root + apt-get only); returns why it could not, or ''."""
    if shutil.which("apt-get") is None:
        return "no apt-get on this machine"
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        return "not root, cannot apt-get install chromium"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
                ["apt-get", "update"],
                ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if cmd[1] == "install" and done.returncode == 0:
            return ""
    return f"apt-get install chromium failed: {done.stderr.strip()[-300:]}"


@lru_cache(maxsize=1)
def chromium_or_reason() -> tuple[str | None, str]:
    path = find_chromium()
    if path:
        return path, ""
    reason = _try_install()
    path = find_chromium()
    return path, "" if path else (reason or "chromium not found after installing it")


def require_chromium() -> str:
    """The Chromium binary; ``pytest.skip`` only if none exists and installing it failed."""
    path, reason = chromium_or_reason()
    if path is None:
        pytest.skip(f"headless Chromium unavailable: {reason}")
    return path


def dump_dom(page: Path, budget_ms: int = 5000, timeout_s: float = 60.0) -> str:
    """Load ``page`` (a local HTML file) in headless Chromium, let its scripts and loads run for up to ``budget_ms``
    of virtual time, and return the serialised DOM (``--dump-dom``). Network access is not needed."""
    binary = require_chromium()
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        done = subprocess.run(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--allow-file-access-from-files", f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}",
             "--dump-dom", Path(page).resolve().as_uri()],
            capture_output=True, text=True, timeout=timeout_s,
        )
    if done.returncode != 0 or "<html" not in done.stdout:
        raise RuntimeError(f"chromium failed (rc {done.returncode}): {done.stderr.strip()[-500:]}")
    return done.stdout
