"""Headless Chromium for tests: find it (installing Debian's ``chromium`` package when possible) and dump a page's
DOM after its scripts ran, or drive a page over the DevTools protocol (``DevToolsPage``: real time, software WebGL,
screenshots). CI installs the package up front (``apt-get install -y chromium``); a test skips only when
no Chromium exists and it cannot be installed here."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
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


# --- a page driven over the DevTools protocol (for pages that need real time: WebGL, the 3D viewer) -------------

# Software WebGL (SwiftShader through ANGLE) in headless Chromium: since M137 Chromium no longer falls back to it on
# its own, --enable-unsafe-swiftshader opts in (fine for trusted local test pages).
SOFTWARE_GL = ("--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist")
# The --disable-*backgrounding* / throttling flags keep frames and timers at full rate in a page nobody looks at.
# First WebGL work is slow in SwiftShader (compiling model-viewer's PBR and environment shaders: 3-20 s on 2 busy
# cores), during which the page's main thread answers nothing: give waits generous timeouts.
BASE_FLAGS = ("--headless", "--no-sandbox", "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-extensions", "--mute-audio", "--hide-scrollbars", "--disable-renderer-backgrounding",
              "--disable-background-timer-throttling", "--disable-backgrounding-occluded-windows")


class DevToolsPage:
    """One page of a headless Chromium driven over ``--remote-debugging-pipe`` (no port is opened): navigate,
    evaluate JavaScript, wait for a condition, screenshot. Every request the page makes is recorded in ``requests``
    (its URLs). Use as a context manager; the browser is stopped by its PID on exit."""

    def __init__(self, flags: tuple[str, ...] = SOFTWARE_GL, window: tuple[int, int] = (1024, 768)) -> None:
        self.flags, self.window = tuple(flags), window
        self.requests: list[str] = []
        self.console: list[str] = []
        self._next_id, self._buffer, self._session = 0, b"", None

    def __enter__(self) -> DevToolsPage:
        binary = require_chromium()
        self._profile = tempfile.TemporaryDirectory(prefix="chromium-profile-")
        to_chrome_r, self._to_chrome = os.pipe()  # chromium reads commands on its fd 3
        self._from_chrome, from_chrome_w = os.pipe()  # and writes replies on its fd 4

        def child_fds() -> None:  # move both ends out of the way first: either may already be fd 3 or 4
            r, w = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(r, 3)
            os.dup2(w, 4)

        argv = [binary, *BASE_FLAGS, *self.flags, f"--window-size={self.window[0]},{self.window[1]}",
                f"--user-data-dir={self._profile.name}", "--remote-debugging-pipe", "about:blank"]
        self._log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
                                        preexec_fn=child_fds, pass_fds=(3, 4))
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        try:
            targets = self.send("Target.getTargets")["targetInfos"]
            page = next(t["targetId"] for t in targets if t["type"] == "page")
            self._session = self.send("Target.attachToTarget", targetId=page, flatten=True)["sessionId"]
            for domain in ("Page", "Network", "Runtime"):
                self.send(f"{domain}.enable")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.process.poll() is None:
                self._session = None
                self._write({"id": self._new_id(), "method": "Browser.close"})
                self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if self.process.poll() is None:
            self.process.kill()  # by PID: only the browser this object started
            self.process.wait(timeout=10)
        for fd in (self._to_chrome, self._from_chrome):
            try:
                os.close(fd)
            except OSError:
                pass
        self._log.close()
        self._profile.cleanup()

    def log_tail(self, chars: int = 2000) -> str:
        """The end of Chromium's own output (stderr), for failure messages."""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-chars:]

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _write(self, message: dict) -> None:
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_chrome], [], [], left)[0]:
                raise TimeoutError("no reply from chromium")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe (it crashed or exited)")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def _event(self, message: dict) -> None:
        params = message.get("params", {})
        if message.get("method") == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
        elif message.get("method") == "Runtime.consoleAPICalled":
            self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
        elif message.get("method") == "Runtime.exceptionThrown":
            self.console.append("exception: " + params["exceptionDetails"].get("text", ""))

    def send(self, method: str, timeout_s: float = 30.0, **params) -> dict:
        """Send a DevTools command (to the page once attached) and return its result."""
        message = {"id": self._new_id(), "method": method, "params": params}
        if self._session is not None:
            message["sessionId"] = self._session
        self._write(message)
        deadline = time.monotonic() + timeout_s
        while True:
            reply = self._read(deadline)
            if reply.get("id") == message["id"]:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._event(reply)

    def goto(self, page: Path | str, timeout_s: float = 30.0) -> None:
        """Navigate to a local file (or URL) and wait for its load event."""
        url = Path(page).resolve().as_uri() if isinstance(page, Path) else page
        reply = self.send("Page.navigate", url=url)
        if reply.get("errorText"):
            raise RuntimeError(f"navigating to {url}: {reply['errorText']}")
        if not self.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'", timeout_s):
            raise TimeoutError(f"{url} did not finish loading in {timeout_s} s")

    def evaluate(self, expression: str, timeout_s: float = 30.0):
        """The value of a JavaScript expression in the page (JSON-able values only)."""
        result = self.send("Runtime.evaluate", timeout_s=timeout_s, expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} threw: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 30.0, every_s: float = 0.2):
        """Poll ``expression`` until it is truthy; its value, or None at the timeout."""
        deadline = time.monotonic() + timeout_s
        while True:  # (the page may be too busy to answer for a while: each evaluation may take what time is left)
            value = self.evaluate(expression, timeout_s=max(deadline - time.monotonic(), 5.0))
            if value or time.monotonic() > deadline:
                return value
            time.sleep(every_s)

    def screenshot(self, clip: dict | None = None) -> bytes:
        """PNG bytes of the viewport, or of ``clip`` = {x, y, width, height} in CSS pixels."""
        params = {"format": "png"}
        if clip is not None:
            params["clip"] = {**clip, "scale": 1}
        return base64.b64decode(self.send("Page.captureScreenshot", **params)["data"])
