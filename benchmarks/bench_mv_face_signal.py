"""Why multi-view SDS draws no face on a sphere: where the multi-view prior's one-step predictions put the face.

    python benchmarks/bench_mv_face_signal.py [--draws 32] [--seed 0]

Multi-view SDS (distill3d/guidance/multiview_sds.py, MVDream's x0 form) pulls each group of 4 renders toward the
prior's one-step prediction x0_hat(x_t; y, t, cameras) with classifier-free guidance and CFG rescale; its expected
gradient points at the mean of x0_hat over the noise. A face can only be distilled onto the front if x0_hat puts it
there, draw after draw. This benchmark renders each Janus-study object *without* its face (the toy world's ground
truth of the shape and colour alone, shaded, over a solid background) from one MVDream camera group (azimuths 0 =
front, 90, 180 = back, 270; elevation 15), noises it at several t, and runs the project's face detector
(``FaceDetector``, the Janus metric's) on every view of

* single draws of x0_hat: the share of draws with a face, per view kind (front / side / back);
* the mean of x0_hat over the draws (what SDS's expected gradient points at): face found or not per view;

at the guidance scale and rescale of the make-run Janus run (params.yaml ``comparison.runs.janus_mv``). For
contrast, the prior's own 4-view samples (DDIM, ``check_mv_prior``'s settings) of the same captions: the share with
a face in the front view and in the back view. Writes benchmarks/results/mv_face_signal.json and
docs/figures/mv_face_signal.png (per prompt and t: one draw, then the mean).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mdtable import MarkdownTable, save_json  # noqa: E402

from bench_janus import PROMPTS, group_specs  # noqa: E402

T_FRACTIONS = (0.2, 0.35, 0.5, 0.7, 0.9)


def main() -> int:
    import numpy as np
    import torch
    from PIL import Image

    from distill3d.cameras import spherical_cameras
    from distill3d.guidance.multiview_sds import guided_x0
    from distill3d.metrics.janus import FaceDetector
    from distill3d.priors.base import Conditioning, TextEmbeddings
    from distill3d.priors.loading import load_prior
    from distill3d.priors.multiview_checks import RING_AZIMUTHS, RING_KINDS, background_mask
    from distill3d.priors.sampling import sample_images
    from distill3d.toyworld.render import render_gt
    from distill3d.toyworld.vocab import parse_prompt
    from flows.methods import get_method
    from flows.plan import stage_params
    from stages.core.params import read_params_file
    from stages.shared.runs import points

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=32, help="noise draws per t")
    parser.add_argument("--samples", type=int, default=8, help="DDIM 4-view samples per prompt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prior", type=Path, default=ROOT / "models" / "toy_mv_prior")
    args = parser.parse_args()

    params_file = ROOT / "params.yaml"
    # the Janus run's distillation params, resolved as its runs resolve them (params.yaml + the run's overrides)
    run = points(group_specs()["mvdream"])[0]
    step = next(s for s in get_method("mvdream").steps if s.section == "mv_nerf")
    cfg = stage_params(step.stage, {}, run.overrides, params_file, section=step.section).guidance
    check = read_params_file(params_file)["check_mv_prior"]
    prior = load_prior(args.prior)
    detector = FaceDetector()
    gen = torch.Generator().manual_seed(args.seed)
    cams = spherical_cameras(list(RING_AZIMUTHS), [check["elevation"]] * 4)  # the check's ring
    cond = Conditioning(cameras=cams)
    background = torch.tensor([0.35, 0.5, 0.75])

    def faces(images: torch.Tensor) -> list[bool]:
        """Face found per view of (4, 3, H, W) images in [0, 1] (object = not the solid background)."""
        rgb = images.permute(0, 2, 3, 1)
        return [d["present"] for d in detector.detect(rgb, background_mask(images).float())]

    rows, figure_rows, result = [], [], {"guidance": cfg.model_dump(), "draws": args.draws, "prompts": {}}
    for prompt in PROMPTS:
        plain = parse_prompt(prompt.replace(" with a face", ""))
        gt = render_gt(plain, cams, prior.resolution, mode="shaded")
        mask = gt["mask"][..., None]
        x0 = prior.encode_images((gt["rgb"] * mask + (1 - mask) * background).permute(0, 3, 1, 2))
        emb = prior.embed([prompt])
        text = TextEmbeddings(cond=emb.cond.expand(4, -1, -1), uncond=emb.uncond)
        per_t = {}
        for frac in T_FRACTIONS:
            t = torch.full((4,), int(frac * prior.num_train_timesteps))
            a = prior.alphas_cumprod[t].view(-1, 1, 1, 1)
            total, found = torch.zeros_like(x0), np.zeros(4)
            with torch.no_grad():
                for k in range(args.draws):
                    x_t = prior.add_noise(x0, torch.randn(x0.shape, generator=gen), t)
                    eps_w, eps_c, _ = prior.predict_noise_cfg(x_t, t, text, cfg.guidance_scale, cond)
                    x0_hat = guided_x0(x_t, a, eps_w, eps_c, 4, cfg.rescale)
                    found += faces(prior.decode(x0_hat))
                    total += x0_hat
                    if k == 0:
                        figure_rows.append(prior.decode(x0_hat))
            mean = prior.decode(total / args.draws)
            figure_rows.append(mean)
            share = {kind: float(np.mean([found[i] / args.draws for i in range(4) if RING_KINDS[i] == kind]))
                     for kind in ("front", "side", "back")}
            mean_faces = dict(zip(("front", "side_left", "back", "side_right"), faces(mean)))
            per_t[str(frac)] = {"draws_with_face": share, "mean_prediction_face": mean_faces}
            rows.append((prompt, frac, share["front"], share["side"], share["back"],
                         "yes" if mean_faces["front"] else "no", "yes" if mean_faces["back"] else "no"))
        samples = sample_images(prior, [prompt] * (4 * args.samples), steps=check["steps"],
                                guidance_scale=check["guidance_scale"], generator=gen,
                                cond=Conditioning(cameras=cams[list(range(4)) * args.samples]))
        flags = [faces(samples[4 * i:4 * i + 4]) for i in range(args.samples)]
        result["prompts"][prompt] = {"one_step": per_t, "samples": {
            "front_face": float(np.mean([f[0] for f in flags])), "back_face": float(np.mean([f[2] for f in flags]))}}

    table = MarkdownTable(("prompt", "s"), ("t / T", ".2f"), ("draws: face front", ".2f"), ("side", ".2f"),
                          ("back", ".2f"), ("mean: face front", "s"), ("mean: back", "s"))
    for r in rows:
        table.row(*r)
    for prompt, res in result["prompts"].items():
        print(f"{prompt}: DDIM samples with a face in the front view {res['samples']['front_face']:.2f}, "
              f"in the back view {res['samples']['back_face']:.2f}")
    save_json(ROOT / "benchmarks" / "results" / "mv_face_signal.json", result)
    grid = torch.cat(figure_rows).permute(0, 2, 3, 1).clamp(0, 1).numpy()
    lines = [np.concatenate(list(grid[i:i + 4]), 1) for i in range(0, len(grid), 4)]
    pairs = [np.concatenate(lines[i:i + 2], 1) for i in range(0, len(lines), 2)]  # one draw | mean, per row
    image = Image.fromarray((np.concatenate(pairs, 0) * 255).astype(np.uint8))
    out = ROOT / "docs" / "figures" / "mv_face_signal.png"
    image.resize((image.width * 3, image.height * 3), Image.NEAREST).save(out)
    print(f"figure: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
