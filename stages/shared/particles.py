"""Particle sets (ProlificDreamer): an artifact that holds several results of one stage, one per particle.

Layout: ``<artifact>/particles/<i>/`` is particle i's complete output (what the stage writes for a single result),
and the artifact's top level mirrors particle 0, so every reader of a single result (extract_mesh, a viewer, the
asset of `distill3d generate`) sees one. A stage that takes a particle set and works on one result at a time runs
``map_particles``: once per particle, each with its own folder of every particle-set input, its output in its own
``particles/<i>/``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

PARTICLES = "particles"


def particle_dirs(path: Path | str) -> list[Path]:
    """The particle folders of an artifact, in particle order ([] for a single result)."""
    root = Path(path) / PARTICLES
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def mirror_first(out: Path) -> None:
    """Copy particle 0's files to the artifact's top level (the single-result view of a particle set)."""
    first = Path(out) / PARTICLES / "0"
    for src in first.rglob("*"):
        if src.is_file():
            dst = Path(out) / src.relative_to(first)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)


def map_particles(run_one: Callable[[Any, dict[str, Path], Path], dict], params: Any, inputs: dict[str, Path],
                  out: Path) -> dict:
    """``run_one(params, inputs, out)`` once, or, when an input is a particle set, once per particle (inputs that
    are particle sets replaced by that particle's folder) into ``out/particles/<i>/``, then particle 0 mirrored at
    the top. Returns the single run's extras, or particle 0's with ``particles``: every particle's extras."""
    sets = {name: particle_dirs(path) for name, path in inputs.items()}
    counts = {len(dirs) for dirs in sets.values() if dirs}
    if not counts:
        return run_one(params, inputs, out)
    if len(counts) > 1:
        raise ValueError(f"particle sets of different sizes: { {k: len(v) for k, v in sets.items() if v} }")
    extras = []
    for i in range(counts.pop()):
        mine = {name: (sets[name][i] if sets[name] else path) for name, path in inputs.items()}
        target = out / PARTICLES / str(i)
        target.mkdir(parents=True)
        extras.append(run_one(params, mine, target))
    mirror_first(out)
    return {**extras[0], "particles": extras}
