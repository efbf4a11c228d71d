"""The machinery every stage runs on (not stages themselves): the stage protocol and registry (`protocol`),
params and overrides (`params`), content hashes, code versions and stage keys (`keys`, `code`), the store, manifests
and locks (`store`), and cached atomic execution (`execute`). No Prefect, no torch.

A stage is a module `stages/<name>.py` with::

    NAME = "nerf_sds"
    INPUTS = ("prior",)                     # input artifacts it reads (directories; named by what they hold)
    OPTIONAL_INPUTS = ("init_mesh",)        # optional: inputs it uses when given (hashed into the key only then)
    class Params(StageParams): ...          # pydantic, extra fields forbidden
    def run(params, inputs: dict[str, Path], out: Path) -> dict: ...   # writes into `out`, returns manifest extras
    def check(params, inputs) -> None: ...  # optional: cheap validation before anything runs (no torch imports)

Which stage's output feeds which input is said by the methods (flows/methods.py) and dvc.yaml, never by a stage.
"""
