"""Magic3D (Lin et al., 2023) as a Prefect flow of cached stages: coarse to fine.

    given a low-resolution prior, a higher-resolution latent prior and a prompt y:
      1. nerf_sds:     coarse: a NeRF by score distillation from the low-resolution prior (DreamFusion's stage: a
                       DreamFusion run with the same prompt, seed and params has made it already)
      2. dmtet_refine: fine: a DMTet mesh (tetrahedral grid, SDF from the coarse density, bounded deformation, the
                       coarse colour network) optimised by SDS through the latent prior's VAE at 64x64, t in
                       [0.02, 0.5], through a differentiable rasteriser, with a normal-consistency regulariser
      3. bake_texture: UV-unwrap the refined mesh, bake its colour network into the atlas                (shared)
      4. export_asset: mesh.glb + turntable.gif + views.png                                            (shared)
      5. evaluate:     (toy prompts) metrics against the toy world's ground truth                     (shared)

The definition is flows/methods.py's MAGIC3D; the flow is derived from it (flows/method_flow.py).
"""

from flows.method_flow import method_flow
from flows.methods import MAGIC3D

magic3d = method_flow(MAGIC3D)
