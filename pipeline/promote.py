"""Stage ``promote``: the evaluation gate, then an atomic champion switch (or a refusal)."""

from __future__ import annotations

import logging
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import yaml

from pipeline import registry
from pipeline.config import GateParams, Params, Paths
from pipeline.io import read_json, write_json
from pipeline.loaders import file_sha256

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
    if cand[p] < need - 1e-12:  # exactly champion + min_delta passes despite float rounding
        return False, (f"{p} {cand[p]:.4f} < champion {champ[p]:.4f} + min_delta {gate.min_delta}")
    if cand[r] < champ[r] - gate.max_recall_drop:
        return False, f"guardrail: {r} {cand[r]:.4f} dropped more than {gate.max_recall_drop} below {champ[r]:.4f}"
    if cand["coverage"] < champ["coverage"] - gate.max_coverage_drop:
        return False, (f"guardrail: coverage {cand['coverage']:.4f} dropped more than "
                       f"{gate.max_coverage_drop} below {champ['coverage']:.4f}")
    return True, f"{p} {cand[p]:.4f} ≥ champion {champ[p]:.4f} + min_delta {gate.min_delta}"


def _sha(path: Path) -> str | None:
    return file_sha256(path) if path.exists() else None


def data_hash(root: Path, data: Path) -> dict:
    """The DVC hash of the training data (``data/validated`` in dvc.lock, written by DVC when
    the validate stage finished — before train runs); else our own sha256 of the events file."""
    lock = root / "dvc.lock"
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
    return {"kind": "sha256", "path": f"{rel}/events.parquet", "sha256": _sha(data / "events.parquet")}


def _git_rev(root: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def fresh_evaluation(params: Params, paths: Paths) -> dict:
    """evaluation.json with the champion *as it is now*.

    The champion is state outside DVC's graph (evaluate cannot depend on promote's output), so
    DVC may re-run promote alone — e.g. after a ``gate.*`` change or a rollback — on an
    evaluation that scored another champion, or none. Then the current champion is re-scored
    here on the same holdout, so the gate never compares against a stale record.
    """
    ev = read_json(paths.metrics / "evaluation.json")
    current = registry.champion(paths.registry)
    if current == ev.get("champion_version"):
        return ev
    from pipeline.evaluate import score_champion

    log.info("champion is %s but evaluation scored %s: re-scoring it on the same holdout",
             current, ev.get("champion_version"))
    return {**ev, "champion_version": current,
            "champion": score_champion(params, paths) if current else None}


def run(params: Params, paths: Paths) -> dict:
    ev = fresh_evaluation(params, paths)
    promote, reason = decide(ev, params.gate)
    k = ev["k"]
    p = f"precision@{k}"
    # Against the champion when there is one, else against popularity (the first-model rule).
    ref = ev.get("champion") or ev["popularity"]
    record = {
        "at": datetime.now(UTC).isoformat(),
        "promoted": promote,
        "reason": reason,
        "metric": p,
        "challenger_score": ev["candidate"][p],
        "champion_score": ev["champion"][p] if ev.get("champion") else None,
        "compared_with": "champion" if ev.get("champion") else "popularity",
        "delta": ev["candidate"][p] - ref[p],
        "min_delta": params.gate.min_delta,
        "candidate": ev["candidate"],
        "champion": ev.get("champion"),
        "champion_version": ev.get("champion_version"),
        "popularity": ev["popularity"],
        "als": ev.get("als"),
        "version": None,
    }
    if promote:
        card = {
            "metrics": ev["candidate"],
            "baselines": {"popularity": ev["popularity"], "als": ev.get("als")},
            "params": params.model.model_dump(mode="json"),
            "data": data_hash(paths.root, paths.validated),
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
