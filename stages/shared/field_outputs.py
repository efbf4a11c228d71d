"""What a field-optimising stage (nerf_sds, sdf_nerf) writes besides the field: history and preview views."""

from __future__ import annotations

from pathlib import Path


def save_field_outputs(field, history: dict, out: Path, views: int, size: int) -> dict:
    """Write an optimised field (field.json + weights), history.json and views.png (albedo and Lambertian rows
    over a ring of cameras) into ``out``; return the manifest summary (timings, steps, final losses)."""
    import json

    import torch

    from distill3d.cameras import ring_cameras
    from distill3d.render.volume import render_field
    from distill3d.viz.grid import save_grid

    field.cpu().eval().save(out)
    (out / "history.json").write_text(json.dumps(history))
    cams = ring_cameras(views)
    with torch.no_grad():
        rows = [render_field(field, cams, size, shading=s, stratified=False)["rgb"] for s in ("albedo", "lambertian")]
    save_grid(torch.cat(rows), out / "views.png", ncols=views)
    last = {k: sum(v[-50:]) / max(1, len(v[-50:])) for k, v in history["losses"].items()}
    return {"seconds": history["seconds"], "steps": history["steps"], "final_losses": last}
