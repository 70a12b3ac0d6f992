"""Model registry on disk: immutable versions, an atomic champion pointer, a decision log.

models/registry/
  versions/v0001/   model.npz, model.json, card.json (metrics, params, data hash, git rev),
                    trained_pairs.npy (fingerprints of the pairs it was fitted on): the served
                    model, the promoted configuration refit on all data
    judged/         the artifact the gate judged (fitted on the train part), kept so that a
                    later gate can score the champion on data it was not fitted on
  champion.json     {"version": "v0001", ...}   ← replaced by rename, never edited in place
  history.jsonl     one gate decision / rollback per line

Every switch of the pointer is recorded *before* it happens (a promotion's decision record, a
rollback's record), so the history's last switch always names the champion or the one being
switched to. :func:`recover` finishes a switch a crash interrupted, and :func:`rollback` reads
the true previous champion off the history.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

from pipeline.errors import ChampionPointerError, RecflowError
from pipeline.io import read_json, remove_stale, write_json

CHAMPION = "champion.json"
JUDGED = "judged"   # a version's sub-folder: the pre-refit artifact the gate scored
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


def register(registry: Path, candidate: Path, card: dict, judged: Path | None = None) -> str:
    """Copy the candidate (the served artifact) into a new immutable version, and ``judged``
    (the artifact the gate scored, when it differs) into its ``judged/`` (temp dir, then
    rename). Temp folders of killed runs (``.vNNNN.tmp-<pid>`` of a dead process) are
    removed first."""
    vdir = versions_dir(registry)
    vdir.mkdir(parents=True, exist_ok=True)
    remove_stale(vdir)
    existing = list_versions(registry)
    version = f"v{(int(existing[-1][1:]) + 1 if existing else 1):04d}"
    tmp = vdir / f".{version}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(candidate, tmp)
    if judged is not None:
        shutil.copytree(judged, tmp / JUDGED)
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
    """Append one record to the history, flushed to disk before returning (a switch is
    recorded before the pointer moves, so the record must not sit in a buffer)."""
    registry.mkdir(parents=True, exist_ok=True)
    with (registry / "history.jsonl").open("a") as f:
        f.write(json.dumps(record, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def history(registry: Path) -> list[dict]:
    f = registry / "history.jsonl"
    return [json.loads(line) for line in f.read_text().splitlines() if line.strip()] if f.exists() else []


def card(registry: Path, version: str) -> dict:
    f = versions_dir(registry) / version / "card.json"
    return read_json(f) if f.exists() else {}


def switches(records: list[dict]) -> list[dict]:
    """The history records that moved (or were about to move) the champion pointer, in order:
    promotions, rollbacks and recovered switches."""
    return [r for r in records if r.get("version") and
            (r.get("promoted") or r.get("action") in ("rollback", "recovered"))]


def _since(registry: Path) -> datetime | None:
    try:
        return datetime.fromisoformat(read_json(registry / CHAMPION)["since"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def recover(registry: Path) -> str | None:
    """Make the pointer and the history agree after a crash; returns what it did, or None.

    - the last switch record is newer than the pointer (killed between the record and the
      switch): finish the switch it records;
    - the pointer is newer than the last switch record (a registry written before switches
      were recorded first, killed after the switch): record the switch it made.
    Also removes the temp folders of killed registrations.
    """
    if versions_dir(registry).exists():
        remove_stale(versions_dir(registry))
    current = champion(registry)
    moves = switches(history(registry))
    last = moves[-1] if moves else None
    if last is None and current is None or last is not None and last["version"] == current:
        return None
    now = datetime.now(UTC).isoformat()
    since = _since(registry)
    pointer_newer = last is None or (since is not None and
                                     since > datetime.fromisoformat(last["at"]))
    if current is not None and pointer_newer:
        log_decision(registry, {"action": "recovered", "version": current, "at": now,
                                "reason": "champion switch found without its record"})
        return f"recorded the switch to {current}"
    target = last["version"] if last else None
    if target and (versions_dir(registry) / target / "model.npz").exists():
        set_champion(registry, target, f"recovered: finishing the recorded switch to {target}")
        return f"finished the recorded switch to {target}"
    return None


def rollback(registry: Path, version: str | None = None) -> str:
    """Make ``version`` (default: the champion before the current one) the champion again.

    The previous champion is the one the history's switches name before the current one; the
    rollback is recorded before the pointer moves, like a promotion."""
    recover(registry)
    current = champion(registry)
    if version is None:
        earlier = [r["version"] for r in switches(history(registry))[:-1] if r["version"] != current]
        if not earlier:
            raise RecflowError(f"{registry}: no earlier champion to roll back to.")
        version = earlier[-1]
    if not (versions_dir(registry) / version / "model.npz").exists():
        raise RecflowError(f"{registry}: version '{version}' not found; see 'recflow models'.")
    log_decision(registry, {"action": "rollback", "version": version, "from": current,
                            "at": datetime.now(UTC).isoformat()})
    set_champion(registry, version, reason=f"rollback from {current}")
    return version
