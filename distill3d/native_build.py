"""Builds, loads and binds the fused CPU kernels (``fields.hashgrid_cpu``, ``fields.mlp_head_cpu``,
``render.volume_cpu``): C++ source strings compiled at first use with ``torch.utils.cpp_extension.load_inline``
and called through ctypes.

Why this way: the sources are Python strings, so the project's code versions (which hash the imported .py files)
cover them; they include no torch header (plain arrays behind an ``extern "C"`` interface; tensors are checked and
allocated on the Python side), so a build compiles in ~2.5 s of CPU where the same code behind
``torch/extension.h`` took ~100 s. The library lands in ``$TORCH_EXTENSIONS_DIR/<name>`` (default: torch's
per-user cache folder, ``~/.cache/torch_extensions``), where ``<name>`` holds a hash of the source, the flags,
torch's version and install path and this CPU's model and instruction-set flags (the code is built with
``-march=native``: AVX-512 / AVX2 where the CPU has them, which the MLP head's loops need to beat torch's matmuls):
a changed kernel, another venv or another CPU builds its own folder, never over another's. Concurrent processes:
torch's own lock (a lock file that a killed build would leave behind for ever) is wrapped in an ``fcntl.flock`` on
``<name>.flock`` (released by the OS when its holder dies), under which a stale torch lock is removed; a
``<name>.ok`` stamp written after a successful build lets later processes load the library directly (no
cpp_extension import, no ninja run).

If a build fails (no compiler, no ninja, unwritable cache folder), ``NativeLibrary.get`` returns None after one
logged warning line and the callers keep their torch code. ``DISTILL3D_NATIVE=0`` forces the torch code (read at
every call, for debugging and the tests).

Binding: each source exports a version function and its kernels in float32 and float64 twins (``<name>_f32``,
``<name>_f64``); ``NativeLibrary`` checks the version, declares every function's ctypes signature from one table and
hands out ``kernel(name, dtype)``, the twin for a tensor dtype.

Threads: the kernels use OpenMP, the same libgomp as torch (loaded by torch before these libraries, which bind to
it by its soname), with torch's intra-op thread count: ``kernel()`` calls ``torch.get_num_threads()`` on the calling
thread, which sets the OpenMP count there like ``at::parallel_for`` does.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import sys
from pathlib import Path

import torch

log = logging.getLogger(__name__)

CFLAGS = ["-O3", "-fopenmp", "-fno-math-errno", "-march=native"]
LDFLAGS = ["-fopenmp"]

# ctypes argument codes of the signature tables: 'l' int64, 'i' int, 'u' uint32, 'd' double, 'p' pointer (``ptr``)
_CTYPES = {"l": ctypes.c_int64, "i": ctypes.c_int, "u": ctypes.c_uint32, "d": ctypes.c_double, "p": ctypes.c_void_p}
_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}
Signature = tuple[str, str | None]  # (argument codes, e.g. "lipp"; result code or None for void)


def enabled() -> bool:
    """False when ``DISTILL3D_NATIVE=0`` (or ``false``/``no``/``off``) forces the torch code."""
    return os.environ.get("DISTILL3D_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def _cpu_identity() -> str:
    """This CPU's model and instruction-set flags (what ``-march=native`` compiles for)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        keep = [ln for ln in lines if ln.split(":")[0].strip() in ("model name", "flags", "Features", "CPU part")]
        return "\n".join(dict.fromkeys(keep))
    except OSError:
        return platform.processor() + platform.machine()


def _build_root() -> Path:
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root:
        return Path(root)
    from torch.utils.cpp_extension import get_default_build_root

    return Path(get_default_build_root())


