"""Keep the memory a CPU step loop frees inside the process, so the next step's tensors do not arrive as fresh pages.

PyTorch has no caching allocator on CPU: every tensor is a malloc. glibc serves blocks above its mmap threshold
(128 KiB at start, raised as such blocks are freed) with their own mappings and gives the heap's free top back to
the system above its trim threshold; an SDS step allocates and frees tens of MB of sample tensors (a red cube's
view: ~40k samples, a (N, 3, 16) Jacobian of 7.7 MB among them), so each step came back as ~1000 page faults, each
a trap and a zeroed page (red cube, step 600, Lambertian render + backward: ~30 -> ~28 ms; faults per step ~900 ->
~40). Fixing both thresholds keeps freed blocks on the heap for the next step. This is what preloading jemalloc or
tcmalloc does for PyTorch CPU workloads (Intel's tuning guide), done from inside the process: no package, no
environment set before start. glibc only (``mallopt``); elsewhere nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's maximum on 64-bit: blocks up to 32 MiB come from the heap and are reused
TRIM_THRESHOLD = 1 << 30  # give the heap's free top back to the system only beyond 1 GiB


@functools.cache
def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds for this process (once; later calls do nothing). True when set."""
    path = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(path)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, musl without mallopt): nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
