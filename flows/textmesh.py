"""TextMesh (Tsalicoglou et al., 2023) as a Prefect flow of cached stages, sharing DreamFusion's where they agree.

    given a frozen text-to-image diffusion prior and a prompt y:
      1. sdf_nerf:               optimise an SDF field (VolSDF density, eikonal loss, sphere init) with SDS
      2. extract_mesh:           marching cubes at the SDF's zero level                         (shared)
      3. render_canonical_views: the textured mesh from front / right / back / left, masks, depth
      4. pseudo_gt:              img2img of the canonical views by the prior, background kept outside the masks
      5. texture_finetune:       mesh fixed; texture <- MSE to the pseudo-GT + lambda_sds * SDS in random views
      6. export_asset:           GLB with the fine-tuned texture, turntable, views                 (shared)
      7. evaluate:               (toy prompts) metrics of the asset, and of its texture before step 5  (shared)

Inputs besides the prior: `depth_prior` (a Stable Diffusion 2 depth folder makes the pseudo ground truth in step 4
from the views and their depth, as in the paper) and `init_mesh` (the SDF starts from that mesh instead of a
sphere). `provided={"field": dir, "mesh": dir}` (--init-from a DreamFusion run) skips steps 1-2 and refines that
geometry's texture. The definition is flows/methods.py's TEXTMESH; the flow is derived from it.
"""

from flows.method_flow import method_flow
from flows.methods import TEXTMESH

textmesh = method_flow(TEXTMESH)
