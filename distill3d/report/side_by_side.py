"""The methods side by side: one row per method, for each prompt its asset's turntable from the front and from the
back (the back view is where the Janus problem shows), as one PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from distill3d.viz.grid import save_grid


def turntable_views(gif: Path, fractions: tuple[float, ...] = (0.0, 0.5)) -> list[np.ndarray] | None:
    """Frames of a turntable GIF at the given fractions of a turn (0 = front), (H, W, 3) uint8; None if unreadable."""
    try:
        with Image.open(gif) as im:
            n = getattr(im, "n_frames", 1)
            out = []
            for f in fractions:
                im.seek(int(round(f * n)) % n)
                out.append(np.asarray(im.convert("RGB")))
            return out
    except OSError:
        return None


def methods_figure(assets: dict[str, dict[str, Path]], path: Path) -> Path | None:
    """``assets[method][prompt]`` = asset folder (turntable.gif). Rows: methods; columns: prompt x (front, back),
    prompts in sorted order (the first row's labels name them, the others their method). A missing asset is a blank
    cell. Returns the PNG's path, or None when no turntable could be read."""
    methods = list(assets)
    prompts = sorted({p for by_prompt in assets.values() for p in by_prompt})
    views = {(m, p): turntable_views(Path(assets[m][p]) / "turntable.gif") if p in assets[m] else None
             for m in methods for p in prompts}
    shapes = [v[0].shape for v in views.values() if v]
    if not shapes:
        return None
    blank = np.full(shapes[0], 255, np.uint8)
    cells, labels = [], []
    for m in methods:
        for p in prompts:
            v = views[(m, p)] or [blank, blank]
            for frame, side in zip(v, ("front", "back")):
                cells.append(frame if frame.shape == blank.shape else blank)
                labels.append(f"{p}: {side}" if m == methods[0] else f"{m}: {side}")
    return save_grid(np.stack(cells), path, ncols=2 * len(prompts), labels=labels,
                     scale=max(1, 160 // blank.shape[0]))
