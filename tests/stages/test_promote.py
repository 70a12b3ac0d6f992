"""The gate and the registry with real trained models on a planted-structure data set.

A champion trained for a few epochs; a worse challenger (one epoch) must be refused with the
champion byte-identical; a better one (more epochs) accepted; a retrain of the same
configuration that only differs by its seed is noise and refused; a first model that does not
beat popularity leaves popularity as the champion; a champion trained on another split is
refitted, never scored on its own training pairs; a crash anywhere in promote leaves the
champion served and the history true, so rollback restores the real previous champion.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.columns import Columns as C
from pipeline.config import Params, Paths
from pipeline.errors import RefitFailed
from pipeline.evaluation.champion import PRE_REFIT, REFIT
from pipeline.evaluation.fingerprint import inputs_sha256, load_fingerprint, overlap, write_artifact
from pipeline.evaluation.holdout import score_users
from pipeline.evaluation.splits import carve_validation
from pipeline.io import write_json
from pipeline.models.artifact import load_model
from pipeline.models.hybrid import LightFMRecommender
from pipeline.models.popularity import Popularity
from pipeline.registry import versions as registry
from pipeline.stages import evaluate, promote

RAW = {
    "signals": {"weights": {"view": 1.0}},
    "model": {"no_components": 8, "num_threads": 1, "learning_rate": 0.05,
              "user_features": [], "item_features": []},   # identity only, as challenger fits
    "baselines": {"als": {"factors": [8], "regularization": [0.01], "iterations": 5}},
    "split": {"strategy": "leave_n_out"},
    "gate": {"min_delta": 0.001, "max_recall_drop": 0.02, "max_coverage_drop": 0.05},
}
PARAMS = Params.model_validate(RAW)


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


def as_events(pairs: pd.DataFrame) -> pd.DataFrame:
    """One view per pair, a minute apart: the validated events the refit for serving reads."""
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    return pd.DataFrame({C.user: pairs[C.user].to_numpy(), C.item: pairs[C.item].to_numpy(),
                         C.event: "view", C.value: np.nan,
                         C.ts: t0 + pd.to_timedelta(np.arange(len(pairs)), unit="min")})


@pytest.fixture
def root(tmp_path: Path) -> Paths:
    paths = Paths(tmp_path)
    train, hold = planted()
    paths.validated.mkdir(parents=True)
    as_events(pd.concat([train, hold])).to_parquet(paths.validated_events, index=False)
    paths.trainset.mkdir(parents=True)
    fit, validation = carve_validation(train, PARAMS)
    for frame, f in ((train, paths.train_pairs), (hold, paths.holdout_pairs),
                     (fit, paths.fit_pairs), (validation, paths.validation_pairs)):
        frame.to_parquet(f, index=False)
    pd.DataFrame({C.user: sorted(set(train[C.user]))}).to_parquet(paths.train_user_features)
    write_json(paths.trainset_meta, {"cutoff": "2026-01-01T00:00:00+00:00",
                                     "train_pairs": len(train), "holdout_pairs": len(hold)})
    return paths


def challenger(paths: Paths, epochs: int, seed: int = 42, lr: float = 0.05,
               fitted_on: pd.DataFrame | None = None, params: Params = PARAMS) -> None:
    """Train a candidate for ``epochs`` epochs (on the train part unless ``fitted_on`` says
    otherwise), saved as the train stage saves it, and evaluate it beside the champion."""
    train = pd.read_parquet(paths.train_pairs) if fitted_on is None else fitted_on
    mp = PARAMS.model.model_copy(update={"epochs": epochs, "seed": seed, "learning_rate": lr})
    model = LightFMRecommender(mp).fit(train)
    write_artifact(model, paths.candidate, train, inputs_sha256(model.config(), train, {}, {}))
    evaluate.run(params, paths)


def details(paths: Paths) -> dict:
    return json.loads(paths.evaluation_details.read_text())


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
    ev = details(root)
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
    assert better["interval"][0] > PARAMS.gate.min_delta and better["verdict"] == "promote"
    assert registry.champion(reg) == "v0002"
    log = registry.history(reg)
    assert [r["promoted"] for r in log] == [True, False, True]
    assert all({"challenger_score", "champion_score", "delta", "reason"} <= set(r) for r in log)

    assert registry.rollback(reg) == "v0001"
    assert registry.champion(reg) == "v0001"
    assert registry.history(reg)[-1]["action"] == "rollback"


def test_crash_between_record_and_switch_keeps_the_old_champion_then_finishes(root, monkeypatch):
    reg = root.registry
    challenger(root, epochs=3)
    promote.run(PARAMS, root)
    champ_bytes = (reg / registry.CHAMPION).read_bytes()
    old_scores = LightFMRecommender.load(registry.champion_dir(reg)).scores(["u000"])

    challenger(root, epochs=10)

    def crash(*_a, **_k):
        raise OSError("injected crash between the record and set_champion")

    monkeypatch.setattr(registry, "set_champion", crash)
    with pytest.raises(OSError, match="injected"):
        promote.run(PARAMS, root)

    assert (reg / registry.CHAMPION).read_bytes() == champ_bytes
    assert registry.champion(reg) == "v0001"
    served = LightFMRecommender.load(registry.champion_dir(reg))   # old champion still served
    np.testing.assert_array_equal(served.scores(["u000"]), old_scores)
    assert registry.history(reg)[-1]["version"] == "v0002"          # recorded before the switch
    # consistent: every visible version is complete, no temp dirs are visible as versions
    for v in registry.list_versions(reg):
        d = registry.versions_dir(reg) / v
        assert {"model.npz", "model.json", "card.json"} <= {p.name for p in d.iterdir()}
    monkeypatch.undo()
    again = promote.run(PARAMS, root)          # the next run finishes the recorded switch first
    assert registry.champion(reg) == "v0002" and not again["promoted"]
    assert registry.rollback(reg) == "v0001"


def test_crash_after_the_switch_keeps_the_history_true(root, monkeypatch):
    """Seen on main: the record was written after the switch, a crash lost it, and a second
    rollback then restored v0002 instead of the real previous champion v0004."""
    reg = root.registry
    for epochs in (1, 2, 3):
        challenger(root, epochs=epochs, lr=0.02)
        assert promote.run(PARAMS, root)["promoted"]
    assert registry.champion(reg) == "v0003"
    challenger(root, epochs=10)
    switch = registry.set_champion

    def switch_then_crash(*a, **k):
        switch(*a, **k)
        raise OSError("injected crash after the switch")

    monkeypatch.setattr(registry, "set_champion", switch_then_crash)
    with pytest.raises(OSError, match="injected"):
        promote.run(PARAMS, root)
    monkeypatch.undo()
    assert registry.champion(reg) == "v0004"
    assert registry.rollback(reg) == "v0003"
    assert registry.rollback(reg) == "v0004"      # the champion before v0003 was v0004


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
    assert all("precision@10=" in ln and "data=" in ln and " lightfm " in ln for ln in out)
    assert all("fit=3000 held=1200 served=4200" in ln for ln in out), out   # both lineages
    assert main(["--root", str(root.root), "rollback"]) == 0
    assert "champion is now v0001" in capsys.readouterr().out
    assert main(["--root", str(root.root), "rollback", "v0009"]) == 1
    err = capsys.readouterr().err
    assert "v0009" in err and len(err.strip().splitlines()) == 1
    assert registry.champion(root.registry) == "v0001"


def test_an_unchanged_rerun_is_never_promoted_a_clearly_better_model_is(root):
    reg = root.registry
    challenger(root, epochs=3)
    assert promote.run(PARAMS, root)["version"] == "v0001"
    challenger(root, epochs=3)                        # the same run again
    same = promote.run(PARAMS, root)
    assert not same["promoted"] and "unchanged rerun of v0001" in same["reason"]
    challenger(root, epochs=3, seed=43)               # same configuration, other training noise
    noise = promote.run(PARAMS, root)
    assert noise["delta"] >= PARAMS.gate.min_delta     # the old gate promoted this
    assert not noise["promoted"] and noise["interval"][0] <= 0 <= noise["interval"][1]
    challenger(root, epochs=10)                       # clearly better
    better = promote.run(PARAMS, root)
    assert better["promoted"] and better["interval"][0] > 0.02
    assert registry.list_versions(reg) == ["v0001", "v0002"]


def test_popularity_is_the_floor_when_no_model_beats_it(root):
    reg = root.registry
    challenger(root, epochs=1, lr=1e-4)               # barely trained: worse than popularity
    ev = details(root)
    assert ev["candidate"]["precision@10"] < ev["popularity"]["precision@10"]
    rec = promote.run(PARAMS, root)
    assert rec["promoted"] and rec["promoted_model"] == "popularity" and rec["version"] == "v0001"
    assert rec["reason"].startswith("popularity is the floor") and "\n" not in rec["reason"]
    assert registry.champion(reg) == "v0001"
    card = registry.card(reg, "v0001")
    assert card["model"] == {"family": "popularity", "format": Popularity.FORMAT,
                             "promoted_as": "popularity"}
    served = load_model(registry.champion_dir(reg))
    assert isinstance(served, Popularity)
    assert len(served.recommend(["u000", "someone-new"], 5)) == 10
    challenger(root, epochs=10)                       # a real model later replaces the floor
    assert promote.run(PARAMS, root)["version"] == "v0002"


def test_a_champion_trained_on_another_split_is_never_scored_on_its_training_pairs(root):
    """The champion saw this holdout (fitted on train + holdout, as under another split): the
    gate refits its configuration on the current train part and scores that instead."""
    reg = root.registry
    k3 = PARAMS.model_copy(update={"evaluate": PARAMS.evaluate.model_copy(update={"k": 3})})
    train, hold = pd.read_parquet(root.train_pairs), pd.read_parquet(root.holdout_pairs)
    challenger(root, epochs=20, fitted_on=pd.concat([train, hold]), params=k3)
    assert details(root)["candidate"]["precision@3"] > 0.8          # it knows the answers
    assert promote.run(k3, root)["promoted"] and registry.champion(reg) == "v0001"

    challenger(root, epochs=20, params=k3)                          # honest, same configuration
    ev = details(root)
    scoring = ev["champion_scoring"]
    assert scoring["scored"] == REFIT and scoring["overlap_pairs"] == len(hold)
    assert scoring["judged_overlap_pairs"] == len(hold)   # its pre-refit artifact saw it too
    refit = LightFMRecommender(PARAMS.model.model_copy(update={"epochs": 20})).fit(train)
    honest = score_users(refit, hold, train, {}, 3, train[C.item].nunique()).metrics
    assert ev["champion"]["precision@3"] == pytest.approx(honest["precision@3"])
    assert ev["champion"]["precision@3"] < 0.7
    assert promote.run(k3, root)["champion_scoring"]["scored"] == REFIT


def test_the_gate_scores_the_pre_refit_artifact_never_the_refit_that_saw_the_holdout(root):
    """The served model is refit on train + holdout; the next gate on the same holdout scores
    the judged (pre-refit) artifact, whose training pairs are not held out."""
    reg = root.registry
    challenger(root, epochs=3)
    first = promote.run(PARAMS, root)
    vdir = registry.champion_dir(reg)
    train, hold = pd.read_parquet(root.train_pairs), pd.read_parquet(root.holdout_pairs)
    assert overlap(load_fingerprint(vdir), hold) == len(hold)             # the refit saw it
    assert overlap(load_fingerprint(vdir / registry.JUDGED), hold) == 0   # the judged did not
    assert first["served"]["pairs"] == len(train) + len(hold) == registry.card(reg, "v0001")[
        "served"]["pairs"]

    challenger(root, epochs=10)
    ev = details(root)
    scoring = ev["champion_scoring"]
    assert scoring["scored"] == PRE_REFIT, scoring
    assert scoring["overlap_pairs"] == len(hold) and scoring["judged_overlap_pairs"] == 0
    assert ev["champion"]["precision@10"] == pytest.approx(first["challenger_score"])
    served = score_users(load_model(vdir), hold, train, {}, 10, train[C.item].nunique()).metrics
    assert served["precision@10"] > ev["champion"]["precision@10"] + 0.05   # what it would inflate to
    assert promote.run(PARAMS, root)["champion_scoring"]["scored"] == PRE_REFIT   # in the record


def test_a_champion_whose_refit_never_saw_the_holdout_is_scored_as_registered(root):
    """New data since the refit: a holdout of pairs the served artifact never saw is scored
    on the served artifact itself."""
    challenger(root, epochs=3)
    promote.run(PARAMS, root)
    train, hold = pd.read_parquet(root.train_pairs), pd.read_parquet(root.holdout_pairs)
    seen = set(zip(pd.concat([train, hold])[C.user], pd.concat([train, hold])[C.item], strict=True))
    fresh = [(u, f"i{j:03d}") for u in sorted(set(train[C.user])) for j in range(int(u[1:]) % 6, 120, 6)
             if (u, f"i{j:03d}") not in seen][::3]
    pd.DataFrame(fresh, columns=[C.user, C.item]).assign(**{C.confidence: 1.0}).to_parquet(
        root.holdout_pairs, index=False)
    challenger(root, epochs=10)
    scoring = details(root)["champion_scoring"]
    assert scoring["scored"] == "as registered" and scoring["overlap_pairs"] == 0


def test_a_refit_that_crashes_or_is_refused_leaves_the_champion_unchanged(root, monkeypatch, capsys):
    from pipeline.cli import main

    reg = root.registry
    challenger(root, epochs=3)
    assert promote.run(PARAMS, root)["version"] == "v0001"
    (root.models / ".serving.tmp-999999999").mkdir()       # left by a killed refit
    before = snapshot(reg)
    challenger(root, epochs=10)                             # clearly better: the gate passes

    def crash(*_a, **_k):
        raise MemoryError("injected crash in the refit")

    with monkeypatch.context() as m:
        m.setattr(LightFMRecommender, "_fit", crash)
        with pytest.raises(RefitFailed, match="injected crash"):
            promote.run(PARAMS, root)
        m.setenv("RECFLOW_ROOT", str(root.root))
        root.params.write_text(yaml.safe_dump(RAW))
        capsys.readouterr()
        assert main(["--root", str(root.root), "promote"]) == 1
        err = capsys.readouterr().err.strip()
        assert "refit for serving failed" in err and len(err.splitlines()) == 1
    assert snapshot(reg) == before and registry.champion(reg) == "v0001"
    last = registry.history(reg)[-1]
    assert last["verdict"] == "refit failed" and not last["promoted"] and last["version"] is None
    assert "the gate passed" in last["reason"]
    assert json.loads(root.promotion_report.read_text())["verdict"] == "refit failed"
    assert not [p.name for p in root.models.iterdir() if p.name.startswith(".")]   # no temp left

    def diverged(self, users, *_a, **_k):
        return np.full((len(users), len(self.item_ids)), np.nan, dtype=np.float32)

    with monkeypatch.context() as m:
        m.setattr(LightFMRecommender, "scores", diverged)
        with pytest.raises(RefitFailed, match="refit refused: its scores are not finite"):
            promote.run(PARAMS, root)
    assert snapshot(reg) == before and registry.champion(reg) == "v0001"
    assert promote.run(PARAMS, root)["version"] == "v0002"  # the same verdict, refit healthy
    assert registry.rollback(reg) == "v0001"                # the history's switches stay true


def test_promote_rescored_when_evaluation_saw_another_champion(root):
    """DVC may re-run promote alone (a gate.* change): the gate must compare against the
    champion as it is now, not the one (or none) that evaluation.json scored."""
    challenger(root, epochs=10)
    assert promote.run(PARAMS, root)["version"] == "v0001"
    stale = details(root)
    assert stale["champion_version"] is None  # scored before v0001 existed
    before = snapshot(root.registry)
    again = promote.run(PARAMS, root)  # same candidate, same stale evaluation
    assert again["promoted"] is False and again["compared_with"] == "champion"
    assert again["champion_version"] == "v0001" and abs(again["delta"]) < 1e-9
    assert snapshot(root.registry) == before
