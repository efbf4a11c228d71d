"""MVDream (Shi et al., 2023) as a Prefect flow of cached stages: multi-view score distillation.

    given a multi-view prior (4 views of one object denoised together, conditioned on their cameras) and a prompt y:
      1. mv_nerf:      a NeRF by multi-view SDS: each step renders 4 views 90 degrees apart in azimuth (one random
                       offset, shared elevation, fov and distance), noises them at one t, and the prior's guided
                       prediction of the group (CFG, rescaled) pulls the 4 renders towards one consistent object;
                       t annealed from high to low over the run
      2. extract_mesh: marching cubes on the NeRF's density at an automatic level                    (shared)
      3. bake_texture: UV-unwrap, bake the NeRF's albedo into the atlas                               (shared)
      4. export_asset: mesh.glb + turntable.gif + views.png                                          (shared)
      5. evaluate:     (toy prompts) metrics against the toy world's ground truth, the Janus rate included (shared)

The definition is flows/methods.py's MVDREAM; the flow is derived from it (flows/method_flow.py).
"""

from flows.method_flow import method_flow
from flows.methods import MVDREAM

mvdream = method_flow(MVDREAM)
