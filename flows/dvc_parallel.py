"""Run the DVC pipeline's out-of-date stages N at a time, then record them in dvc.lock (`dvc commit`).

    python -m flows.dvc_parallel [--jobs 2] [--dry-run]     (`make run` calls it before `dvc repro`)

`dvc repro` runs one stage at a time, and one of this project's stages keeps about one core busy (small tensors:
a second torch thread gains ~1.3x), so on 2 cores half the machine idles. This runs each out-of-date stage's own
command (the `cmd` of dvc.yaml, exactly what `dvc repro` would run) as soon as the stages it depends on are done,
`--jobs` at a time with `cores / jobs` threads each, longest chains first; then `dvc commit` records deps and outs
of every stage that succeeded, so a following `dvc repro` finds them up to date. DVC itself has no parallel
repro (its repo lock serialises `dvc repro` processes), hence this scheduler.

A failing stage skips what depends on it; the others go on. Each stage's output is in its log
(.distill3d/dvc_parallel/<stage>.log); the command exits 1 when any stage failed, naming them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from flows.threads import worker_env

REPO = Path(__file__).resolve().parents[1]
# dvc.yaml entries (by name) that collect whatever their methods made (a missing asset is a row with its reason in
# their report): they run once every stage they wait for has finished, failed or not.
COLLECTORS = ("report", "comparison")
# Relative cost of a stage (the optimisation stages dominate): the scheduler starts the costliest ready stage first
# so the long chains do not end alone. Keyed by the params section a stage runs under (a shared stage's own section:
# MVDream's mv_nerf is nerf_sds at 4 views a step, ~3x DreamFusion's; ProlificDreamer's vsd_nerf ~1.5-2x), else by
# its module. Measured in the run of 2026-11-30 (stage seconds, two at a time): nerf_sds 80-145, mv_nerf 290-315,
# vsd_nerf 130-190, sdf_nerf 95-100, dmtet_refine / vsd_texture 45-60, extract / bake / export / evaluate 4-15.
COST = {"nerf_sds": 6, "mv_nerf": 18, "vsd_nerf": 10, "sdf_nerf": 6, "dmtet_refine": 4, "vsd_texture": 4,
        "texture_finetune": 2, "pseudo_gt": 2, "train_prior": 200, "train_latent_prior": 200, "train_mv_prior": 200}


@dataclass
class Plan:
    stages: dict[str, str]  # addressing -> shell command
    needs: dict[str, set[str]]  # addressing -> the planned stages it waits for
    priority: dict[str, int]


def _collects(name: str) -> bool:
    return name.partition("@")[0] in COLLECTORS


def _module(cmd: str) -> str:
    words = cmd.split()
    return words[3] if words[:3] == ["python", "-m", "stages"] and len(words) > 3 else ""


def _cost(cmd: str) -> int:
    """COST of a stage's command: by its `--section` when it names one COST knows, else by its stage module."""
    words = cmd.split()
    section = words[words.index("--section") + 1] if "--section" in words[:-1] else None
    return COST.get(section) or COST.get(_module(cmd), 1)


def plan(repo_dir: Path) -> Plan:
    """The stages `dvc repro` would run (changed ones and everything downstream of them), frozen ones left out."""
    import networkx as nx
    from dvc.repo import Repo

    # stage addresses ("nerf_sds@red_cube") are relative to the working directory: DVC's API is used from the repo
    with contextlib.chdir(repo_dir), Repo(str(repo_dir)) as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        by_name = {s.addressing: s for s in graph.nodes if s.cmd}
        changed = set(repo.status()) & set(by_name)
        todo: set[str] = set()
        for name in changed:
            todo.add(name)
            # ancestors: edges point to dependencies, so these are the stages downstream of it (re-run when it is)
            todo.update(s.addressing for s in nx.ancestors(graph, by_name[name]) if s.addressing in by_name)
        todo = {n for n in todo if not by_name[n].frozen}
        cmds = {n: (by_name[n].cmd if isinstance(by_name[n].cmd, str) else " && ".join(by_name[n].cmd)) for n in todo}
        needs = {n: {d.addressing for d in graph.successors(by_name[n]) if d.addressing in todo} for n in todo}
        waiting = {n: {d.addressing for d in graph.predecessors(by_name[n]) if d.addressing in todo} for n in todo}
    priority: dict[str, int] = {}

    def chain(n: str) -> int:  # the cost of the longest chain that starts at n
        if n not in priority:
            priority[n] = _cost(cmds[n]) + max((chain(m) for m in waiting[n]), default=0)
        return priority[n]

    for n in todo:
        chain(n)
    return Plan(cmds, needs, priority)


