"""``optimize.heap.keep_freed_memory``: after it, a freed block of tens of MB stays in the process for the next
allocation (the distillation step's tensors come back without page faults) instead of going back to the system
(glibc's defaults: a fresh mapping per block above 128 KiB, unmapped when freed). Each case runs in a fresh
interpreter: the setting is process-wide and the distillation loop sets it."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                           reason="mallopt is glibc's")

_PROBE = """
import torch
from distill3d.optimize.heap import keep_freed_memory
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
set_ = {keep} and keep_freed_memory()
t = torch.ones(5 << 20)  # 20 MB, first touched here
before = rss_mb()
del t
print(set_, before - rss_mb())
"""


def _freed_mb(keep: bool) -> tuple[str, float]:
    out = subprocess.run([sys.executable, "-c", _PROBE.format(keep=keep)], capture_output=True, text=True,
                         check=True, timeout=120, cwd=Path(__file__).parents[1]).stdout.split()
    return out[0], float(out[1])


@glibc
def test_freed_blocks_stay_in_the_process_only_after_the_setting() -> None:
    flag, given_back = _freed_mb(False)
    assert flag == "False" and given_back > 15  # glibc's default: the 20 MB block was its own mapping, unmapped
    flag, given_back = _freed_mb(True)
    assert flag == "True" and given_back < 2  # kept on the heap for the next step's tensors
