"""DreamFusion (Poole et al., 2022) as a Prefect flow of cached stages.

    given a frozen text-to-image diffusion prior and a prompt y:
      1. nerf_sds:     optimise a NeRF theta so that its renders g(theta, c) from random cameras c score well
                       under the prior: grad = w(t) (eps_hat(x_t; y, t) - eps) dx/dtheta   (score distillation)
      2. extract_mesh: marching cubes on the NeRF's density, keep the largest component
      3. bake_texture: UV-unwrap (xatlas), bake the NeRF's albedo into the texture atlas
      4. export_asset: write mesh.glb + turntable.gif + views.png                                     (shared)
      5. evaluate:     (toy-world prompts only) compare the asset with the toy world's ground truth    (shared)

The steps and their wiring are the method's definition (flows/methods.py: DREAMFUSION); the flow is derived from
it (flows/method_flow.py). Deploy with `prefect deploy ./flows/dreamfusion.py:dreamfusion`.
"""

from flows.method_flow import method_flow
from flows.methods import DREAMFUSION

dreamfusion = method_flow(DREAMFUSION)
