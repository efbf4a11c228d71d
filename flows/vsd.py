"""VSD NeRF as a Prefect flow: ProlificDreamer's first stage (NeRF particles by Variational Score Distillation)
meshed and baked as DreamFusion's, so SDS and VSD compare on the same representation (flows/methods.py: VSD_NERF).

    1. vsd_nerf:     NeRF particles by VSD (a camera-conditioned LoRA of the prior learns the particles' renders)
    2. extract_mesh: marching cubes on particle 0's density                                          (shared)
    3. bake_texture: UV-unwrap, bake its albedo                                                        (shared)
    4. export_asset, 5. evaluate                                                                       (shared)
"""

from flows.method_flow import method_flow
from flows.methods import VSD_NERF

vsd = method_flow(VSD_NERF)
