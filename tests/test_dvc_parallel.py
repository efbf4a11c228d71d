"""flows/dvc_parallel.py: out-of-date DVC stages run N at a time in dependency order, then recorded in dvc.lock so
`dvc status` is clean; a failing stage skips what depends on it and only it (and those) stay out of date."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from flows.dvc_parallel import main, plan

PY = sys.executable


def _stage(cmd: str, deps: list[str], outs: list[str]) -> dict:
    return {"cmd": cmd, "deps": deps, "outs": outs} if deps else {"cmd": cmd, "outs": outs}


def _repo(tmp_path: Path) -> Path:
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([PY, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "in.txt").write_text("seed\n")
    return tmp_path


def _pipeline(tmp_path: Path, fail_d: bool) -> None:
    write = f"{PY} -c \"import sys; open(sys.argv[1], 'w').write(open(sys.argv[2]).read() + sys.argv[1])\""
    d_cmd = f"{PY} -c \"raise SystemExit(3)\"" if fail_d else f"{write} d.txt in.txt"
    stages = {
        "a": _stage(f"{write} a.txt in.txt", ["in.txt"], ["a.txt"]),
        "b": _stage(f"{write} b.txt in.txt", ["in.txt"], ["b.txt"]),
        "c": _stage(f"{write} c.txt a.txt && cat b.txt >> c.txt", ["a.txt", "b.txt"], ["c.txt"]),
        "d": _stage(d_cmd, ["in.txt"], ["d.txt"]),
        "e": _stage(f"{write} e.txt d.txt", ["d.txt"], ["e.txt"]),
    }
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))


def _status(repo: Path) -> set[str]:
    import contextlib

    from dvc.repo import Repo

    with contextlib.chdir(repo), Repo(str(repo)) as r:
        return set(r.status())


def test_runs_in_dependency_order_commits_what_succeeded_and_skips_after_a_failure(tmp_path) -> None:
    repo = _repo(tmp_path)
    _pipeline(repo, fail_d=True)
    p = plan(repo)
    assert set(p.stages) == {"a", "b", "c", "d", "e"} and p.needs["c"] == {"a", "b"} and p.needs["e"] == {"d"}
    assert p.priority["a"] > p.priority["c"]  # a stage with work waiting on it goes first

    assert main(["--repo", str(repo), "--jobs", "2"]) == 1
    assert (repo / "c.txt").read_text() == "seed\na.txtc.txtseed\nb.txt"  # ran after both a and b
    assert not (repo / "e.txt").exists()  # skipped: d failed
    assert _status(repo) == {"d", "e"}  # a, b, c are in dvc.lock, up to date
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert set(lock) == {"a", "b", "c"}

    _pipeline(repo, fail_d=False)  # fix d: only d and e are left to run
    assert set(plan(repo).stages) == {"d", "e"}
    assert main(["--repo", str(repo), "--jobs", "2"]) == 0
    assert _status(repo) == set() and (repo / "e.txt").exists()
    assert plan(repo).stages == {}


def test_bad_jobs_is_one_line(tmp_path, capsys) -> None:
    assert main(["--repo", str(tmp_path), "--jobs", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "--jobs" in err[0]


def test_a_collector_runs_after_a_failure_upstream_and_other_dependents_are_skipped(tmp_path) -> None:
    """report/comparison entries show a missing result as a row with its reason: they run once what they wait for
    has finished, failed or not; any other stage after a failure is skipped."""
    from flows.dvc_parallel import Plan, run_plan

    # "c" waits on "d" which waits on "a": both are skipped, whatever order they are looked at in
    p = Plan(stages={"a": "exit 3", "b": "echo b > b.txt", "c": "echo c > c.txt", "d": "true",
                     "report@m": "echo r > r.txt"},
             needs={"a": set(), "b": set(), "c": {"d"}, "d": {"a"}, "report@m": {"a", "b", "c"}},
             priority={"a": 2, "b": 1, "c": 1, "d": 1, "report@m": 1})
    done, failed = run_plan(p, tmp_path, jobs=1, log_dir=tmp_path / "logs", echo=lambda s: None)
    assert sorted(done) == ["b", "report@m"] and sorted(failed) == ["a", "c", "d"]
    assert (tmp_path / "r.txt").exists() and not (tmp_path / "c.txt").exists()


def test_a_shared_stage_costs_what_its_section_runs() -> None:
    """MVDream's mv_nerf is the nerf_sds module at 4 views a step: the scheduler ranks it by its section, so the
    longest chains start first and do not end alone."""
    from flows.dvc_parallel import _cost

    base = "python -m stages nerf_sds --params params.yaml"
    assert _cost(f"{base} --section mv_nerf --out x") > _cost(f"{base} --section vsd_nerf --out x") \
        > _cost(f"{base} --out x") > _cost("python -m stages evaluate --params params.yaml --out x") == 1
    assert _cost(f"{base} --section unknown --out x") == _cost(f"{base} --out x")
