"""A camera-conditioned LoRA on a prior's own UNet: the variational score eps_phi(x_t; y, t, c) of ProlificDreamer
(Wang et al. 2023, Sec. 4, "parameterize eps_phi by a LoRA of the pretrained model, with an extra camera embedding").

Attached in place to a diffusers ``UNet2DConditionModel`` (never a copy: a real SD UNet is GBs):

* **LoRA** through peft (``unet.add_adapter(LoraConfig(r, target_modules=[to_q, to_k, to_v, to_out.0]))``): every
  attention projection W becomes W + (alpha / r) B A, B zero at initialisation. Adapter weights are upcast to fp32
  (peft's ``cast_adapter_dtype``) so an fp16 UNet trains them in fp32.
* **Camera embedding**: diffusers' ``TimestepEmbedding(16, D)`` (Linear-SiLU-Linear, threestudio's camera MLP) on
  the flattened 4x4 camera-to-world matrix, D the UNet's time-embedding width, its last layer zero at
  initialisation, *added to the output of* ``unet.time_embedding`` by a forward hook. That is exactly where diffusers
  adds a class embedding (``emb = time_embedding(t) + class_embedding(class_labels)``), but a hook needs no copy of
  the UNet with ``class_embed_type="projection"``, no change to its config, and composes with UNets that already use
  ``class_embedding`` (MVDream's cameras).

The pretrained model is untouched outside ``conditioned``: adapters are disabled (peft's ``enable_adapters(False)``
on every wrapped projection, as diffusers' ``unet.disable_adapters()`` does) and the hook adds nothing, so anyone
calling the prior between VSD calls gets the pretrained prediction (the wrapped projections only cost a little
Python overhead). ``close`` removes the hook and unwraps peft's layers (diffusers' ``unload_lora``), restoring the
UNet's own modules. A UNet that already carries adapters is refused (one VSD LoRA per UNet at a time).

Why not the alternatives: a second UNet (threestudio's non-shared mode) doubles GPU memory on SD; setting
``unet.class_embedding`` on the shared UNet would make every pretrained call without ``class_labels`` fail.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from diffusers import UNet2DConditionModel

# peft and diffusers are imported where a LoRA is made or saved, not at import: a stage that only validates its
# guidance params (every optimising stage's Params hold the VSD choice) must not pay their import (~10 s on 2 cores).

from distill3d.cameras import Cameras

CAMERA_FEATURES = 16  # the flattened 4x4 camera-to-world matrix
ATTENTION_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")


def camera_features(cameras: Cameras | None, n: int, device: torch.device) -> torch.Tensor:
    """(n, 16) flattened camera-to-world matrices (distill3d's convention, ``distill3d.cameras``); zeros (the
    dropped-camera input) when ``cameras`` is None."""
    if cameras is None:
        return torch.zeros(n, CAMERA_FEATURES, device=device)
    if len(cameras) != n:
        raise ValueError(f"{len(cameras)} cameras for {n} images")
    return cameras.c2w.reshape(n, CAMERA_FEATURES).to(device=device, dtype=torch.float32)


class CameraLoRA:
    """LoRA adapter ``adapter_name`` plus a camera MLP on ``unet`` (see the module docstring).

    Use: ``with lora.conditioned(feats): unet(...)`` runs the LoRA model eps_phi conditioned on the (B, 16) camera
    features ``feats`` (differentiable w.r.t. ``parameters()``, also when backpropagated after the block); outside
    it the UNet is the pretrained one.
    """

    def __init__(self, unet: UNet2DConditionModel, rank: int = 4, alpha: float | None = None,
                 targets: Sequence[str] = ATTENTION_PROJECTIONS, adapter_name: str = "vsd"):
        from diffusers.models.embeddings import TimestepEmbedding
        from peft import LoraConfig
        from peft.tuners.tuners_utils import BaseTunerLayer, cast_adapter_dtype

        if getattr(unet, "peft_config", None):
            raise ValueError(f"the UNet already carries adapters {sorted(unet.peft_config)}: close() the other VSD "
                             "guidance on this prior first (or load the prior afresh)")
        self.unet, self.name = unet, adapter_name
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank if alpha is None else alpha,
                                    target_modules=list(targets), init_lora_weights=True), adapter_name=adapter_name)
        cast_adapter_dtype(unet, adapter_name)  # fp16 UNet -> fp32 adapter weights (no-op on fp32)
        unet.train(unet.training)  # the new layers follow the UNet's mode (eval for a prior)
        self.lora_params = [p for n, p in unet.named_parameters() if "lora_" in n and f".{adapter_name}." in n]
        # The wrapped projections, toggled one by one with peft's ``enable_adapters`` (what diffusers'
        # ``unet.enable_adapters()`` does after walking all modules: ~3 ms a walk on the toy UNet, twice a call).
        self._layers = [m for m in unet.modules() if isinstance(m, BaseTunerLayer)]
        if not self.lora_params:
            raise ValueError(f"no module of the UNet matches the LoRA targets {list(targets)}")
        width = unet.time_embedding.linear_2.out_features
        device = next(unet.parameters()).device
        self.camera_mlp = TimestepEmbedding(CAMERA_FEATURES, width).to(device)
        nn.init.zeros_(self.camera_mlp.linear_2.weight)  # eps_phi = pretrained eps at initialisation
        nn.init.zeros_(self.camera_mlp.linear_2.bias)
        self._camera_emb: torch.Tensor | None = None
        self._hook = unet.time_embedding.register_forward_hook(self._add_camera)
        self.closed = False
        self._disable()

    def _disable(self) -> None:
        """Adapters off (the pretrained model). peft's ``enable_adapters(False)`` also sets the adapter weights'
        ``requires_grad`` False; that would silently drop the gradient of a loss computed inside ``conditioned``
        and backpropagated after it (autograd skips leaves that no longer require grad), so it is set back: a
        disabled adapter takes no part in any forward pass, so this changes nothing else."""
        for layer in self._layers:
            layer.enable_adapters(False)
        for p in self.lora_params:
            p.requires_grad_(True)

    def parameters(self) -> list[nn.Parameter]:
        """The trainable parameters: LoRA A/B matrices, then the camera MLP's."""
        return self.lora_params + list(self.camera_mlp.parameters())

    def _add_camera(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if self._camera_emb is None:
            return None
        return output + self._camera_emb.to(output.dtype)

    @contextmanager
    def conditioned(self, camera_feats: torch.Tensor) -> Iterator[None]:
        """Within: the UNet is eps_phi, LoRA enabled and the camera embedding of ``camera_feats`` (B, 16) added to
        the time embedding of a batch of B. Restored (adapters disabled, no camera) on exit, even on error."""
        self._check_open()
        for layer in self._layers:  # ours is the only adapter, active since add_adapter
            layer.enable_adapters(True)
        self._camera_emb = self.camera_mlp(camera_feats.to(self.camera_mlp.linear_1.weight.dtype))
        try:
            yield
        finally:
            self._camera_emb = None
            self._disable()

    def state_dict(self) -> dict:
        """{"lora": peft's adapter state (keys without the adapter name), "camera_mlp": ...}; tensors cloned."""
        from peft import get_peft_model_state_dict

        self._check_open()
        lora = get_peft_model_state_dict(self.unet, adapter_name=self.name)
        return {"lora": {k: v.detach().clone() for k, v in lora.items()},
                "camera_mlp": {k: v.detach().clone() for k, v in self.camera_mlp.state_dict().items()}}

    def load_state_dict(self, state: dict) -> None:
        """Copy weights in place (the parameter objects, hence an optimiser over them, stay valid)."""
        from peft import get_peft_model_state_dict, set_peft_model_state_dict

        self._check_open()
        own = get_peft_model_state_dict(self.unet, adapter_name=self.name)
        if set(own) != set(state["lora"]) or any(own[k].shape != v.shape for k, v in state["lora"].items()):
            raise ValueError("LoRA state does not fit this adapter (different rank or target modules)")
        result = set_peft_model_state_dict(self.unet, state["lora"], adapter_name=self.name)
        if getattr(result, "unexpected_keys", None):
            raise ValueError(f"unexpected LoRA keys: {result.unexpected_keys[:3]}")
        self.camera_mlp.load_state_dict(state["camera_mlp"])
        self._disable()

    def close(self) -> None:
        """Remove the camera hook and the adapter; the UNet computes exactly what it did before ``__init__``.
        Idempotent."""
        if self.closed:
            return
        self._hook.remove()
        self.unet.unload_lora()  # unwrap every peft layer back to its base nn.Linear (ours are the only ones)
        self.lora_params = []
        self.closed = True

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("this camera LoRA was closed (its adapter is no longer on the UNet)")