def run_plan(p: Plan, repo_dir: Path, jobs: int, log_dir: Path, echo=print,
             threads: int | None = None) -> tuple[list[str], list[str]]:
    """Run the plan with ``threads`` torch threads per stage (default cores / jobs); returns (done, failed) stage
    names. A stage whose dependency failed counts as failed."""
    env = {**worker_env(jobs, threads), "DVC_NO_ANALYTICS": "1"}
    log_dir.mkdir(parents=True, exist_ok=True)
    done: list[str] = []
    failed: list[str] = []
    todo = set(p.stages)
    t_start = time.perf_counter()

    def run_one(name: str) -> int:
        with open(log_dir / (name.replace("@", "_").replace("/", "_") + ".log"), "w") as log:
            return subprocess.run(p.stages[name], shell=True, cwd=repo_dir, env=env, stdout=log,
                                  stderr=subprocess.STDOUT).returncode

    with ThreadPoolExecutor(jobs) as pool:
        running: dict[Future, tuple[str, float]] = {}
        while todo or running:
            while blocked := sorted(n for n in todo if p.needs[n] & set(failed) and not _collects(n)):
                for name in blocked:  # until no stage is left waiting on a failure (chains fail transitively)
                    todo.discard(name)
                    failed.append(name)
                    echo(f"skipped {name}: a stage it needs failed")
            finished_names = set(done) | set(failed)
            ready = sorted((n for n in todo if p.needs[n] <= (finished_names if _collects(n) else set(done))),
                           key=lambda n: -p.priority[n])
            for name in ready[: jobs - len(running)]:
                todo.discard(name)
                running[pool.submit(run_one, name)] = (name, time.perf_counter())
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                name, t0 = running.pop(fut)
                ok = fut.result() == 0
                (done if ok else failed).append(name)
                echo(f"[{len(done) + len(failed)}/{len(p.stages)} {time.perf_counter() - t_start:6.0f} s] "
                     f"{'done' if ok else 'FAILED'} {name} ({time.perf_counter() - t0:.0f} s)")
    return done, failed


def commit(repo_dir: Path, names: list[str]) -> None:
    """Record the stages' deps and outs in dvc.lock (and their outs in the DVC cache), as `dvc repro` does after
    running a stage (what `dvc commit -f` does, for many stages with one index and one lock-file write)."""
    from dvc.repo import Repo

    wanted = set(names)
    with contextlib.chdir(repo_dir), Repo(str(repo_dir)) as repo, repo.lock:
        stages = [s for s in repo.index.stages if s.addressing in wanted]
        by_file: dict[str, list] = {}
        for stage in stages:
            by_file.setdefault(stage.dvcfile.path, []).append(stage)
        for group in by_file.values():
            for stage in group:
                stage.save()
                stage.commit()
            group[0].dvcfile.dump_stages(group, update_pipeline=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.dvc_parallel", description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=2, help="stages at once (default 2)")
    ap.add_argument("--threads", type=int, default=None, help="threads per stage (default: cores / jobs)")
    ap.add_argument("--dry-run", action="store_true", help="list the stages to run, longest chains first")
    ap.add_argument("--repo", type=Path, default=REPO)
    args = ap.parse_args(argv)
    if args.jobs < 1 or (args.threads is not None and args.threads < 1):
        print("error: --jobs and --threads must be at least 1", file=sys.stderr)
        return 2
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    p = plan(args.repo)
    if args.dry_run or not p.stages:
        for name in sorted(p.stages, key=lambda n: -p.priority[n]):
            print(name)
        print(f"{len(p.stages)} stage(s) to run", file=sys.stderr)
        return 0
    print(f"{len(p.stages)} stage(s) to run, {args.jobs} at a time", file=sys.stderr, flush=True)
    log_dir = args.repo / ".distill3d" / "dvc_parallel"
    done, failed = run_plan(p, args.repo, args.jobs, log_dir, echo=lambda s: print(s, file=sys.stderr, flush=True),
                            threads=args.threads)
    commit(args.repo, done)
    if failed:
        print(f"error: {len(failed)} stage(s) failed: {', '.join(sorted(failed))}; logs in {log_dir}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
