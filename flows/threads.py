"""Torch threads for worker processes: the cores shared among the workers running at once (`make run`'s stages,
`distill3d batch --concurrency N`'s subprocesses). torch's default of every core per process oversubscribes them:
measured 2026-11-30, 8 DreamFusion prompts at concurrency 2 with 2 threads each on 2 cores made 2 assets in 14 min,
against ~100 s per asset one at a time; with 1 thread each, 8 in 612 s."""

from __future__ import annotations

import os

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def worker_env(workers: int, threads: int | None = None, keep_explicit: bool = False) -> dict[str, str]:
    """os.environ with `threads` (default: cores / workers, at least 1) torch threads per process; with
    `keep_explicit`, a thread count already set in the environment wins."""
    n = str(threads or max(1, (os.cpu_count() or 1) // max(1, workers)))
    env = dict(os.environ)
    for var in THREAD_VARS:
        env[var] = env.get(var, n) if keep_explicit else n
    return env
