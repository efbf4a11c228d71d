"""The stage protocol and its machinery: params, content hashes, stage keys, atomic cached execution.

A stage is a module with::

    NAME = "nerf_sds"
    INPUTS = ("prior",)                     # artifact names it reads (see ARTIFACTS)
    OPTIONAL_INPUTS = ("init_mesh",)        # optional: artifacts it uses when given (hashed into the key only then)
    ARTIFACT = "nerf"                       # optional: the artifact name of its output (default: ARTIFACTS / NAME)
    class Params(StageParams): ...          # pydantic, extra fields forbidden
    def run(params, inputs: dict[str, Path], out: Path) -> dict: ...   # writes into `out`, returns manifest extras
    def check(params, inputs) -> None: ...  # optional: cheap validation before anything runs (no torch imports)

`execute` runs a stage into an output directory exactly once per stage key (stage name + code version + params +
input *contents*), atomically: the work happens in a hidden temp dir beside the output and is renamed into place
with its manifest.json written last, so a directory with a complete manifest is always a finished output.

This module imports no Prefect and no torch: DVC calls stages through `python -m stages`, and the `distill3d`
CLI's all-cached fast path plans with it in well under a second. Stage modules should import torch inside `run`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
# A textured mesh artifact may hold the textured mesh it was refined from (texture_finetune writes it, export_asset
# carries it into the asset, evaluate scores it as the "before").
MESH_BEFORE = "mesh_before.glb"

# Artifact name (what a downstream stage lists in INPUTS) -> the stage that makes it.
ARTIFACTS: dict[str, str] = {
    "prior": "train_prior",
    "nerf": "nerf_sds",
    "mesh": "extract_mesh",
    "asset": "export_asset",
    "metrics": "evaluate",
    "canonical": "render_canonical_views",
    "pseudo_gt": "pseudo_gt",
}


class StageParams(BaseModel):
    """Base of every stage's `Params`: unknown fields are errors, nested models allowed."""

    model_config = ConfigDict(extra="forbid")


class StageError(Exception):
    """A one-line, user-facing error (bad params, missing input, ...). The CLIs print it without a traceback."""


# ----------------------------------------------------------------------------------------------------------------
# stage modules


_REGISTRY: dict[str, ModuleType] = {}


def register_stage(module: ModuleType, name: str | None = None) -> None:
    """Make `get_stage(name)` return `module` (tests inject fake stages this way)."""
    _REGISTRY[name or module.NAME] = module


def unregister_stage(name: str) -> None:
    _REGISTRY.pop(name, None)


def get_stage(name: str) -> ModuleType:
    """The stage module for `name`: a registered one, `stages.<name>`, or a dotted module path."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    module_name = name if "." in name else f"stages.{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name in (module_name, "stages"):
            raise StageError(f"unknown stage {name!r} (no module {module_name})") from None
        raise
    for attr in ("NAME", "INPUTS", "Params", "run"):
        if not hasattr(module, attr):
            raise StageError(f"stage module {module_name} lacks {attr} (see stages/common.py for the protocol)")
    return module


def artifact_name(stage_module: ModuleType) -> str:
    """The name downstream stages use for this stage's output (`ARTIFACT` attribute or the ARTIFACTS table)."""
    name = getattr(stage_module, "ARTIFACT", None)
    if name:
        return name
    for artifact, stage in ARTIFACTS.items():
        if stage == stage_module.NAME:
            return artifact
    return stage_module.NAME


# ----------------------------------------------------------------------------------------------------------------
# params


