"""Lineage of a registered model: the DVC hash of the data it was trained on, the git
revision of the code."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from pipeline.config import EVENTS_FILE
from pipeline.io import file_sha256


def _sha(path: Path) -> str | None:
    return file_sha256(path) if path.exists() else None


def data_hash(root: Path, data: Path, lock: Path) -> dict:
    """The DVC hash of the training data (``data/validated`` in dvc.lock, written by DVC when
    the validate stage finished — before train runs); else our own sha256 of the events file."""
    rel = data.relative_to(root).as_posix() if data.is_relative_to(root) else str(data)
    if lock.exists():
        try:
            stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
        except yaml.YAMLError:
            stages = {}
        for stage in stages.values():
            for out in stage.get("outs", []) or []:
                if out.get("path") == rel and out.get("md5"):
                    return {"kind": "dvc-md5", "path": rel, "md5": out["md5"]}
    return {"kind": "sha256", "path": f"{rel}/{EVENTS_FILE}", "sha256": _sha(data / EVENTS_FILE)}


def git_rev(root: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
