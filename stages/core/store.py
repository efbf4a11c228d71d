"""The content-addressed store, manifests, locks and atomic output directories.

A stage's output is a directory whose ``manifest.json`` (written last, ``complete: true``) names its stage key; a
directory without a complete manifest is never taken for an output. Writers work in a hidden temp dir beside the
target and rename it into place under a per-target file lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType

from pydantic import BaseModel

from stages.core.home import distill3d_home
from stages.core.keys import MANIFEST, stage_key
from stages.core.protocol import get_stage


def store_dir(stage: str, key: str) -> Path:
    """The content-addressed output directory of a stage run: $DISTILL3D_HOME/store/<stage>/<key[:16]>."""
    return distill3d_home() / "store" / stage / key[:16]


def read_manifest(out_dir: Path) -> dict | None:
    """The manifest of a complete output directory, else None."""
    try:
        manifest = json.loads((Path(out_dir) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("complete") is True else None


def is_complete(out_dir: Path, key: str | None = None) -> bool:
    """True if `out_dir` holds a finished output (for stage key `key`, when given)."""
    manifest = read_manifest(out_dir)
    return manifest is not None and (key is None or manifest.get("key") == key)


@contextlib.contextmanager
def dir_lock(target: Path) -> Iterator[None]:
    """Exclusive fcntl lock on the hidden file `.<name>.lock` beside `target` (kept: deleting lock files races)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def clean_stale(target: Path) -> None:
    """Remove temp and moved-aside dirs that interrupted writers of `target` left (call while holding the lock)."""
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in target.parent.glob(f".{target.name}.old-*"):
        shutil.rmtree(stale, ignore_errors=True)


def swap_into_place(tmp: Path, target: Path) -> None:
    """Rename `tmp` to `target`; an existing target is first renamed aside, then deleted."""
    old = None
    if target.exists() or target.is_symlink():
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
        os.rename(target, old / "x")
    os.rename(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def temp_beside(target: Path) -> Iterator[Path]:
    """A fresh hidden temp dir beside `target` that replaces it on normal exit and is deleted on error
    (call while holding the target's lock)."""
    clean_stale(target)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        yield tmp
        swap_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temp dir beside `target`; on normal exit it replaces `target`, on error it is deleted.

    Holds the lock of `target` throughout, so concurrent writers of one target run one after the other.
    """
    target = Path(target).absolute()
    with dir_lock(target), temp_beside(target) as tmp:
        yield tmp


def write_atomic(path: Path, text: str) -> None:
    """Write a text file so readers see the old or the new content, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def work_path(name: str, key: str) -> Path:
    return distill3d_home() / "work" / name / key[:16]


def work_dir(stage: str | ModuleType, params: BaseModel, inputs: Mapping[str, Path | str]) -> Path:
    """A scratch dir that outlives an interrupted run, for checkpoints: `$DISTILL3D_HOME/work/<stage>/<key[:16]>`.

    Same stage key, same dir: a rerun after a crash or Ctrl-C resumes from what it left. `execute` deletes it once
    the stage's output is complete.
    """
    module = get_stage(stage) if isinstance(stage, str) else stage
    path = work_path(module.NAME, stage_key(module, params, inputs))
    path.mkdir(parents=True, exist_ok=True)
    return path
