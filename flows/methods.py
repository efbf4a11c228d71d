"""The methods of distill3d, each defined once (see flows/method_spec.py), and their registry.

A definition reads like the paper's algorithm: its steps in order, what each does, and where each step's inputs
come from. Stages a method shares with another (extract_mesh, bake_texture, export_asset, evaluate) appear by the
same name, so a DreamFusion and a TextMesh run of one prompt share their cached outputs wherever the inputs agree.
"""

from __future__ import annotations

from flows.method_spec import Method, MethodInput, Step
from stages.core.protocol import StageError

PRIOR = MethodInput("prior", "the text-to-image prior: the toy prior folder, a local diffusers Stable Diffusion "
                    "folder or a DeepFloyd IF stage I folder", default="prior.path", option="--prior",
                    made_by="train_prior")


def _evaluate(asset: str = "export_asset") -> Step:
    return Step("evaluate", {"asset": asset}, "metrics",
                "(toy-world prompts) score the asset against the toy world's ground truth", toy_only=True,
                output="metrics")


def _export(textured: str) -> Step:
    return Step("export_asset", {"mesh": textured}, "asset", "write mesh.glb, turntable.gif and views.png")


def _nerf_to_asset(nerf: str, whose: str = "the NeRF's") -> tuple[Step, ...]:
    """DreamFusion's tail after a NeRF step ``nerf``: mesh its density, bake its albedo, export, evaluate."""
    return (
        Step("extract_mesh", {"nerf": nerf}, "mesh",
             f"marching cubes on {whose} density at an automatic level, largest component"),
        Step("bake_texture", {"mesh": "extract_mesh", "nerf": nerf}, "textured",
             f"UV-unwrap the mesh (xatlas) and bake {whose} albedo into its texture"),
        _export("bake_texture"),
        _evaluate(),
    )


DREAMFUSION = Method(
    name="dreamfusion",
    title="DreamFusion (Poole et al. 2022)",
    summary="a NeRF optimised by score distillation (SDS) with classifier-free guidance, view-dependent prompts "
            "and shading, then meshed and textured",
    inputs=(PRIOR,),
    steps=(
        Step("nerf_sds", {"prior": "prior"}, "field",
             "optimise a NeRF theta so its renders g(theta, c) from random cameras score well under the prior: "
             "grad = w(t) (eps_hat(x_t; y, t) - eps) dx/dtheta (score distillation, eq. 3)"),
        *_nerf_to_asset("nerf_sds"),
    ),
    steps_param=("nerf_sds.optimize.steps",),
    guidance_param=("nerf_sds.guidance.guidance_scale",),
)

TEXTMESH = Method(
    name="textmesh",
    title="TextMesh (Tsalicoglou et al. 2023)",
    summary="an SDF NeRF (VolSDF density) by score distillation, its zero-level mesh, and a texture fine-tuned "
            "against pseudo ground truth the prior makes from four canonical views",
    inputs=(
        PRIOR,
        MethodInput("depth_prior", "a depth-conditioned model (local Stable Diffusion 2 depth folder) that makes the "
                    "pseudo ground truth from the canonical views and their depth, as in the paper",
                    option="--depth-prior"),
        MethodInput("init_mesh", "a mesh (any output holding mesh.glb) the SDF starts from instead of a sphere"),
    ),
    steps=(
        Step("sdf_nerf", {"prior": "prior", "init_mesh": "init_mesh"}, "field",
             "optimise an SDF field (VolSDF density, eikonal loss, sphere init) with SDS"),
        Step("extract_mesh", {"nerf": "sdf_nerf"}, "mesh", "marching cubes at the SDF's zero level"),
        Step("render_canonical_views", {"mesh": "extract_mesh", "nerf": "sdf_nerf"}, "canonical",
             "the textured mesh from front, right, back and left: colour, masks, depth"),
        Step("pseudo_gt", {"canonical": "render_canonical_views", "prior": "prior", "depth_prior": "depth_prior"},
             "pseudo_gt", "img2img of the canonical views by the prior, background kept outside the masks"),
        Step("texture_finetune", {"canonical": "render_canonical_views", "pseudo_gt": "pseudo_gt", "prior": "prior"},
             "textured", "mesh fixed: texture <- MSE to the pseudo ground truth + lambda_sds SDS in random views"),
        _export("texture_finetune"),
        _evaluate(),
    ),
    steps_param=("sdf_nerf.optimize.steps",),
    guidance_param=("sdf_nerf.guidance.guidance_scale",),
    replaceable=("sdf_nerf", "extract_mesh"),  # --init-from a DreamFusion run: refine the texture of its geometry
)