def parse_override(item: str) -> tuple[str, Any]:
    """'a.b=v' -> ('a.b', v) with v read as JSON (numbers, true/false, null, lists) or else kept as a string."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise StageError(f"bad --set {item!r}: expected KEY=VALUE, e.g. guidance.guidance_scale=50")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
        if raw.strip().startswith(("[", "{")):
            with contextlib.suppress(yaml.YAMLError):
                value = yaml.safe_load(raw)
    return key, value


def set_dotted(data: dict, key: str, value: Any) -> None:
    """data['a']['b'] = value for key 'a.b', creating dicts on the way; dict values are merged, not replaced."""
    *parents, leaf = key.split(".")
    node = data
    for i, part in enumerate(parents):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise StageError(f"cannot set {key!r}: {'.'.join(parents[: i + 1])} is not a mapping")
        node = child
    if isinstance(value, Mapping) and isinstance(node.get(leaf), dict):
        for k, v in value.items():
            set_dotted(node[leaf], str(k), v)
    else:
        node[leaf] = dict(value) if isinstance(value, Mapping) else value


def read_params_file(params_file: Path) -> dict:
    """The whole params.yaml as a dict (StageError if missing or not YAML)."""
    try:
        data = yaml.safe_load(Path(params_file).read_text())
    except FileNotFoundError:
        raise StageError(f"params file {params_file} not found") from None
    except yaml.YAMLError as exc:
        raise StageError(f"params file {params_file} is not valid YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise StageError(f"params file {params_file} must be a mapping of sections")
    return data


def format_validation_error(exc: ValidationError, section: str) -> str:
    """One line naming each bad field path, e.g. 'invalid param nerf_sds.guidance.scale: ... (got -1)'."""
    parts = []
    for err in exc.errors():
        path = ".".join([section, *(str(p) for p in err["loc"])])
        got = err.get("input")
        shown = "" if err["type"] == "missing" else repr(got) if isinstance(got, str) else str(got)
        shown = " ".join(shown.split())
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        parts.append(f"{path}: {err['msg']}" + (f" (got {shown})" if shown else ""))
    return "invalid param " + "; ".join(parts)


def validate_params(stage_module: ModuleType, data: Mapping, section: str | None = None) -> StageParams:
    """`stage_module.Params` from a dict, ValidationError -> one-line StageError."""
    try:
        return stage_module.Params.model_validate(dict(data))
    except ValidationError as exc:
        raise StageError(format_validation_error(exc, section or stage_module.NAME)) from None


def load_params(
    stage_module: ModuleType,
    params_file: Path | None = None,
    section: str | None = None,
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
) -> StageParams:
    """A stage's validated Params: section `section` (default: the stage's NAME) of `params_file`, then overrides.

    `overrides` is a dict {dotted.key: value} (values used as given, dicts merged) or a list of 'dotted.key=value'
    strings (values read as JSON, else strings). A missing section means the stage's defaults.
    """
    section = section or stage_module.NAME
    data: dict = {}
    if params_file is not None:
        whole = read_params_file(Path(params_file))
        if section not in whole and section != stage_module.NAME:
            raise StageError(f"params file {params_file} has no section {section!r}")
        found = whole.get(section) or {}
        if not isinstance(found, dict):
            raise StageError(f"section {section!r} of {params_file} must be a mapping, got {found!r}")
        data = json.loads(json.dumps(found))  # deep copy
    items = overrides.items() if isinstance(overrides, Mapping) else map(parse_override, overrides or ())
    for key, value in items:
        set_dotted(data, key, value)
    return validate_params(stage_module, data, section)


def params_json(params: BaseModel) -> str:
    """Canonical JSON of params (sorted keys, no spaces): the form that enters the stage key."""
    return json.dumps(params.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


# ----------------------------------------------------------------------------------------------------------------
# content hashes


def distill3d_home() -> Path:
    """$DISTILL3D_HOME (default ./.distill3d) as an absolute path: the store, Prefect's home, the hash cache."""
    return Path(os.environ.get("DISTILL3D_HOME") or ".distill3d").expanduser().resolve()


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
        sha = _file_sha256(path)
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


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _iter_files(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath, name)


def dir_content_hash(path: Path, use_cache: bool = True) -> str:
    """sha256 over the sorted relative paths and contents of every file under `path`, except a top-level
    manifest.json; for a single file, over its content alone. Independent of where `path` is."""
    path = Path(path)
    digest = _hash_cache(distill3d_home()).digest if use_cache else _file_sha256
    if path.is_file():
        return digest(path)
    if not path.is_dir():
        raise FileNotFoundError(path)
    h = hashlib.sha256()
    for file in _iter_files(path):
        rel = file.relative_to(path).as_posix()
        if rel == MANIFEST:
            continue
        h.update(rel.encode() + b"\0" + digest(file).encode() + b"\n")
    return h.hexdigest()


@lru_cache(maxsize=None)
def _package_files_hash(package: str) -> str:
    spec = importlib.util.find_spec(package)  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return "absent"
    h = hashlib.sha256()
    for location in spec.submodule_search_locations:
        root = Path(location)
        for file in _iter_files(root):
            if file.suffix == ".py":
                h.update(file.relative_to(root).as_posix().encode() + b"\0" + file.read_bytes() + b"\0")
    return h.hexdigest()


def code_version(stage_module: ModuleType) -> str:
    """sha256 of the stage module's source and of every .py file of the `distill3d` package (cached per process)."""
    source = getattr(stage_module, "__file__", None)
    own = Path(source).read_bytes() if source else repr(sorted(vars(stage_module))).encode()
    return hashlib.sha256(own + _package_files_hash("distill3d").encode()).hexdigest()


def input_hashes(stage_module: ModuleType, inputs: Mapping[str, Path | str]) -> dict[str, str]:
    """{name: content hash} for the stage's declared inputs (StageError naming a missing one and its maker)."""
    check_inputs(stage_module, inputs)
    return {name: dir_content_hash(Path(inputs[name])) for name in all_inputs(stage_module) if name in inputs}


