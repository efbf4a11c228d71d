"""Content hashes and stage keys: a stage's output is named by what made it, never by paths.

    stage key = sha256(stage name, code version (stages/core/code.py), canonical params, content hashes of inputs)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping
from functools import lru_cache
from pathlib import Path
from types import ModuleType

from pydantic import BaseModel

from stages.core.code import code_version
from stages.core.home import distill3d_home
from stages.core.params import params_json
from stages.core.protocol import all_inputs, check_inputs

MANIFEST = "manifest.json"


class _HashCache:
    """sha256 of files remembered by (device, inode, size, mtime_ns), like DVC's state db.

    Makes re-hashing multi-GB weights free when nothing changed. Entries for files modified in the last 2 s are
    not stored (their mtime may not yet tell a later write apart). Any sqlite trouble just disables the cache.
    """

    def __init__(self, path: Path):
        self.path = path
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection | None:
        if self._db is None and os.environ.get("DISTILL3D_HASH_CACHE", "1") != "0":
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS files (dev INT, ino INT, size INT, mtime INT, sha TEXT,"
                    " PRIMARY KEY (dev, ino))"
                )
            except sqlite3.Error:
                self._db = None
        return self._db

    def digest(self, path: Path) -> str:
        st = path.stat()
        db = self._conn()
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                row = db.execute("SELECT size, mtime, sha FROM files WHERE dev=? AND ino=?", (st.st_dev, st.st_ino))
                found = row.fetchone()
                if found and found[0] == st.st_size and found[1] == st.st_mtime_ns:
                    return found[2]
        sha = file_sha256(path)
        if db is not None and time.time_ns() - st.st_mtime_ns > 2_000_000_000:
            with contextlib.suppress(sqlite3.Error):
                db.execute(
                    "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)",
                    (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, sha),
                )
        return sha


@lru_cache(maxsize=4)
def _hash_cache(home: Path) -> _HashCache:
    return _HashCache(home / "hashes.sqlite")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def iter_files(root: Path) -> Iterator[Path]:
    """Every file under ``root``, in a deterministic (sorted) order."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath, name)


def dir_content_hash(path: Path, use_cache: bool = True) -> str:
    """sha256 over the sorted relative paths and contents of every file under `path`, except a top-level
    manifest.json; for a single file, over its content alone. Independent of where `path` is."""
    path = Path(path)
    digest = _hash_cache(distill3d_home()).digest if use_cache else file_sha256
    if path.is_file():
        return digest(path)
    if not path.is_dir():
        raise FileNotFoundError(path)
    h = hashlib.sha256()
    for file in iter_files(path):
        rel = file.relative_to(path).as_posix()
        if rel == MANIFEST:
            continue
        h.update(rel.encode() + b"\0" + digest(file).encode() + b"\n")
    return h.hexdigest()


def input_hashes(stage_module: ModuleType, inputs: Mapping[str, Path | str]) -> dict[str, str]:
    """{name: content hash} for the stage's declared inputs (StageError naming a missing one)."""
    check_inputs(stage_module, inputs)
    return {name: dir_content_hash(Path(inputs[name])) for name in all_inputs(stage_module) if name in inputs}


def stage_key(stage_module: ModuleType, params: BaseModel, inputs: Mapping[str, Path | str]) -> str:
    """sha256 of stage name, code version, canonical params and input content hashes (never paths)."""
    payload = {
        "stage": stage_module.NAME,
        "code": code_version(stage_module),
        "params": json.loads(params_json(params)),
        "inputs": input_hashes(stage_module, inputs),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
