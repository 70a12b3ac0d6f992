"""The gate and the registry with real trained models on a planted-structure data set.

A champion trained for a few epochs; a worse challenger (one epoch) must be refused with the
champion byte-identical; a better one (more epochs) accepted; a crash between writing the
version and switching the champion must leave the old champion served.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.columns import Columns as C
from pipeline.config import Params, Paths
from pipeline.evaluation.splits import carve_validation
from pipeline.io import write_json
from pipeline.models.hybrid import LightFMRecommender
from pipeline.registry import versions as registry
from pipeline.stages import evaluate, promote

PARAMS = Params.model_validate({
    "signals": {"weights": {"view": 1.0}},
    "model": {"no_components": 8, "num_threads": 1, "learning_rate": 0.05},
    "baselines": {"als": {"factors": [8], "regularization": [0.01], "iterations": 5}},
    "split": {"strategy": "leave_n_out"},
    "gate": {"min_delta": 0.001, "max_recall_drop": 0.02, "max_coverage_drop": 0.05},
})


def planted(n_users: int = 300, n_items: int = 120, groups: int = 6, per_user: int = 14,
            n_out: int = 4) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Users of group g like items ≡ g (mod groups), with a long tail inside the group."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(n_users):
        own = np.arange(u % groups, n_items, groups)
        w = 1.0 / np.arange(1, len(own) + 1)
        for j, it in enumerate(rng.choice(own, per_user, replace=False, p=w / w.sum())):
            rows.append((f"u{u:03d}", f"i{it:03d}", 1.0 + rng.random(), j < n_out))
    df = pd.DataFrame(rows, columns=[C.user, C.item, C.confidence, "out"])
    return df[~df.out].drop(columns="out"), df[df.out].drop(columns="out")


@pytest.fixture
def root(tmp_path: Path) -> Paths:
    paths = Paths(tmp_path)
    train, hold = planted()
    paths.trainset.mkdir(parents=True)
    fit, validation = carve_validation(train, PARAMS)
    for frame, f in ((train, paths.train_pairs), (hold, paths.holdout_pairs),
                     (fit, paths.fit_pairs), (validation, paths.validation_pairs)):
        frame.to_parquet(f, index=False)
    pd.DataFrame({C.user: sorted(set(train[C.user]))}).to_parquet(paths.train_user_features)
    write_json(paths.trainset_meta, {"cutoff": "2026-01-01T00:00:00+00:00"})
    return paths


def challenger(paths: Paths, epochs: int) -> None:
    """Train a candidate for ``epochs`` epochs, evaluate it beside the champion."""
    train = pd.read_parquet(paths.train_pairs)
    params = PARAMS.model.model_copy(update={"epochs": epochs})
    LightFMRecommender(params).fit(train).save(paths.candidate)
    evaluate.run(PARAMS, paths)


def snapshot(reg: Path) -> dict[str, bytes]:
    """Every registry file except the append-only decision log."""
    return {str(p.relative_to(reg)): p.read_bytes() for p in sorted(reg.rglob("*"))
            if p.is_file() and p.name != "history.jsonl"}


def test_gate_refuses_worse_accepts_better_and_keeps_history(root):
    reg = root.registry
    challenger(root, epochs=3)
    first = promote.run(PARAMS, root)
    assert first["promoted"] and first["version"] == "v0001"
    assert first["compared_with"] == "popularity" and first["delta"] > 0
    assert registry.champion(reg) == "v0001"
    card = registry.card(reg, "v0001")
    assert card["metrics"]["precision@10"] == first["challenger_score"]
    assert {"params", "data", "git_rev", "baselines"} <= set(card)

    before = snapshot(reg)
    challenger(root, epochs=1)                               # worse: one epoch
    ev = json.loads((root.metrics / "evaluation.json").read_text())
    assert ev["champion_version"] == "v0001"                 # champion re-scored on this holdout
    assert ev["champion"]["precision@10"] == pytest.approx(card["metrics"]["precision@10"])
    worse = promote.run(PARAMS, root)
    assert not worse["promoted"] and worse["version"] is None
    assert worse["challenger_score"] < worse["champion_score"] and worse["delta"] < 0
    assert "champion" in worse["reason"]
    assert snapshot(reg) == before                           # byte-identical
    assert registry.list_versions(reg) == ["v0001"]

    challenger(root, epochs=10)                              # better
    better = promote.run(PARAMS, root)
    assert better["promoted"] and better["version"] == "v0002", better["reason"]
    assert better["delta"] >= PARAMS.gate.min_delta
    assert registry.champion(reg) == "v0002"
    log = registry.history(reg)
    assert [r["promoted"] for r in log] == [True, False, True]
    assert all({"challenger_score", "champion_score", "delta", "reason"} <= set(r) for r in log)

    assert registry.rollback(reg) == "v0001"
    assert registry.champion(reg) == "v0001"
    assert registry.history(reg)[-1]["action"] == "rollback"


def test_crash_between_register_and_switch_keeps_the_old_champion(root, monkeypatch):
    reg = root.registry
    challenger(root, epochs=3)
    promote.run(PARAMS, root)
    champ_bytes = (reg / registry.CHAMPION).read_bytes()
    old_scores = LightFMRecommender.load(registry.champion_dir(reg)).scores(["u000"])

    challenger(root, epochs=10)

    def crash(*_a, **_k):
        raise OSError("injected crash between register and set_champion")

    monkeypatch.setattr(registry, "set_champion", crash)
    with pytest.raises(OSError, match="injected"):
        promote.run(PARAMS, root)

    assert (reg / registry.CHAMPION).read_bytes() == champ_bytes
    assert registry.champion(reg) == "v0001"
    served = LightFMRecommender.load(registry.champion_dir(reg))   # old champion still served
    np.testing.assert_array_equal(served.scores(["u000"]), old_scores)
    # consistent: every visible version is complete, no temp dirs are visible as versions
    for v in registry.list_versions(reg):
        d = registry.versions_dir(reg) / v
        assert {"model.npz", "model.json", "card.json"} <= {p.name for p in d.iterdir()}
    monkeypatch.undo()
    assert registry.rollback(reg, "v0001") == "v0001"


def test_crash_while_copying_a_version_leaves_no_partial_version(root, monkeypatch):
    challenger(root, epochs=3)

    def broken_copy(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr("pipeline.registry.versions.shutil.copytree", broken_copy)
    with pytest.raises(OSError):
        promote.run(PARAMS, root)
    assert registry.list_versions(root.registry) == []
    assert registry.champion(root.registry) is None




def test_cli_models_and_rollback(root, capsys, monkeypatch):
    from pipeline.cli import main

    monkeypatch.setenv("RECFLOW_ROOT", str(root.root))   # main() sets it; undone after the test
    challenger(root, epochs=3)
    promote.run(PARAMS, root)
    challenger(root, epochs=10)
    promote.run(PARAMS, root)
    capsys.readouterr()
    assert main(["--root", str(root.root), "models"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].split()[0] == "v0001" and out[1].split()[:2] == ["*", "v0002"]
    assert all("precision@10=" in ln and "data=" in ln for ln in out)
    assert main(["--root", str(root.root), "rollback"]) == 0
    assert "champion is now v0001" in capsys.readouterr().out
    assert main(["--root", str(root.root), "rollback", "v0009"]) == 1
    err = capsys.readouterr().err
    assert "v0009" in err and len(err.strip().splitlines()) == 1
    assert registry.champion(root.registry) == "v0001"


def test_promote_rescored_when_evaluation_saw_another_champion(root):
    """DVC may re-run promote alone (a gate.* change): the gate must compare against the
    champion as it is now, not the one (or none) that evaluation.json scored."""
    challenger(root, epochs=10)
    assert promote.run(PARAMS, root)["version"] == "v0001"
    stale = json.loads((root.metrics / "evaluation.json").read_text())
    assert stale["champion_version"] is None  # scored before v0001 existed
    before = snapshot(root.registry)
    again = promote.run(PARAMS, root)  # same candidate, same stale evaluation
    assert again["promoted"] is False and again["compared_with"] == "champion"
    assert again["champion_version"] == "v0001" and abs(again["delta"]) < 1e-9
    assert snapshot(root.registry) == before
