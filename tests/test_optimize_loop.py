"""The distillation loop: resume from checkpoints, shading schedule, loss weighting."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distill3d.fields.encoding import HashGridConfig
from distill3d.fields.nerf import FieldConfig, RadianceField
from distill3d.guidance.sds import SDSConfig, surrogate_loss
from distill3d.optimize.config import DistillConfig
from distill3d.optimize.loop import choose_shading, distill
from distill3d.optimize.scene import volume_scene
from distill3d.optimize.losses import weighted_total
from test_guidance_sds import LinearPrior


def _field() -> RadianceField:
    torch.manual_seed(0)
    enc = HashGridConfig(n_levels=2, features_per_level=2, log2_hashmap_size=10, base_resolution=4, max_resolution=8)
    return RadianceField(FieldConfig(encoding=enc, hidden_width=8))


def _cfg(**kw) -> DistillConfig:
    base = dict(steps=10, checkpoint_every=5, render_size=8, n_samples=16, albedo_only_fraction=0.3,
                lambda_opacity=0.1, occupancy_every=4)
    base.update(kw)
    return DistillConfig(**base)


class Stop(Exception):
    pass


def _kill_after(step_to_die: int):
    def cb(step: int, info: dict) -> None:
        if step == step_to_die:
            raise Stop

    return cb


def test_resume_continues_from_last_checkpoint(tmp_path: Path) -> None:
    prior, cfg, sds = LinearPrior(), _cfg(), SDSConfig(guidance_scale=10.0)
    work = tmp_path / "run"
    f1 = _field()
    with pytest.raises(Stop):
        distill([volume_scene(f1, cfg)], prior, "a red cube", cfg, seed=3, work_dir=work, progress=False, guidance=sds,
                      callback=_kill_after(7))
    assert torch.load(work / "checkpoint.pt", weights_only=False)["step"] == 5

    seen: list[int] = []
    f2 = _field()  # a fresh process would rebuild the field from scratch
    hist = distill([volume_scene(f2, cfg)], prior, "a red cube", cfg, seed=3, work_dir=work, progress=False, guidance=sds,
                         callback=lambda s, i: seen.append(s))
    assert hist["start_step"] == 5 and hist["steps_run"] == 5 and hist["steps"] == 10
    assert seen == [5, 6, 7, 8, 9]
    assert len(hist["loss_total"]) == 10 and len(hist["losses"]["loss_sds"]) == 10
    assert hist["shading"][:3] == ["albedo"] * 3

    # Identical to an uninterrupted run (field, optimiser and RNG states all restored).
    f3 = _field()
    ref = distill([volume_scene(f3, cfg)], prior, "a red cube", cfg, seed=3, work_dir=tmp_path / "ref", progress=False, guidance=sds)
    assert ref["loss_total"] == pytest.approx(hist["loss_total"], rel=1e-5)
    for (k, a), b in zip(f2.state_dict().items(), f3.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)

    # Rerunning a finished run does nothing.
    again = distill([volume_scene(_field(), cfg)], prior, "a red cube", cfg, seed=3, work_dir=work, progress=False, guidance=sds)
    assert again["steps_run"] == 0 and len(again["loss_total"]) == 10


def test_loop_trains_and_reports_times() -> None:
    prior = LinearPrior()
    f = _field()
    before = {k: v.clone() for k, v in f.state_dict().items()}
    cfg = _cfg(steps=6, albedo_only_fraction=0.0, shading_probs={"textureless": 1.0}, lambda_orient=1.0)
    hist = distill([volume_scene(f, cfg)], prior, "a cube", cfg, seed=0, progress=False)
    assert set(hist["losses"]) == {"loss_sds", "loss_orient", "loss_opacity"}
    assert hist["shading"] == ["textureless"] * 6
    assert all(all(0 <= t < 1000 for t in ts) for ts in hist["t"])
    assert hist["seconds"]["render"] > 0 and hist["seconds"]["prior"] > 0 and hist["seconds"]["backward"] > 0
    assert any(not torch.equal(before[k], v) for k, v in f.state_dict().items())


def test_shading_schedule() -> None:
    cfg = DistillConfig(steps=100, albedo_only_fraction=0.2, shading_probs={"albedo": 0.5, "textureless": 0.5})
    g = torch.Generator().manual_seed(0)
    assert {choose_shading(s, cfg, g) for s in range(20)} == {"albedo"}
    later = [choose_shading(s, cfg, g) for s in range(20, 100) for _ in range(5)]
    assert set(later) == {"albedo", "textureless"}
    with pytest.raises(ValueError):
        DistillConfig(shading_probs={"phong": 1.0})


def test_weighted_total_uses_lambdas_and_rejects_unknown_terms() -> None:
    lambdas = DistillConfig(lambda_sds=2.0, lambda_opacity=0.5, extra_lambdas={"vsd": 3.0}).lambdas()
    total = weighted_total({"loss_sds": torch.tensor(1.0), "loss_opacity": torch.tensor(4.0),
                            "loss_vsd": torch.tensor(1.0)}, lambdas)
    assert float(total) == pytest.approx(2.0 + 2.0 + 3.0)
    with pytest.raises(KeyError, match="loss_lora"):
        weighted_total({"loss_lora": torch.tensor(1.0)}, lambdas)


def test_textureless_steps_are_scored_against_the_textureless_prompt() -> None:
    from test_guidance_sds import WhiteningPrior

    seen: list[float] = []

    class Recorder:
        def __call__(self, prior, images, text, progress, generator=None, cameras=None):
            seen.append(float(text.cond[0, 0, 0]))  # LinearPrior embeds a prompt as len(prompt) / 10
            return {"loss_sds": images.mean()}

    shading: list[str] = []
    cfg = _cfg(albedo_only_fraction=0.0, shading_probs={"albedo": 1.0, "textureless": 1.0}, view_dependent_prompts=False)
    distill([volume_scene(_field(), cfg)], WhiteningPrior(), "a red cube", cfg, seed=0, progress=False,
            guidance=Recorder(), callback=lambda step, info: shading.append(info["shading"]))
    expect = {"albedo": len("a red cube") / 10, "textureless": len("a white cube") / 10}
    assert set(shading) == {"albedo", "textureless"}
    assert seen == pytest.approx([expect[m] for m in shading])


def test_orbit_cameras_and_random_backgrounds_reach_the_guidance() -> None:
    """camera_sampler "orbit" renders groups of the prior's views_per_sample cameras 90 degrees apart and hands them
    to the guidance; background "random" composites each group over one solid colour (white or uniform)."""
    seen: list = []

    class Recorder:
        def __call__(self, prior, images, text, progress, generator=None, cameras=None):
            seen.append((images.detach().clone(), cameras))
            return {"loss_sds": images.mean()}

    prior = LinearPrior()
    prior.views_per_sample = 4
    cfg = _cfg(steps=6, views_per_step=8, camera_sampler="orbit", background="random",
               background_white_probability=0.0, lambda_opacity=0.0)
    distill([volume_scene(_field(), cfg)], prior, "a red cube", cfg, seed=0, progress=False, guidance=Recorder())
    images, cams = seen[-1]
    assert images.shape[0] == 8 and len(cams) == 8
    az = cams.azimuth.view(2, 4)
    gaps = ((az[:, 1:] - az[:, :-1]) % 360)
    assert torch.allclose(gaps, torch.full_like(gaps, 90.0), atol=1e-3)
    assert torch.allclose(cams.elevation.view(2, 4), cams.elevation.view(2, 4)[:, :1].expand(2, 4))
    corner = images[:, :, 0, 0]  # the field starts nearly empty: the corner pixel is the background
    assert torch.allclose(corner[:4], corner[:1].expand(4, 3), atol=1e-3)  # one colour per group
    assert (corner[0] - corner[4]).abs().max() > 1e-3 and (corner < 0.999).any()  # groups differ, not white


def test_several_scenes_are_particles_of_one_guidance_call() -> None:
    """Two scenes (particles) render into one guidance batch each step and are optimised apart."""
    batches: list[int] = []

    class Recorder:
        def __call__(self, prior, images, text, progress, generator=None, cameras=None):
            batches.append(images.shape[0])
            return {"loss_sds": ((images - 0.5) ** 2).mean()}

    torch.manual_seed(1)
    a, b = _field(), _field()
    before = [f.encoding.table.detach().clone() for f in (a, b)]
    cfg = _cfg(steps=4, views_per_step=2)
    distill([volume_scene(a, cfg), volume_scene(b, cfg)], LinearPrior(), "a red cube", cfg, seed=0, progress=False,
            guidance=Recorder())
    assert batches == [4] * 4
    after = [f.encoding.table.detach() for f in (a, b)]
    assert all(not torch.equal(x, y) for x, y in zip(before, after)) and not torch.equal(after[0], after[1])


def test_renders_receive_the_guidance_gradient_contiguous() -> None:
    """The guidance scores (B, 3, H, W) images; the renders are (B, H, W, 3). The gradient reaching the renders is
    the guidance's, transposed back, and contiguous (the renderer's backward gathers it by ray: a transposed
    gradient made that gather ~60x slower)."""
    target = torch.rand(2, 3, 8, 8)
    rendered: list[torch.Tensor] = []
    grads: list[torch.Tensor] = []

    class Recorded(torch.nn.Module):
        """The volume scene, its renders and the gradient they receive recorded."""

        def __init__(self, scene):
            super().__init__()
            self.scene = scene
            self.losses, self.param_groups, self.step_begin = scene.losses, scene.param_groups, scene.step_begin

        def render(self, *args, **kwargs):
            out = self.scene.render(*args, **kwargs)
            rendered.append(out["rgb"].detach().clone())
            out["rgb"].register_hook(grads.append)
            return out

    class Surrogate:  # SDS's stop-gradient surrogate: gradient g / B w.r.t. the images, g = images - target
        def __call__(self, prior, images, text, progress, generator=None, cameras=None):
            return {"loss_sds": surrogate_loss(images, images.detach() - target)[0]}

    cfg = _cfg(steps=1, views_per_step=2, lambda_opacity=0.0, lambda_orient=0.0, albedo_only_fraction=1.0)
    distill([Recorded(volume_scene(_field(), cfg))], LinearPrior(), "a red cube", cfg, seed=0, progress=False,
            guidance=Surrogate())
    (grad,) = grads
    assert grad.shape == (2, 8, 8, 3) and grad.is_contiguous()
    assert torch.allclose(grad, (rendered[0] - target.permute(0, 2, 3, 1)) / 2, atol=1e-6)
