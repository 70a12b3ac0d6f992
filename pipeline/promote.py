"""Stage ``promote``: the evaluation gate, then an atomic champion switch (or a refusal)."""

from __future__ import annotations

import hashlib
import logging
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from pipeline import registry
from pipeline.config import GateParams, Params, Paths
from pipeline.io import read_json, write_json

log = logging.getLogger("recflow.promote")


def decide(ev: dict, gate: GateParams) -> tuple[bool, str]:
    """Promote iff the challenger beats the champion (re-scored on the same holdout) by
    ``min_delta`` and recall/coverage guardrails hold; with no champion it must beat popularity."""
    k = ev["k"]
    p = f"precision@{k}"
    r = f"recall@{k}"
    cand = ev["candidate"]
    champ = ev.get("champion")
    if not champ:
        pop = ev["popularity"][p]
        if cand[p] > pop:
            return True, f"first model: {p} {cand[p]:.4f} beats popularity {pop:.4f}"
        return False, f"first model: {p} {cand[p]:.4f} does not beat popularity {pop:.4f}"
    need = champ[p] + gate.min_delta
    if cand[p] < need:
        return False, (f"{p} {cand[p]:.4f} < champion {champ[p]:.4f} + min_delta {gate.min_delta}")
    if cand[r] < champ[r] - gate.max_recall_drop:
        return False, f"guardrail: {r} {cand[r]:.4f} dropped more than {gate.max_recall_drop} below {champ[r]:.4f}"
    if cand["coverage"] < champ["coverage"] - gate.max_coverage_drop:
        return False, (f"guardrail: coverage {cand['coverage']:.4f} dropped more than "
                       f"{gate.max_coverage_drop} below {champ['coverage']:.4f}")
    return True, f"{p} {cand[p]:.4f} ≥ champion {champ[p]:.4f} + min_delta {gate.min_delta}"


def _sha(path: Path) -> str | None:
    if not path.exists():
        return None
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _git_rev(root: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run(params: Params, paths: Paths) -> dict:
    ev = read_json(paths.metrics / "evaluation.json")
    promote, reason = decide(ev, params.gate)
    k = ev["k"]
    record = {
        "at": datetime.now(UTC).isoformat(),
        "promoted": promote,
        "reason": reason,
        "candidate": ev["candidate"],
        "champion": ev.get("champion"),
        "champion_version": ev.get("champion_version"),
        "popularity": ev["popularity"],
        "delta": (ev["candidate"][f"precision@{k}"] - ev["champion"][f"precision@{k}"]) if ev.get("champion") else None,
        "version": None,
    }
    if promote:
        card = {
            "metrics": ev["candidate"],
            "baseline": ev["popularity"],
            "params": params.model.model_dump(mode="json"),
            "data_sha256": _sha(paths.validated / "events.parquet"),
            "git_rev": _git_rev(paths.root),
            "cutoff": read_json(paths.trainset / "meta.json")["cutoff"],
            "registered_at": record["at"],
        }
        version = registry.register(paths.registry, paths.candidate, card)
        registry.set_champion(paths.registry, version, reason)
        record["version"] = version
        log.info("promoted %s: %s", version, reason)
    else:
        log.info("not promoted: %s (champion stays %s)", reason, ev.get("champion_version"))
    registry.log_decision(paths.registry, record)
    write_json(paths.reports / "promotion.json", record)
    return record
