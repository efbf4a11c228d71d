"""`python -m stages NAME --params params.yaml [--section S] [--set a.b=v ...] [--in prior=DIR ...] --out DIR`;
`python -m stages` alone lists the stages.

`--prompt-name KEY` sets the `prompt` param to params.yaml's `prompts[KEY]` (dvc.yaml's matrix stages only get the
key of a prompt: DVC's templating cannot look a value up by a key it iterates over).

The one entry point DVC calls for every stage: no Prefect here, so a DVC stage pays no Prefect start-up.
`--out` ending in `.json` writes only the stage's `metrics.json` to that file (for DVC metrics files).
Bad input exits with code 2 and one line `error: ...` on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from stages.core.execute import execute
from stages.core.params import load_params, read_params_file
from stages.core.process_exit import exit_process
from stages.core.protocol import StageError, get_stage, stage_names
from stages.core.store import read_manifest


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m stages", description="Run one distill3d stage (cached, atomic).")
    p.add_argument("name", nargs="?", help="stage name (train_prior, nerf_sds, ...) or a dotted module path; "
                   "none: list the stages")
    p.add_argument("--params", type=Path, default=None, help="params.yaml to read the stage's section from")
    p.add_argument("--section", default=None, help="section of the params file (default: the stage name)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a param, dotted path, value read as JSON (repeatable)")
    p.add_argument("--prompt-name", default=None, metavar="KEY",
                   help="set the prompt param to the params file's prompts[KEY]")
    p.add_argument("--in", dest="inputs", action="append", default=[], metavar="NAME=PATH",
                   help="an input artifact (repeatable)")
    p.add_argument("--out", type=Path, help="output directory (or FILE.json: the stage's metrics)")
    p.add_argument("--force", action="store_true", help="run even if the output is complete for the same key")
    return p


def _parse_inputs(items: list[str]) -> dict[str, Path]:
    inputs = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise StageError(f"bad --in {item!r}: expected NAME=PATH, e.g. prior=models/toy_prior")
        inputs[name] = Path(path)
    return inputs


def named_prompt(params_file: Path | None, key: str) -> str:
    """``prompts[key]`` of the params file (StageError naming the keys there when it has no such prompt)."""
    if params_file is None:
        raise StageError("--prompt-name needs --params FILE (the file whose `prompts` mapping names the prompt)")
    prompts = read_params_file(params_file).get("prompts")
    if not isinstance(prompts, dict) or key not in prompts:
        known = ", ".join(map(str, prompts)) if isinstance(prompts, dict) else "none"
        raise StageError(f"--prompt-name {key}: {params_file} has no prompts.{key} (its prompts: {known})")
    return str(prompts[key])


def _run_to_json(stage, params, inputs, out: Path, force: bool) -> None:
    """Run into a temp dir, then atomically write its metrics.json to `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.run-") as tmp:
        result = execute(stage, params, inputs, Path(tmp) / "out", force=force)
        metrics = result / "metrics.json"
        if not metrics.is_file():
            raise StageError(f"stage {stage.NAME} wrote no metrics.json, so --out {out} cannot be filled")
        staged = Path(tmp) / "metrics.json"
        shutil.copyfile(metrics, staged)
        os.replace(staged, out)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.name is None:
        for name in stage_names():
            doc = (get_stage(name).__doc__ or "").strip().splitlines()
            print(f"{name:<24} {doc[0] if doc else ''}")
        return 0
    try:
        if args.out is None:
            raise StageError("--out DIR is required (the stage's output directory, or FILE.json for its metrics)")
        stage = get_stage(args.name)
        overrides = list(args.overrides)
        if args.prompt_name is not None:
            overrides.insert(0, "prompt=" + json.dumps(named_prompt(args.params, args.prompt_name)))
        params = load_params(stage, args.params, args.section, overrides)
        inputs = _parse_inputs(args.inputs)
        if args.out.suffix == ".json":
            _run_to_json(stage, params, inputs, args.out, args.force)
            print(f"{stage.NAME}: wrote {args.out}", file=sys.stderr)
            return 0
        before = read_manifest(args.out)
        manifest = read_manifest(execute(stage, params, inputs, args.out, force=args.force)) or {}
        how = "cached (ran" if manifest == before else "done ("
        print(f"{stage.NAME}: {how} in {manifest.get('seconds', 0):.1f} s) -> {args.out}", file=sys.stderr)
        return 0
    except (StageError, ValueError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted (no partial output was left)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    exit_process(main())
