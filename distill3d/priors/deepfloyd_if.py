"""DeepFloyd IF stage I as a pixel-space ``Prior`` (64 x 64 RGB), loaded from a local folder in diffusers layout.

DeepFloyd IF (DeepFloyd / Stability AI 2023, https://github.com/deep-floyd/IF) is an open cascade after Imagen
(Saharia et al. 2022): a frozen T5-XXL text encoder and a 64 x 64 pixel UNet (stage I), then super-resolution
stages that score distillation does not use. Stage I is the coarse prior of threestudio's DreamFusion-IF and
Magic3D-IF configurations (Magic3D, Lin et al. 2023, used eDiff-I's 64 x 64 base model, which is not public).

The folder is what ``IFPipeline.save_pretrained`` writes, e.g. a download of ``DeepFloyd/IF-I-XL-v1.0`` (or
``-L`` / ``-M``): ``model_index.json`` with ``"_class_name": "IFPipeline"``, ``text_encoder/`` (T5EncoderModel),
``tokenizer/`` (T5 tokenizer), ``unet/`` (UNet2DConditionModel, out_channels = 2 x in_channels: epsilon, then the
learned-range variance of Nichol & Dhariwal 2021, which SDS does not use and is dropped), ``scheduler/``
(DDPMScheduler: cosine schedule, epsilon prediction). ``safety_checker/``, ``feature_extractor/`` and
``watermarker/`` belong to the sampling pipeline; they may be absent or null and are never loaded. Every part is
read with ``local_files_only=True`` so nothing contacts a hub.

Prompts are encoded as ``IFPipeline.encode_prompt`` does (lower-cased, stripped, 77 T5 tokens with their attention
mask), once per distinct prompt: the embeddings are cached on the prior (T5-XXL is 4.7 B parameters; threestudio's
prompt processor caches them likewise). Images in [0, 1] map to [-1, 1]; like Stable Diffusion, modules run in
fp16 on CUDA and the guidance maths in fp32.

Real weights (gated on the hub: accept the licence, download on a machine with internet, copy the folder over)::

    huggingface-cli download DeepFloyd/IF-I-XL-v1.0 --local-dir /path/to/IF-I-XL-v1.0 \\
        --include "model_index.json" "text_encoder/*" "tokenizer/*" "unet/*" "scheduler/*"
    distill3d generate --method dreamfusion --prompt "a red cube" --prior /path/to/IF-I-XL-v1.0 --device cuda
    distill3d generate --method magic3d --prompt "a red cube" --prior /path/to/IF-I-XL-v1.0 \\
        --fine-prior /path/to/sd-2-1-base --device cuda

The hub's tokenizer is a SentencePiece ``spiece.model`` without ``tokenizer.json``: transformers converts it only
with the ``sentencepiece`` and ``protobuf`` packages installed (``pip install sentencepiece protobuf``, once).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from distill3d.priors.base import Conditioning, Prior, PriorError, to_epsilon  # noqa: E402
from distill3d.priors.stable_diffusion import _weights_variant  # noqa: E402

IF_PIPELINE = "IFPipeline"
IF_PARTS = ("text_encoder", "tokenizer", "unet", "scheduler")
IF_MAX_LENGTH = 77  # IFPipeline.encode_prompt: "the text encoder was trained with a max length of 77 for IF"
IF_HINT = ("expected a DeepFloyd IF stage I folder: model_index.json (IFPipeline) with text_encoder/ tokenizer/ unet/"
           " scheduler/ (e.g. DeepFloyd/IF-I-XL-v1.0, or IFPipeline.save_pretrained)")


def pipeline_class(path: str | Path) -> str | None:
    """The ``_class_name`` of ``path/model_index.json`` (e.g. "IFPipeline"), or None when absent or unreadable."""
    try:
        meta = json.loads((Path(path) / "model_index.json").read_text())
    except (OSError, ValueError):
        return None
    return meta.get("_class_name") if isinstance(meta, dict) else None


def is_if_folder(path: str | Path) -> bool:
    """True when ``path`` holds a DeepFloyd IF pipeline of any stage (``IFPrior`` then loads it or says why not)."""
    return str(pipeline_class(path) or "").startswith("IF")


def _tokenizer_error(folder: Path) -> str | None:
    """Why transformers cannot read the T5 tokenizer in ``folder`` (a SentencePiece model without the packages that
    convert it), or None."""
    if (folder / "tokenizer.json").is_file() or not (folder / "spiece.model").is_file():
        return None
    from transformers.utils import is_protobuf_available, is_sentencepiece_available

    lacking = [name for name, ok in (("sentencepiece", is_sentencepiece_available()),
                                     ("protobuf", is_protobuf_available())) if not ok]
    if not lacking:
        return None
    return (f"{folder / 'spiece.model'} (the T5 tokenizer) is read only with the python package(s) "
            f"{' and '.join(lacking)}: pip install {' '.join(lacking)}")


class IFPrior(Prior):
    """DeepFloyd IF stage I denoising RGB images in [-1, 1] (``space = "pixel"``, ``resolution`` = the UNet's
    ``sample_size``: 64).

    Attributes beyond ``Prior``: ``unet``, ``text_encoder`` (T5EncoderModel), ``tokenizer``, ``scheduler``
    (DDPMScheduler), ``prediction_type``, ``dtype`` (of the modules). All modules are frozen and in eval mode.
    Prompts: any text (no ``prompt_error``); the textureless prompt is the prompt itself (DreamFusion 3.1).
    """

    space = "pixel"

    def __init__(self, path: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> None:
        """Load from ``path``. dtype defaults to fp16 on CUDA and fp32 elsewhere (fp16 on CPU is refused)."""
        from diffusers import DDPMScheduler, UNet2DConditionModel
        from transformers import AutoTokenizer, T5EncoderModel

        self.path = Path(path)
        self.device = torch.device(device)
        self.dtype = dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        if self.device.type == "cpu" and self.dtype != torch.float32:
            raise PriorError(f"dtype {self.dtype} on CPU is not supported: use dtype=torch.float32 (or run on CUDA)")
        name = pipeline_class(self.path)
        if name != IF_PIPELINE:
            found = "has no readable model_index.json" if name is None else f"is a {name} (model_index.json)"
            raise PriorError(f"{self.path} {found}, not IF stage I's {IF_PIPELINE}: {IF_HINT}")
        missing = [part for part in IF_PARTS if not (self.path / part).is_dir()]
        if missing:
            raise PriorError(f"{self.path} is not a complete DeepFloyd IF folder: missing "
                             f"{', '.join(m + '/' for m in missing)}; {IF_HINT}")
        reason = _tokenizer_error(self.path / "tokenizer")
        if reason:
            raise PriorError(reason)

        def part(name: str) -> dict:
            return dict(pretrained_model_name_or_path=str(self.path / name), local_files_only=True)

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(**part("tokenizer"))
            self.text_encoder = T5EncoderModel.from_pretrained(
                **part("text_encoder"), dtype=self.dtype, variant=_weights_variant(self.path / "text_encoder"))
            self.unet = UNet2DConditionModel.from_pretrained(
                **part("unet"), torch_dtype=self.dtype, variant=_weights_variant(self.path / "unet"))
            self.scheduler = DDPMScheduler.from_pretrained(**part("scheduler"))
        except (OSError, ValueError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise PriorError(f"cannot load DeepFloyd IF from {self.path}: {first}") from err
        for module in (self.text_encoder, self.unet):
            module.to(self.device).eval().requires_grad_(False)

        self.channels = int(self.unet.config.in_channels)
        if int(self.unet.config.out_channels) not in (self.channels, 2 * self.channels):
            raise PriorError(f"{self.path}: the UNet maps {self.channels} channels to {self.unet.config.out_channels}"
                             f": expected {2 * self.channels} (epsilon + learned variance: IF stage I)")
        self.prediction_type: str = self.scheduler.config.prediction_type
        to_epsilon(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1), torch.ones(1), self.prediction_type)  # validate
        self.num_train_timesteps = int(self.scheduler.config.num_train_timesteps)
        self.alphas_cumprod = self.scheduler.alphas_cumprod.to(device=self.device, dtype=torch.float32)
        self.resolution = int(self.unet.config.sample_size)
        self.text_cache: dict[str, torch.Tensor] = {}  # prompt -> (L, D) fp32 embedding

    # ------------------------------------------------------------------ text
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """prompts -> (B, 77, D) fp32 T5 last hidden states (D = 4096 for T5-XXL); each distinct prompt is encoded
        once per prior and then read from ``text_cache``."""
        if isinstance(prompts, str):
            prompts = [prompts]
        new = [p for p in dict.fromkeys(prompts) if p not in self.text_cache]
        if new:
            self.text_cache.update(zip(new, self._t5(new)))
        return torch.stack([self.text_cache[p] for p in prompts])

    def _t5(self, prompts: list[str]) -> torch.Tensor:
        """(N, 77, D) fp32 embeddings of ``prompts`` as ``IFPipeline.encode_prompt(..., clean_caption=False)``."""
        tokens = self.tokenizer([p.lower().strip() for p in prompts], padding="max_length", max_length=IF_MAX_LENGTH,
                                truncation=True, add_special_tokens=True, return_tensors="pt")
        with torch.no_grad():
            hidden = self.text_encoder(tokens.input_ids.to(self.device),
                                       attention_mask=tokens.attention_mask.to(self.device))[0]
        return hidden.float()

    # ------------------------------------------------------------------ images
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> (B, 3, R, R) in [-1, 1] (fp32), R = ``resolution``: bilinear resize
        (antialiased when shrinking). Differentiable w.r.t. ``images``."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise PriorError(f"encode_images expects (B, 3, H, W) images, got shape {tuple(images.shape)}")
        x = images.to(self.device).float()
        if x.shape[-2:] != (self.resolution, self.resolution):
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False,
                              antialias=max(x.shape[-2:]) > self.resolution)
        return x * 2.0 - 1.0

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """(B, 3, R, R) in [-1, 1] -> RGB in [0, 1] (fp32)."""
        return ((x0.to(self.device).float() + 1.0) / 2.0).clamp(0.0, 1.0)

    # ------------------------------------------------------------------ denoiser
    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor,
                      cond: Conditioning | None = None) -> torch.Tensor:
        """epsilon-hat for (B, 3, R, R) x_t, (B,) (or one) integer t and (B, 77, D) text -> (B, 3, R, R) in x_t's
        dtype. The UNet's first 3 output channels are epsilon; the learned variance that follows is dropped.
        ``cond`` is ignored (IF reads only text)."""
        t = t.to(self.device).long().reshape(-1).expand(x_t.shape[0])
        out = self.unet(x_t.to(self.device, self.dtype), t, encoder_hidden_states=text.to(self.device, self.dtype))
        eps = out.sample[:, : self.channels].float()
        return to_epsilon(eps, x_t.to(self.device).float(), self.alphas_cumprod[t], self.prediction_type).to(x_t.dtype)

    def __repr__(self) -> str:
        return (f"IFPrior(path={str(self.path)!r}, device={self.device}, dtype={self.dtype}, "
                f"resolution={self.resolution}, prediction_type={self.prediction_type!r})")
