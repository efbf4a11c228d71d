"""ProlificDreamer (Wang et al., 2023) as a Prefect flow of cached stages: Variational Score Distillation.

    given a prior, a higher-resolution prior for the mesh stages and a prompt y:
      1. vsd_nerf:      n NeRF particles (default 4) optimised by VSD: each step, grad = w(t) (eps_pretrained_cfg(x_t;
                        y, t) - eps_lora(x_t; y, t, c)) dx/dtheta (eq. 9), and the camera-conditioned LoRA eps_lora
                        trained on the particles' detached renders (eq. 8); t_max annealed from 0.98 to 0.5
      2. dmtet_refine:  geometry: each particle's DMTet mesh by SDS on its rendered normal maps, with normal
                        consistency and a Laplacian (Magic3D's refine stage, its own params: vsd_geometry)
      3. vsd_texture:   texture: geometry fixed, the particles' colour networks by VSD against one shared LoRA
      4. bake_texture:  each particle's colour network baked into its UV atlas                           (shared)
      5. export_asset:  an asset per particle (particle 0 at the top)                                     (shared)
      6. evaluate:      (toy prompts) metrics per particle, their means and the particles' diversity       (shared)

The definition is flows/methods.py's PROLIFICDREAMER; the flow is derived from it (flows/method_flow.py).
"""

from flows.method_flow import method_flow
from flows.methods import PROLIFICDREAMER

prolificdreamer = method_flow(PROLIFICDREAMER)
