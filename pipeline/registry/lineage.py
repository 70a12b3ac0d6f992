"""Lineage of a registered model: the DVC hash of the data it was trained on, the git
revision of the code, the split it was judged on and what it is (family, format)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from pipeline.config import EVENTS_FILE, TRAINED_PAIRS_FILE, Params, Paths
from pipeline.io import file_sha256, read_json
from pipeline.registry.versions import JUDGED


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


def family(fmt: str | None) -> str | None:
    """``recflow-lightfm-v1`` → ``lightfm``: the family a model format belongs to."""
    if not fmt:
        return None
    name = fmt.removeprefix("recflow-")
    return name.rsplit("-v", 1)[0] if "-v" in name else name


def card(params: Params, paths: Paths, ev: dict, record: dict, meta: dict,
         served: dict | None = None) -> dict:
    """The card of a version about to be registered: what it is, how it scored, on which
    holdout it was judged and which data and code it came from. ``meta`` is the judged
    artifact's ``model.json``; ``record`` the gate's decision; ``served`` the lineage of the
    refit on all data that serving loads (:mod:`pipeline.evaluation.refit`)."""
    which = record["promoted_model"]
    trainset = read_json(paths.trainset_meta) if paths.trainset_meta.exists() else {}
    return {
        "model": {"family": family(meta.get("format")), "format": meta.get("format"),
                  "promoted_as": which},
        "metrics": ev[which],
        "baselines": {f: ev[f] for f in ("popularity", "als", "ease", "lightfm", "blend") if ev.get(f)},
        "config": meta.get("config"),
        "params": meta.get("config"),   # the model's own configuration, whatever its family
        "inputs_sha256": meta.get("inputs_sha256"),
        "judged_on": {"split": params.split.model_dump(mode="json"),
                      "holdout_pairs": trainset.get("holdout_pairs"),
                      "target": record.get("target"),
                      "gain": record.get("gain"), "interval": record.get("interval")},
        "trained_on": {"pairs": trainset.get("train_pairs"), "fingerprints": TRAINED_PAIRS_FILE,
                       "artifact": f"{JUDGED}/" if served else "."},
        "served": served,
        "data": data_hash(paths.root, paths.validated, paths.dvc_lock),
        "git_rev": git_rev(paths.root),
        "cutoff": trainset.get("cutoff"),
        "registered_at": record["at"],
    }


def public(card: dict) -> dict:
    """What ``GET /model`` shows of a card: the model, its metrics and both lineages — the
    holdout it was judged on (and the train part the judged artifact was fitted on), and the
    data the served refit was fitted on."""
    data = card.get("data") or {}
    return {"model": card.get("model"), "metrics": card.get("metrics"),
            "baselines": card.get("baselines"), "params": card.get("params"),
            "lineage": {"data": data or None, "data_sha256": data.get("sha256"),
                        "data_dvc_md5": data.get("md5"), "git_rev": card.get("git_rev"),
                        "cutoff": card.get("cutoff"), "registered_at": card.get("registered_at"),
                        "judged_on": card.get("judged_on"), "trained_on": card.get("trained_on"),
                        "served": card.get("served")}}
