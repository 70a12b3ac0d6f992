"""kill -9 in train → evaluate → promote, under real DVC in a copy of a built project.

The process is killed (SIGKILL, nothing runs after it) inside promote during the refit for
serving, after the version is registered, after the decision is recorded and after the champion pointer switched, and at
the end of each stage under `dvc repro` — its outputs written, DVC not told. After each, a
normal run: the champion is a complete version, the history's last switch names it, no temp
folder of the killed run is left, and rollback restores the true previous champion.

The kill is injected by a ``sitecustomize`` on PYTHONPATH that wraps one function of the
``recflow`` process (DVC runs stages as ``recflow <stage>``); the product has no hook for it.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import clone_built, run_env

pytestmark = pytest.mark.integration

KILLER = '''
import os, signal, sys
point = os.environ.get("RECFLOW_KILL_AT", "")   # "module:function[:before]"
if point and os.path.basename(sys.argv[0]) == "recflow":
    import importlib
    module, name, *when = point.split(":")
    mod = importlib.import_module(module)
    orig = getattr(mod, name)
    def die():
        if os.environ.get("RECFLOW_KILL_GROUP"):   # DVC and the stage: the run stops here
            os.killpg(os.getpgrp(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
    def killed(*a, **k):
        if when == ["before"]:
            die()
        orig(*a, **k)
        die()
    setattr(mod, name, killed)
'''


def run(args: list[str], cwd: Path, hook: Path, kill: str | None = None,
        group: bool = False) -> subprocess.CompletedProcess:
    """``args`` in its own session (a process group killed whole with ``group``)."""
    env = run_env(cwd)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(hook), env.get("PYTHONPATH")) if p)
    if kill:
        env["RECFLOW_KILL_AT"] = kill
    if group:
        env["RECFLOW_KILL_GROUP"] = "1"
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
                          start_new_session=True)


def registry_state(proj: Path) -> tuple[str | None, list[dict]]:
    reg = proj / "models/registry"
    champ = reg / "champion.json"
    hist = reg / "history.jsonl"
    return (json.loads(champ.read_text())["version"] if champ.exists() else None,
            [json.loads(ln) for ln in hist.read_text().splitlines() if ln.strip()]
            if hist.exists() else [])


def served_version_is_complete(proj: Path) -> str:
    champ, _ = registry_state(proj)
    assert champ is not None
    d = proj / "models/registry/versions" / champ
    assert {"model.npz", "model.json", "card.json"} <= {p.name for p in d.iterdir()}
    return champ


def switches(hist: list[dict]) -> list[str]:
    """The versions the history says the pointer moved to, in order."""
    return [r["version"] for r in hist if r.get("version") and
            (r.get("promoted") or r.get("action") in ("rollback", "recovered"))]


def consistent(proj: Path) -> str:
    """The champion is complete, the history's last switch names it, no leftovers."""
    champ = served_version_is_complete(proj)
    _, hist = registry_state(proj)
    assert switches(hist)[-1] == champ, hist[-3:]
    for v in switches(hist):
        assert (proj / "models/registry/versions" / v / "model.npz").exists()
    leftovers = [p.name for d in (proj / "models", proj / "models/registry/versions", proj / "data")
                 for p in d.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    assert not leftovers, leftovers
    return champ


def popularity_champion(proj: Path) -> str:
    """Make a popularity model (fitted on the project's train part) the champion, recorded
    like a rollback: the candidate beats it clearly, so every promote below switches."""
    from pipeline.models.popularity import Popularity
    from pipeline.registry import versions

    reg = proj / "models/registry"
    src = proj / "popularity-src"
    Popularity().fit(pd.read_parquet(proj / "data/trainset/train.parquet")).save(src)
    v = versions.register(reg, src, {"model": {"family": "popularity"}})
    versions.log_decision(reg, {"action": "rollback", "version": v,
                                "at": pd.Timestamp.now("UTC").isoformat()})
    versions.set_champion(reg, v, "test setup: a weak champion")
    return v


def rollback(proj: Path) -> str:
    from pipeline.registry import versions

    return versions.rollback(proj / "models/registry")


@pytest.mark.timeout(900)
def test_kill_at_every_boundary_keeps_champion_and_history_consistent(built_project, tmp_path):
    proj = clone_built(built_project, tmp_path / "p")
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILLER)
    weak = popularity_champion(proj)
    served = run(["recflow", "recommend", "u0000001", "-k", "5"], proj, hook)   # any family serves
    assert served.returncode == 0 and f"model {weak}" in served.stdout, served.stderr
    assert len([ln for ln in served.stdout.splitlines() if ln.strip()[:3].strip(". ").isdigit()]) == 5
    versions = "pipeline.registry.versions"

    # Inside promote (the command DVC runs). After the switch: consistent at once.
    killed = run(["recflow", "promote"], proj, hook, kill=f"{versions}:set_champion")
    assert killed.returncode == -9, killed.stdout + killed.stderr
    assert consistent(proj) != weak
    assert rollback(proj) == weak                       # the true previous champion
    # Inside the refit for serving (its artifact written to a temp folder, nothing registered)
    listed = sorted(os.listdir(proj / "models/registry/versions"))
    killed = run(["recflow", "promote"], proj, hook, kill="pipeline.evaluation.refit:write_artifact")
    assert killed.returncode == -9, killed.stdout + killed.stderr
    assert served_version_is_complete(proj) == weak
    assert sorted(os.listdir(proj / "models/registry/versions")) == listed
    assert [p.name for p in (proj / "models").iterdir() if p.name.startswith(".serving.tmp-")]
    # After register (an unrecorded version), then after the record (pointer not moved): the
    # champion served stays the old one; the next run finishes the recorded switch.
    for point in ("register", "log_decision"):
        killed = run(["recflow", "promote"], proj, hook, kill=f"{versions}:{point}")
        assert killed.returncode == -9, killed.stdout + killed.stderr
        assert served_version_is_complete(proj) == weak
    assert run(["recflow", "promote"], proj, hook).returncode == 0
    assert consistent(proj) != weak
    assert rollback(proj) == weak
    assert consistent(proj) == weak

    # `dvc repro` killed whole at each stage boundary: before evaluate starts (train done and
    # recorded), before promote starts, after promote's work (DVC not told); then a normal run
    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["model"]["epochs"] -= 1                      # train, evaluate and promote must run
    params["baselines"]["als"].update(factors=[16], regularization=[0.05])   # a shorter evaluate
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for kill, ran in (("pipeline.stages.evaluate:run:before", "train"),
                      ("pipeline.stages.promote:run:before", "evaluate"),
                      ("pipeline.stages.promote:run", "promote")):
        killed = run(["dvc", "repro"], proj, hook, kill=kill, group=True)
        assert killed.returncode == -9 and f"Running stage '{ran}'" in killed.stdout, kill
        assert consistent(proj) == weak or ran == "promote"
    final = run(["dvc", "repro"], proj, hook)
    assert final.returncode == 0, final.stdout + final.stderr
    assert "Running stage 'train'" not in final.stdout
    assert consistent(proj) != weak and rollback(proj) == weak