MAGIC3D = Method(
    name="magic3d",
    title="Magic3D (Lin et al. 2023)",
    summary="coarse to fine: DreamFusion's NeRF from a low-resolution prior, then a DMTet mesh refined with a "
            "higher-resolution latent prior through a differentiable rasteriser",
    inputs=(
        PRIOR,
        MethodInput("fine_prior", "the higher-resolution prior of the refine stage: the toy 64x64 latent prior or a "
                    "local diffusers Stable Diffusion folder", default="prior.latent_path", option="--fine-prior",
                    made_by="train_latent_prior"),
    ),
    steps=(
        Step("nerf_sds", {"prior": "prior"}, "field",
             "coarse: a NeRF by SDS from the low-resolution prior (DreamFusion's stage: the same run is shared)"),
        Step("dmtet_refine", {"nerf": "nerf_sds", "prior": "fine_prior"}, "refined",
             "fine: a DMTet mesh from the coarse density, SDF + deformation + colour by SDS through the latent "
             "prior's VAE at 64x64 (t in [0.02, 0.5]), rendered by the differentiable rasteriser"),
        Step("bake_texture", {"mesh": "dmtet_refine", "nerf": "dmtet_refine"}, "textured",
             "UV-unwrap the refined mesh and bake its colour network into the texture"),
        _export("bake_texture"),
        _evaluate(),
    ),
    steps_param=("nerf_sds.optimize.steps", "dmtet_refine.optimize.steps"),
    guidance_param=("dmtet_refine.guidance.guidance_scale",),
)

FINE_PRIOR = MAGIC3D.input("fine_prior")

PROLIFICDREAMER = Method(
    name="prolificdreamer",
    title="ProlificDreamer (Wang et al. 2023)",
    summary="particles of NeRFs by Variational Score Distillation (a camera-conditioned LoRA of the prior learns "
            "the particles' renders), then each refined into a mesh: geometry by SDS on its normal maps, texture by "
            "VSD",
    inputs=(PRIOR, FINE_PRIOR),
    steps=(
        Step("nerf_sds", {"prior": "prior"}, "field", name="vsd_nerf", section="vsd_nerf",
             doc="n NeRF particles by VSD: grad = w(t) (eps_pretrained_cfg(x_t; y, t) - eps_lora(x_t; y, t, c)) "
                 "dx/dtheta (eq. 9), the LoRA trained on the particles' renders; t_max annealed 0.98 -> 0.5"),
        Step("dmtet_refine", {"nerf": "vsd_nerf", "prior": "fine_prior"}, "geometry", section="vsd_geometry",
             doc="geometry: each particle's DMTet mesh by SDS on its rendered normal maps, normal consistency and "
                 "Laplacian"),
        Step("vsd_texture", {"mesh": "dmtet_refine", "prior": "fine_prior"}, "texture",
             "texture: geometry fixed, the particles' colour networks by VSD against one shared LoRA"),
        Step("bake_texture", {"mesh": "vsd_texture", "nerf": "vsd_texture"}, "textured",
             "UV-unwrap each particle's mesh and bake its colour network into the texture"),
        _export("bake_texture"),
        _evaluate(),
    ),
    steps_param=("vsd_nerf.optimize.steps", "vsd_geometry.optimize.steps", "vsd_texture.optimize.steps"),
    guidance_param=("vsd_nerf.guidance.guidance_scale", "vsd_texture.guidance.guidance_scale"),
)

MVDREAM = Method(
    name="mvdream",
    title="MVDream (Shi et al. 2023)",
    summary="a NeRF by multi-view score distillation: a prior that denoises 4 views of one object together, "
            "conditioned on their cameras, scores 4 renders 90 degrees apart each step (no Janus faces)",
    inputs=(MethodInput("prior", "the multi-view prior: the toy 4-view prior, or the released MVDream weights "
                        "converted by `distill3d prior convert-mvdream`", default="prior.multiview_path",
                        option="--prior", made_by="train_mv_prior"),),
    steps=(
        Step("nerf_sds", {"prior": "prior"}, "field", name="mv_nerf", section="mv_nerf",
             doc="a NeRF by multi-view SDS: each step 4 cameras 90 degrees apart (one random offset, shared "
                 "elevation / fov / distance), one t for the group, CFG with rescale, t annealed high to low"),
        *_nerf_to_asset("mv_nerf"),
    ),
    steps_param=("mv_nerf.optimize.steps",),
    guidance_param=("mv_nerf.guidance.guidance_scale",),
)

VSD_NERF = Method(
    name="vsd",
    title="VSD NeRF (ProlificDreamer's first stage, meshed as DreamFusion's)",
    summary="ProlificDreamer's NeRF stage (Variational Score Distillation, particles) followed by DreamFusion's "
            "meshing and baking: SDS against VSD on the same representation (the guidance sweeps use it)",
    inputs=(PRIOR,),
    steps=(
        PROLIFICDREAMER.step("vsd_nerf"),
        *_nerf_to_asset("vsd_nerf", "particle 0's"),
    ),
    steps_param=("vsd_nerf.optimize.steps",),
    guidance_param=("vsd_nerf.guidance.guidance_scale",),
)

_METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add `method` to the registry (checked against its own definition); returns it. Tests register small
    extra methods this way."""
    method.check()
    _METHODS[method.name] = method
    return method


def unregister_method(name: str) -> None:
    _METHODS.pop(name, None)


def methods() -> dict[str, Method]:
    """{name: Method} of every registered method, built-in ones first."""
    return dict(_METHODS)


def get_method(name: str) -> Method:
    """The registered method `name`, else a one-line StageError listing the known ones."""
    if name not in _METHODS:
        raise StageError(f"unknown method {name!r}; known: {', '.join(_METHODS)}")
    return _METHODS[name]


for _method in (DREAMFUSION, TEXTMESH, MAGIC3D, PROLIFICDREAMER, MVDREAM, VSD_NERF):
    register_method(_method)
