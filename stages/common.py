"""TEMPORARY re-exports for code written against the old stages/common.py (removed before this change lands):
import from stages.core.* instead."""
from stages.core.execute import execute  # noqa: F401
from stages.core.home import distill3d_home  # noqa: F401
from stages.core.keys import MANIFEST, dir_content_hash, stage_key  # noqa: F401
from stages.core.params import load_params, parse_override, read_params_file, set_dotted, validate_params  # noqa: F401
from stages.core.protocol import (MESH_BEFORE, StageError, StageParams, all_inputs, get_stage,  # noqa: F401
                                  register_stage, require_file, unregister_stage)
from stages.core.store import atomic_dir, is_complete, read_manifest, work_dir  # noqa: F401
