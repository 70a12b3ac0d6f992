"""Model registry on disk: immutable versions, an atomic champion pointer, a decision log.

models/registry/
  versions/v0001/   model.npz, model.json, card.json (metrics, params, data hash, git rev)
  champion.json     {"version": "v0001", ...}   ← replaced by rename, never edited in place
  history.jsonl     one gate decision / rollback per line
"""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

from pipeline.errors import ChampionPointerError, RecflowError
from pipeline.io import read_json, write_json

CHAMPION = "champion.json"
_VERSION = re.compile(r"v\d+")  # what register() names: no path, no traversal


def versions_dir(registry: Path) -> Path:
    return registry / "versions"


def list_versions(registry: Path) -> list[str]:
    d = versions_dir(registry)
    return sorted(p.name for p in d.iterdir() if p.is_dir() and p.name.startswith("v")) if d.exists() else []


def champion(registry: Path) -> str | None:
    """The champion's version, or None before the first promotion.

    A pointer that exists but is not ``{"version": "vNNNN", ...}`` naming a registered version
    (a hand edit, a bad restore) raises :class:`ChampionPointerError`: every front door says so
    in one line, and serving keeps the model it has.
    """
    f = registry / CHAMPION
    if not f.exists():
        return None
    try:
        pointer = read_json(f)
    except (OSError, ValueError) as e:  # ValueError: bad JSON, bad UTF-8
        raise _bad_pointer(registry, f"is not readable JSON ({e})") from None
    if not isinstance(pointer, dict):
        raise _bad_pointer(registry, "is not a JSON object")
    v = pointer.get("version")
    if not isinstance(v, str) or not _VERSION.fullmatch(v):
        raise _bad_pointer(registry, f'has no valid "version" (got {repr(v)[:40]})')
    if not (versions_dir(registry) / v / "model.npz").is_file():
        raise _bad_pointer(registry, f"names {v}, which is not a registered version")
    return v


def _bad_pointer(registry: Path, what: str) -> ChampionPointerError:
    known = list_versions(registry)
    if not known:
        fix = "delete it and run 'dvc repro' to promote a first model"
    else:
        listed = ", ".join(known) if len(known) <= 5 else f"{known[0]} … {known[-1]}"
        fix = f'write {{"version": "<one of {listed}>"}} into it'
    return ChampionPointerError(f"{registry / CHAMPION} {what}: restore it from a backup or {fix}.")


def champion_dir(registry: Path) -> Path | None:
    v = champion(registry)
    return versions_dir(registry) / v if v else None


def register(registry: Path, candidate: Path, card: dict) -> str:
    """Copy the candidate into a new immutable version (temp dir, then rename)."""
    existing = list_versions(registry)
    version = f"v{(int(existing[-1][1:]) + 1 if existing else 1):04d}"
    vdir = versions_dir(registry)
    vdir.mkdir(parents=True, exist_ok=True)
    tmp = vdir / f".{version}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(candidate, tmp)
    write_json(tmp / "card.json", {**card, "version": version})
    os.replace(tmp, vdir / version)
    return version


def set_champion(registry: Path, version: str, reason: str) -> None:
    """Point the champion at ``version``: one atomic rename, so readers never see a mix."""
    if not (versions_dir(registry) / version / "model.npz").exists():
        raise RecflowError(f"{registry}: version '{version}' not found; see 'recflow models'.")
    write_json(registry / CHAMPION, {"version": version, "since": datetime.now(UTC).isoformat(),
                                     "reason": reason})


def log_decision(registry: Path, record: dict) -> None:
    registry.mkdir(parents=True, exist_ok=True)
    with (registry / "history.jsonl").open("a") as f:
        f.write(json.dumps(record, default=str) + "\n")


def history(registry: Path) -> list[dict]:
    f = registry / "history.jsonl"
    return [json.loads(line) for line in f.read_text().splitlines() if line.strip()] if f.exists() else []


def card(registry: Path, version: str) -> dict:
    f = versions_dir(registry) / version / "card.json"
    return read_json(f) if f.exists() else {}


def rollback(registry: Path, version: str | None = None) -> str:
    """Make ``version`` (default: the champion before the current one) the champion again."""
    current = champion(registry)
    if version is None:
        promoted = [r["version"] for r in history(registry) if r.get("promoted") or r.get("action") == "rollback"]
        earlier = [v for v in promoted if v != current]
        if not earlier:
            raise RecflowError(f"{registry}: no earlier champion to roll back to.")
        version = earlier[-1]
    set_champion(registry, version, reason=f"rollback from {current}")
    log_decision(registry, {"action": "rollback", "version": version, "from": current,
                            "at": datetime.now(UTC).isoformat()})
    return version
