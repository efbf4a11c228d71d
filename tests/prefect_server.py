"""A real Prefect server, work pool, deployments and workers for tests, started and stopped by PID.

    server = shared_server()           # one per test session (started on first use, stopped at exit)
    server.prefect("work-pool", "ls")  # the prefect CLI against it
    w = server.start_worker("w1")      # a process worker of the pool; server.stop(w) stops it for good

Everything binds 127.0.0.1 on a free port, lives in a temporary folder (PREFECT_HOME, DISTILL3D_HOME), runs with
analytics off and OMP_NUM_THREADS=1. Processes start in their own session (process group = their PID), so
stopping one also stops the flow-run processes a worker spawned: SIGTERM (the worker turns it into SIGINT), then
SIGKILL of the group if it is still alive after a grace period. Nothing is found or killed by name.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
POOL = "distill3d"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def stop_process(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM `proc`, wait up to `grace` s, then SIGKILL its process group (it leads its own session)."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=grace)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the group whose id is proc.pid: proc and what it spawned
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


class PrefectServer:
    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.env = {
            **os.environ,
            "PREFECT_HOME": str(root / "prefect"),
            "DISTILL3D_HOME": str(root / "home"),
            "PREFECT_API_URL": self.url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_WORKER_PREFETCH_SECONDS": "2",
            "PREFECT_LOGGING_LEVEL": "INFO",
            "PREFECT_API_DATABASE_TIMEOUT": "60",
            "PREFECT_SERVER_DATABASE_TIMEOUT": "60",
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        }
        self.env.pop("DISTILL3D_PARAMS", None)
        self.procs: list[subprocess.Popen] = []
        self.server: subprocess.Popen | None = None

    def _spawn(self, args: list[str], log_name: str, cwd: Path = REPO) -> subprocess.Popen:
        log = open(self.root / f"{log_name}.log", "ab")
        proc = subprocess.Popen(args, cwd=cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, timeout: float = 120.0) -> "PrefectServer":
        env_server = {k: v for k, v in self.env.items() if k != "PREFECT_API_URL"}
        log = open(self.root / "server.log", "ab")
        self.server = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=self.root, env=env_server, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise RuntimeError(f"prefect server exited ({self.server.returncode}):\n{self.log('server')[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"prefect server not healthy after {timeout} s:\n{self.log('server')[-3000:]}")

    def prefect(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        """Run the prefect CLI against this server (cwd: the repository, so `deploy` finds prefect.yaml)."""
        r = subprocess.run([sys.executable, "-m", "prefect", *args], cwd=REPO, env=self.env, capture_output=True,
                           text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"prefect {' '.join(args)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n"
                               f"{r.stderr[-3000:]}")
        return r

    def api(self, path: str, body: dict | None = None):
        """POST (with body) or GET a JSON API endpoint."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}{path}", data=data, method="POST" if body is not None else "GET",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def flow_runs(self) -> list[dict]:
        return self.api("/flow_runs/filter", {"limit": 200})

    def start_worker(self, name: str, limit: int | None = None) -> subprocess.Popen:
        args = [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--name", name, "--type",
                "process"]
        if limit:
            args += ["--limit", str(limit)]
        return self._spawn(args, f"worker-{name}")

    def stop(self, proc: subprocess.Popen) -> None:
        stop_process(proc)
        assert not alive(proc.pid), f"process {proc.pid} survived SIGTERM and SIGKILL"

    def close(self) -> None:
        for proc in reversed(self.procs):
            stop_process(proc)
        if self.server is not None:
            stop_process(self.server)


_SHARED: PrefectServer | None = None


def shared_server() -> PrefectServer:
    """The session's server (started on first call) with pool `distill3d` and prefect.yaml's deployments."""
    global _SHARED
    if _SHARED is None:
        root = Path(tempfile.mkdtemp(prefix="distill3d-prefect-"))
        server = PrefectServer(root)
        atexit.register(_close_shared, server, root)
        server.start()
        _SHARED = server
        server.prefect("work-pool", "create", POOL, "--type", "process")
        server.prefect("--no-prompt", "deploy", "--all", timeout=300)
    return _SHARED


def _close_shared(server: PrefectServer, root: Path) -> None:
    server.close()
    if os.environ.get("DISTILL3D_KEEP_TEST_SERVER_DIR") != "1":
        shutil.rmtree(root, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------------
# what the end-to-end tests generate with: the real toy prior, tiny sizes

PRIOR = Path(os.environ.get("DISTILL3D_TEST_PRIOR") or REPO / "models" / "toy_prior")

# {stage: {dotted.key: value}}: a few seconds per asset on a CPU
TINY: dict[str, dict] = {
    "nerf_sds": {"optimize.steps": 20, "preview_size": 32, "preview_views": 2},
    "extract_mesh": {"resolution": 32, "match_size": 16, "match_views": 2},
    "bake_texture": {"texture_size": 64},
    "export_asset": {"turntable_frames": 4, "turntable_size": 32, "views": 2, "views_size": 32},
    "evaluate": {"size": 32, "n_ring": 2},
}


def tiny_set_args(extra: dict[str, dict] | None = None) -> list[str]:
    """TINY (updated with `extra`) as `--set stage.key=value` CLI arguments."""
    merged = {s: dict(v) for s, v in TINY.items()}
    for s, v in (extra or {}).items():
        merged.setdefault(s, {}).update(v)
    return [a for s, v in merged.items() for k, x in v.items() for a in ("--set", f"{s}.{k}={json.dumps(x)}")]