def _default_build_root_cheap() -> Path | None:
    """torch's default root without importing torch.utils.cpp_extension (~0.3 s: it imports setuptools)."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root:
        return Path(root)
    try:
        return Path(os.path.realpath(torch._appdirs.user_cache_dir(appname="torch_extensions")))
    except Exception:  # noqa: BLE001 - private helper moved: take the slow path
        return None


class NativeLibrary:
    """One C++ source built on first use. ``get()`` -> the ctypes library or None (one warning naming ``what`` and the
    reason); ``kernel(name, dtype)`` -> the float32 / float64 twin of a kernel, ready to call.

    ``version``: (function, value) the library must return (a stale build of an older interface is refused);
    ``kernels``: {name: signature} of the functions exported as ``<name>_f32`` and ``<name>_f64``; ``functions``:
    {name: signature} of the others."""

    def __init__(self, prefix: str, source: str, what: str, *, version: tuple[str, int],
                 kernels: dict[str, Signature], functions: dict[str, Signature] | None = None):
        self.prefix, self.source, self.what = prefix, source, what
        self.version, self.kernels, self.functions = version, kernels, functions or {}
        self._lib: ctypes.CDLL | None = None
        self._tried = False

    def bind(self, lib: ctypes.CDLL) -> None:
        """Check the library's version and declare each function's ctypes signature."""
        fn, want = self.version
        if getattr(lib, fn)() != want:
            raise RuntimeError(f"unexpected {self.what} version (want {want})")
        named = {f"{k}_{s}": sig for k, sig in self.kernels.items() for s in _SUFFIX.values()} | self.functions
        for name, (args, res) in named.items():
            f = getattr(lib, name)
            f.argtypes = [_CTYPES[c] for c in args]
            f.restype = None if res is None else _CTYPES[res]

    def available(self) -> bool:
        """True when native code is enabled (``DISTILL3D_NATIVE``) and this library built."""
        return enabled() and self.get() is not None

    def library(self) -> ctypes.CDLL:
        """The built library; RuntimeError when it cannot be built (callers check ``available()`` first)."""
        lib = self.get()
        if lib is None:
            raise RuntimeError(f"the native {self.what} are unavailable")
        return lib

    def kernel(self, name: str, dtype: torch.dtype):
        """The kernel ``name`` for tensors of ``dtype`` (float32 / float64), with this thread's OpenMP count set to
        torch's intra-op count."""
        lib = self.library()
        torch.get_num_threads()  # sets this thread's OpenMP thread count to torch's (as at::parallel_for does)
        return getattr(lib, f"{name}_{_SUFFIX[dtype]}")

    def name(self) -> str:
        key = "\0".join([self.source, " ".join(CFLAGS), " ".join(LDFLAGS), torch.__version__,
                         str(Path(torch.__file__).resolve().parent), sys.platform, _cpu_identity()])
        return f"{self.prefix}_{hashlib.sha256(key.encode()).hexdigest()[:12]}"

    def reset(self) -> None:
        """Forget the loaded library (the next ``get`` builds or loads again): for tests."""
        self._lib, self._tried = None, False

    def get(self) -> ctypes.CDLL | None:
        """The compiled library (built on first call), or None when it cannot be built (one warning logged)."""
        if not self._tried:
            self._tried = True
            try:
                self._lib = self._build()
            except Exception as e:  # noqa: BLE001 - any build failure means: use the torch code
                msg = " ".join(str(e).split())  # a build error ends with the reason (compiler output)
                log.warning("distill3d: native %s unavailable, using the torch code (%s: %s)", self.what,
                            type(e).__name__, msg if len(msg) <= 400 else msg[:150] + " ... " + msg[-250:])
                self._lib = None
        return self._lib

    def _load(self, path: Path) -> ctypes.CDLL:
        lib = ctypes.CDLL(str(path))
        self.bind(lib)
        return lib

    def _build(self) -> ctypes.CDLL:
        name = self.name()
        cheap_root = _default_build_root_cheap()
        if cheap_root is not None:
            so, ok = cheap_root / name / f"{name}.so", cheap_root / name / f"{name}.ok"
            if ok.exists() and so.exists():  # built (and loaded) before by some process: no ninja, no setuptools
                return self._load(so)
        import fcntl
        import shutil
        import sysconfig

        cxx = os.environ.get("CXX", "c++")  # what torch compiles with
        if shutil.which(cxx) is None:
            raise RuntimeError(f"no C++ compiler ({cxx!r} not found)")
        from torch.utils import cpp_extension

        build_dir = _build_root() / name
        build_dir.mkdir(parents=True, exist_ok=True)
        so, ok = build_dir / f"{name}.so", build_dir / f"{name}.ok"
        old_path = os.environ.get("PATH", "")
        with open(build_dir.parent / f"{name}.flock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # the OS releases it if this process dies mid-build
            try:
                stale = build_dir / "lock"  # torch's lock file: only a killed build leaves one while we hold the flock
                if stale.exists():
                    log.warning("removing a stale torch extension lock %s", stale)
                    stale.unlink()
                # ninja from the `ninja` wheel lies beside this interpreter, which need not be on PATH
                if shutil.which("ninja") is None:
                    os.environ["PATH"] = os.pathsep.join([sysconfig.get_path("scripts"), old_path])
                torch_log = logging.getLogger("torch.utils.cpp_extension")
                level = torch_log.level
                torch_log.setLevel(logging.ERROR)  # its compiler-version warnings: our one line says what matters
                try:
                    path = cpp_extension.load_inline(  # copies of the flags: torch appends to the lists
                        name, cpp_sources=[self.source], extra_cflags=list(CFLAGS), extra_ldflags=list(LDFLAGS),
                        build_directory=str(build_dir), is_python_module=False, no_implicit_headers=True,
                        verbose=False)
                finally:
                    torch_log.setLevel(level)
                lib = self._load(Path(path))
                tmp = ok.with_suffix(f".ok.{os.getpid()}")
                tmp.write_text(name + "\n")
                os.replace(tmp, ok)
                return lib
            finally:
                os.environ["PATH"] = old_path
                fcntl.flock(fh, fcntl.LOCK_UN)


def ptr(t: torch.Tensor | None) -> int | None:
    """A tensor's data pointer for a ctypes call (None: a null pointer). The tensor must stay referenced until the
    call returns: bind temporaries to a name first."""
    return None if t is None else t.data_ptr()
