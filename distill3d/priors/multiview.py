"""MVDream's multi-view diffusion prior (Shi et al. 2023, "MVDream: Multi-view Diffusion for 3D Generation"), on the
toy world.

A multi-view prior denoises the F = 4 views of one object at once, each conditioned on its camera, so the views it
draws (and the gradients it gives score distillation) agree in 3D: one face, on the front (no Janus). Two changes to
a text-to-image UNet make it (MVDream sec. 3.1), both on top of a stock diffusers ``UNet2DConditionModel``:

* **Camera embedding** (MVDream eq. 2's c): the flattened 4x4 camera-to-world matrix of each view, its translation
  scaled to unit length (MVDream ``camera_utils.normalize_camera``), goes through an MLP Linear(16, D)-SiLU-Linear(D, D)
  whose output is *added to the time embedding* (D = the time-embedding width, 4 x the first block's channels).
  diffusers' ``class_embed_type="projection", projection_class_embeddings_input_dim=16`` is exactly that module
  (``TimestepEmbedding(16, D)``: ``class_embedding.linear_1`` / ``.linear_2``, SiLU between, added to ``emb``); the
  cameras go in as ``class_labels``.
* **3D self-attention**: every transformer block's *self*-attention attends over the tokens of all F views of a
  sample together, ``(b f) l c -> b (f l) c`` (MVDream's ``BasicTransformerBlock3D``); cross-attention to the text
  and the feed-forward stay per view, and no weight is added: ``MultiViewAttnProcessor`` only reshapes around
  diffusers' own ``AttnProcessor2_0`` and is installed on the ``attn1`` layers.

Cameras are given in MVDream's convention (``mvdream_camera``), so a toy multi-view UNet and the released MVDream
weights (``distill3d.priors.mvdream``) read the same 16 numbers for the same ``distill3d.cameras.Cameras``.

Folder layout (the toy prior's, ``kind: "toy_multiview"``)::

    prior.json          {"kind": "toy_multiview", "resolution": 32, "views_per_sample": 4, "architecture": {...}}
    unet/               diffusers UNet2DConditionModel (class_embed_type "projection"; EMA weights)
    text_encoder/       transformers CLIPTextModel
    tokenizer/          word-level PreTrainedTokenizerFast over the toy vocabulary
    scheduler/          diffusers DDPMScheduler config (v-prediction, cosine schedule)

The attention processors are not saved (diffusers never saves them): ``MultiViewToyPrior`` installs them whenever it
builds or loads a UNet.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0
from pydantic import Field
from transformers import CLIPTextModel, PreTrainedTokenizerFast

from distill3d.cameras import Cameras
from distill3d.priors.base import Conditioning, PriorError, to_epsilon
from distill3d.priors.toy import ToyPrior, ToyPriorArchitecture, build_unet
from distill3d.toyworld.vocab import PromptError, parse_prompt

CAMERA_DIM = 16
KIND = "toy_multiview"

# distill3d's world (+Y up, front +Z) -> MVDream's world (Blender: +Z up, front -Y): x' = x, y' = -z, z' = y.
# The matrix of MVDream's ``camera_utils.convert_opengl_to_blender``, applied on the left of the c2w.
DISTILL3D_TO_MVDREAM_WORLD = torch.tensor(
    [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)


def mvdream_camera(cameras: Cameras) -> torch.Tensor:
    """(B) cameras -> (B, 16) MVDream camera conditioning: the c2w in MVDream's world, translation normalised to unit
    length, flattened row-major.

    Camera convention. distill3d's c2w (``distill3d.cameras``: +Y up, front = +Z, OpenGL camera axes: columns right, up,
    backwards, position) is exactly the matrix MVDream's ``camera_utils.create_camera_to_world_matrix(elevation,
    azimuth)`` builds for the same angles (position (cos e sin a, sin e, cos e cos a), right = forward x up, the same
    OpenGL axes). MVDream then maps it to Blender's world with ``convert_opengl_to_blender`` (left-multiply by
    ``DISTILL3D_TO_MVDREAM_WORLD``: x' = x, y' = -z, z' = y; the camera's own axes stay OpenGL) and
    ``normalize_camera`` divides the translation by its norm (+1e-8). So

        mvdream_camera(c) = flatten(M @ c2w with t / (|t| + 1e-8)),   M = DISTILL3D_TO_MVDREAM_WORLD,

    and azimuth / elevation mean the same in both (MVDream's ``get_camera(elevation=e, azimuth_start=a)``); azimuth 0
    looks at the object's front (distill3d +Z; MVDream/Blender -Y, the front view of its Objaverse renders).
    Example: azimuth 0, elevation 0 -> [1, 0, 0, 0,  0, 0, -1, -1,  0, 1, 0, 0,  0, 0, 0, 1].
    Distance and field of view are dropped by the normalisation, as in MVDream.
    """
    m = DISTILL3D_TO_MVDREAM_WORLD.to(cameras.c2w) @ cameras.c2w
    t = m[:, :3, 3]
    m = torch.cat([torch.cat([m[:, :3, :3], (t / (t.norm(dim=-1, keepdim=True) + 1e-8))[..., None]], dim=2),
                   m[:, 3:, :]], dim=1)
    return m.reshape(-1, CAMERA_DIM)


def multiview_camera_labels(batch: int, cond: Conditioning | None, views: int) -> torch.Tensor:
    """(B, 16) ``mvdream_camera`` inputs for a batch of B = ``batch`` images in groups of ``views``. Raises a one-line
    PriorError unless ``cond.cameras`` holds exactly B cameras and B is a multiple of ``views``."""
    if cond is None or cond.cameras is None:
        raise PriorError(f"a multi-view prior needs the views' cameras (Conditioning(cameras=...)), {views} per sample")
    if batch % views or len(cond.cameras) != batch:
        raise PriorError(f"a multi-view prior denoises groups of {views} views: got {batch} images and "
                         f"{len(cond.cameras)} cameras (need B = {views}k images with one camera each)")
    return mvdream_camera(cond.cameras)


class MultiViewAttnProcessor:
    """Self-attention over the tokens of ``num_views`` consecutive images together (MVDream's 3D self-attention).

    hidden_states (B F, L, C) -> reshaped to (B, F L, C), attended by diffusers' ``AttnProcessor2_0`` with the layer's
    own to_q / to_k / to_v / to_out (no new weights), reshaped back to (B F, L, C). Feature maps (B F, C, H, W) (the
    attention of diffusers' ``AttnDownBlock2D``) are taken as L = H W tokens the same way. Self-attention only; a
    cross-attention call is refused.
    """

    def __init__(self, num_views: int = 4):
        self.num_views = num_views
        self.inner = AttnProcessor2_0()

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        if encoder_hidden_states is not None:
            raise ValueError("MultiViewAttnProcessor is for self-attention layers only")
        f = self.num_views
        shape = hidden_states.shape
        x = hidden_states.flatten(2).transpose(1, 2) if hidden_states.dim() == 4 else hidden_states  # (B F, L, C)
        bf, length, channels = x.shape
        if bf % f:
            raise ValueError(f"batch of {bf} images is not a whole number of {f}-view groups")
        out = self.inner(attn, x.reshape(bf // f, f * length, channels), None, attention_mask, temb)
        out = out.reshape(bf, length, channels)
        return out.transpose(1, 2).reshape(shape) if len(shape) == 4 else out


def set_multiview_attention(unet: UNet2DConditionModel, num_views: int = 4) -> int:
    """Install ``MultiViewAttnProcessor`` on every self-attention layer of ``unet`` (the transformer blocks' ``attn1``,
    and plain self-attention blocks if any) and ``AttnProcessor2_0`` on the cross-attention layers. Returns the
    number of multi-view layers."""
    procs = {}
    for name in unet.attn_processors:
        module = unet.get_submodule(name.removesuffix(".processor"))
        procs[name] = AttnProcessor2_0() if module.is_cross_attention else MultiViewAttnProcessor(num_views)
    count = sum(isinstance(p, MultiViewAttnProcessor) for p in procs.values())
    unet.set_attn_processor(procs)  # (empties the dict)
    return count


class MultiViewArchitecture(ToyPriorArchitecture):
    """The toy prior's sizes (``ToyPriorArchitecture``) plus the multi-view ones. Self-attention spans the views
    wherever the UNet has transformer blocks (``cross_attention_levels`` and the middle block).

    The lowest (8x8) level is wider than the single-view toy prior's (96 channels, not 64): that is where the views
    meet, and it is cheap there (2.3 M parameters instead of 1.3 M for +1.4 % CPU time per training step, measured).
    """

    block_out_channels: tuple[int, ...] = (32, 48, 96)
    num_views: int = Field(4, ge=1)


def build_multiview_unet(arch: MultiViewArchitecture) -> UNet2DConditionModel:
    """The toy prior's UNet (``distill3d.priors.toy.build_unet``) with the camera MLP: class_embed_type "projection"
    over 16 inputs, added to the time embedding. Multi-view attention is installed by the caller
    (``set_multiview_attention``)."""
    # Private keys dropped: "_use_default_values" would make from_config discard the overrides below.
    base = {k: v for k, v in build_unet(arch).config.items() if not k.startswith("_")}
    unet = UNet2DConditionModel.from_config(
        {**base, "class_embed_type": "projection", "projection_class_embeddings_input_dim": CAMERA_DIM}
    )
    if unet.class_embedding is None:  # never silently build a UNet that ignores its cameras
        raise PriorError("the multi-view UNet was built without its camera MLP")
    return unet


class MultiViewToyPrior(ToyPrior):
    """Pixel-space multi-view prior over groups of ``views_per_sample`` (4) 32x32 toy-world views.

    ``predict_noise(x_t, t, text, cond)``: x_t (B, 3, 32, 32) with B = 4k, consecutive groups of 4 images the views of
    one sample; ``cond.cameras`` (B) their cameras (required). Captions carry no view phrase (the cameras tell the
    view): view words in a prompt are dropped. Everything else is ``ToyPrior``'s.
    """

    camera_conditioned = True

    def __init__(self, unet: UNet2DConditionModel, text_encoder: CLIPTextModel, tokenizer: PreTrainedTokenizerFast,
                 scheduler: DDPMScheduler, arch: MultiViewArchitecture, device: torch.device | str = "cpu",
                 info: dict | None = None):
        super().__init__(unet, text_encoder, tokenizer, scheduler, arch, device, info)
        self.views_per_sample = arch.num_views
        set_multiview_attention(self.unet, arch.num_views)

    @classmethod
    def build(cls, arch: MultiViewArchitecture, device: torch.device | str = "cpu") -> "MultiViewToyPrior":
        base = ToyPrior.build(arch)
        return cls(build_multiview_unet(arch), base.text_encoder, base.tokenizer, base.scheduler, arch, device)

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> "MultiViewToyPrior":
        path = Path(path)
        info = json.loads((path / "prior.json").read_text())
        arch = MultiViewArchitecture.model_validate({k: v for k, v in info["architecture"].items() if k != "extra"})
        prior = cls(
            UNet2DConditionModel.from_pretrained(path / "unet", local_files_only=True),
            CLIPTextModel.from_pretrained(path / "text_encoder", local_files_only=True),
            PreTrainedTokenizerFast.from_pretrained(path / "tokenizer", local_files_only=True),
            DDPMScheduler.from_pretrained(path / "scheduler", local_files_only=True),
            arch, device, info,
        )
        prior.eval()
        return prior

    def save(self, path: str | Path, info: dict | None = None) -> None:
        path = Path(path)
        super().save(path, info)
        meta = json.loads((path / "prior.json").read_text())
        meta.update(kind=KIND, views_per_sample=self.views_per_sample)
        (path / "prior.json").write_text(json.dumps(meta, indent=2))

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        """Prompts -> token ids of their canonical captions *without* view phrase ("a cube, back view" -> "a white
        cube"); "" stays empty (the unconditional caption)."""
        captions = []
        for p in prompts:
            try:
                captions.append(parse_prompt(p).caption() if p.strip() else "")
            except PromptError as e:
                raise PriorError(str(e)) from None
        ids = self.tokenizer(captions, padding="max_length", max_length=self.arch.max_length, truncation=True,
                             return_tensors="pt")["input_ids"]
        return ids.to(self.device)

    def camera_labels(self, x_t: torch.Tensor, cond: Conditioning | None) -> torch.Tensor:
        """(B, 16) camera inputs for a batch x_t (B, ...) (see ``multiview_camera_labels``)."""
        return multiview_camera_labels(x_t.shape[0], cond, self.views_per_sample).to(self.device, x_t.dtype)

    def model_output(self, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor,
                     cond: Conditioning | None = None) -> torch.Tensor:
        """The UNet's raw prediction (v, per the scheduler) for x_t (B, 3, H, W), t (B,), text (B, L, D)."""
        return self.unet(x_t, t, encoder_hidden_states=text, class_labels=self.camera_labels(x_t, cond)).sample

    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor,
                      cond: Conditioning | None = None) -> torch.Tensor:
        return to_epsilon(self.model_output(x_t, t, text, cond), x_t, self.alphas_cumprod[t],
                          self.scheduler.config.prediction_type)
