"""TextMesh's texture stages as library code: canonical views (tiled 2x2), img2img pseudo ground truth through the
``Prior`` interface, and texture fine-tuning (MSE to the pseudo-GT + lambda_sds * SDS) on a fixed mesh."""

from distill3d.texture.canonical import (CANONICAL_AZIMUTHS, CANONICAL_NAMES, canonical_cameras, render_views,
                                         tile_2x2, untile_2x2)
from distill3d.texture.finetune import TextureFinetuneConfig, finetune_texture
from distill3d.texture.pseudo_gt import PseudoGTConfig, img2img, pseudo_ground_truth
from distill3d.texture.render import FragmentCache, shade_texture

__all__ = ["CANONICAL_AZIMUTHS", "CANONICAL_NAMES", "canonical_cameras", "render_views", "tile_2x2", "untile_2x2",
           "TextureFinetuneConfig", "finetune_texture", "PseudoGTConfig", "img2img", "pseudo_ground_truth",
           "FragmentCache", "shade_texture"]