def all_inputs(stage_module: ModuleType) -> tuple[str, ...]:
    """INPUTS then OPTIONAL_INPUTS (artifacts a stage uses when given, e.g. export_asset's colour field)."""
    return tuple(stage_module.INPUTS) + tuple(getattr(stage_module, "OPTIONAL_INPUTS", ()))


def require_file(inputs: Mapping[str, Path | str], name: str, file: str, hint: str = "") -> None:
    """StageError unless input artifact ``name`` holds ``file``; ``hint`` says what to pass instead."""
    if not (Path(inputs[name]) / file).is_file():
        raise StageError(f"input {name} {inputs[name]} holds no {file}" + (f" ({hint})" if hint else ""))


def check_inputs(stage_module: ModuleType, inputs: Mapping[str, Path | str]) -> None:
    extra = sorted(set(inputs) - set(all_inputs(stage_module)))
    if extra:
        raise StageError(f"stage {stage_module.NAME} takes inputs {list(all_inputs(stage_module))}, not {extra}")
    for name in all_inputs(stage_module):
        maker = ARTIFACTS.get(name, "an upstream stage")
        if name not in inputs:
            if name not in stage_module.INPUTS:
                continue  # optional
            raise StageError(f"stage {stage_module.NAME} needs input {name!r} (made by stage {maker}): pass --in {name}=DIR")
        if not Path(inputs[name]).exists():
            raise StageError(
                f"input {name!r} of stage {stage_module.NAME} not found at {inputs[name]} "
                f"(made by stage {maker}; e.g. `dvc repro {maker}`)"
            )


def stage_key(stage_module: ModuleType, params: BaseModel, inputs: Mapping[str, Path | str]) -> str:
    """sha256 of stage name, code version, canonical params and input content hashes (never paths)."""
    payload = {
        "stage": stage_module.NAME,
        "code": code_version(stage_module),
        "params": json.loads(params_json(params)),
        "inputs": input_hashes(stage_module, inputs),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# atomic output directories


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
def _temp_beside(target: Path) -> Iterator[Path]:
    """A fresh hidden temp dir beside `target` that replaces it on normal exit and is deleted on error."""
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
    with dir_lock(target), _temp_beside(target) as tmp:
        yield tmp


def work_dir(stage: str | ModuleType, params: BaseModel, inputs: Mapping[str, Path | str]) -> Path:
    """A scratch dir that outlives an interrupted run, for checkpoints: `$DISTILL3D_HOME/work/<stage>/<key[:16]>`.

    Same stage key, same dir: a rerun after a crash or Ctrl-C resumes from what it left. `execute` deletes it once
    the stage's output is complete.
    """
    module = get_stage(stage) if isinstance(stage, str) else stage
    path = _work_path(module.NAME, stage_key(module, params, inputs))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _work_path(name: str, key: str) -> Path:
    return distill3d_home() / "work" / name / key[:16]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def execute(
    stage_module: ModuleType,
    params: StageParams,
    inputs: Mapping[str, Path | str],
    out_dir: Path,
    force: bool = False,
) -> Path:
    """Run `stage_module` into `out_dir` unless it already holds a complete output with the same stage key.

    Returns `out_dir`. The stage writes into a temp dir beside `out_dir` that is renamed into place after its
    manifest.json (stage, key, params, input hashes, code version, times, `run`'s extras, content hash) is
    written, so an interrupted run never leaves a complete-looking dir. Concurrent calls for one `out_dir`
    serialise on a file lock; the second finds the first's output and returns it without running.
    """
    out_dir = Path(out_dir).absolute()
    inputs = {name: Path(p) for name, p in inputs.items()}
    if hasattr(stage_module, "check"):
        check_inputs(stage_module, inputs)
        stage_module.check(params, inputs)
    key = stage_key(stage_module, params, inputs)
    if not force and is_complete(out_dir, key):
        return out_dir
    with dir_lock(out_dir):
        if not force and is_complete(out_dir, key):  # made by another process while we waited for the lock
            return out_dir
        with _temp_beside(out_dir) as tmp:
            started, t0 = _now(), time.perf_counter()
            extra = stage_module.run(params, dict(inputs), tmp)
            manifest = {
                "format": MANIFEST_FORMAT,
                "stage": stage_module.NAME,
                "key": key,
                "params": params.model_dump(mode="json"),
                "inputs": {n: {"hash": dir_content_hash(p), "path": str(p)} for n, p in inputs.items()},
                "code_version": code_version(stage_module),
                "started": started,
                "finished": _now(),
                "seconds": round(time.perf_counter() - t0, 3),
                "extra": extra or {},
                "content_hash": dir_content_hash(tmp, use_cache=False),
                "complete": True,
            }
            with open(tmp / MANIFEST, "w") as f:
                f.write(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
                f.flush()
                os.fsync(f.fileno())
    shutil.rmtree(_work_path(stage_module.NAME, key), ignore_errors=True)
    return out_dir
