"""Shared fixtures: tiny params, a throw-away copy of the project, the shared data sets."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
# ../shared/datasets from the main checkout; ../../shared/datasets from a worktree in wt/<name>
DATASETS = next((d for d in (ROOT.parent / "shared" / "datasets",
                             ROOT.parent.parent / "shared" / "datasets") if d.is_dir()),
                ROOT.parent / "shared" / "datasets")

TINY = {
    # attribute_taste 0: at 20k events, taste spread over country / age band leaves no learned
    # family clearly above popularity (the gate then keeps popularity, and the serving tests
    # want a learned champion); the attribute tables are still written and served
    "synthetic": {"n_events": 20000, "n_users": 400, "n_items": 600, "n_categories": 8,
                  "attribute_taste": 0.0},
    # a smaller search than params.yaml's: identity only vs tokens, two ALS and one EASE trial
    "model": {"epochs": 10, "no_components": 16, "num_threads": 1,
              "search": {"token_weight": [1.0]}},
    "baselines": {"als": {"factors": [32], "alpha": [1.0]}, "ease": {"regularization": [100.0]}},
}


def deep_update(d: dict, u: dict) -> dict:
    for k, v in u.items():
        d[k] = deep_update(dict(d.get(k) or {}), v) if isinstance(v, dict) else v
    return d


def project_files(root: Path = ROOT) -> list[str]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=root,
                         capture_output=True, text=True, check=True).stdout.split()
    return [f for f in out if (root / f).is_file()]


def copy_project(dest: Path, overrides: dict | None = None) -> Path:
    """Copy the tracked + unignored files into ``dest``; git init + commit; tiny params."""
    for f in project_files():
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dest / f)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    (dest / "params.yaml").write_text(yaml.safe_dump(deep_update(params, overrides or TINY), sort_keys=False))
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=dest, check=True, env=env)
    return dest


def run_env(root: Path) -> dict[str, str]:
    """Environment for commands run inside a project copy: the venv first on PATH."""
    env = {k: v for k, v in os.environ.items() if k != "RECFLOW_ROOT"}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def sh(args: list[str], cwd: Path, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(args, cwd=cwd, env=run_env(cwd), capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {p.returncode}\nstdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}")
    return p


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_project(tmp_path / "proj")


@pytest.fixture(scope="session")
def movielens() -> Path:
    d = DATASETS / "ml-latest-small"
    if not (d / "ratings.csv").exists():
        pytest.skip(f"{d} not present")
    return d


@pytest.fixture(scope="session")
def built_project(tmp_path_factory) -> Path:
    """One tiny project copy on which `dvc repro` has run; read-only for its users
    (copy it with `clone_built` before changing anything)."""
    root = copy_project(tmp_path_factory.mktemp("built") / "proj")
    sh(["dvc", "repro"], root, timeout=900)
    return root


def clone_built(built: Path, dest: Path) -> Path:
    """A private copy of a built project (data, models, online store included)."""
    shutil.copytree(built, dest, symlinks=True)
    return dest
