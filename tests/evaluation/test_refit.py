"""Refit for serving, on a time split: a user and an item first seen in the holdout period are
warm for the served model (every family, through the model contract), with the serving
features; the served champion is that refit, its card keeps both lineages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.columns import Columns as C
from pipeline.config import Params, Paths
from pipeline.errors import RefitFailed
from pipeline.evaluation.champion import Data, config_tokens
from pipeline.evaluation.fingerprint import inputs_sha256, write_artifact
from pipeline.evaluation.refit import check, serving_features, serving_refit
from pipeline.evaluation.splits import all_pairs, carve_validation, make_split
from pipeline.features import snapshots
from pipeline.io import write_json
from pipeline.models.artifact import load_model
from pipeline.models.base import FAMILIES
from pipeline.models.blend import Blend
from pipeline.models.hybrid import LightFMRecommender
from pipeline.models.popularity import Popularity
from pipeline.models.tokens import user_tokens
from pipeline.registry import lineage
from pipeline.registry import versions as registry
from pipeline.stages import evaluate, promote

PARAMS = Params.model_validate({
    "signals": {"weights": {"view": 1.0}},
    "split": {"strategy": "time", "test_days": 5},
    "model": {"no_components": 8, "num_threads": 1, "epochs": 5, "validation_days": 3,
              "user_features": ["activity", "recency"], "item_features": ["popularity"]},
    "features": {"windows_days": [7]},
    "baselines": {"als": {"factors": [8], "regularization": [0.01], "iterations": 3}},
})
LATE_USER, LATE_ITEM = "late-user", "late-item"   # their only events are in the holdout period


def events() -> pd.DataFrame:
    """Group-structured views over 30 days; the late user and item only in the last 3."""
    rng = np.random.default_rng(0)
    t0 = pd.Timestamp("2026-03-01", tz="UTC")
    rows = [(f"u{u:03d}", f"i{it:03d}", t0 + pd.Timedelta(minutes=int(rng.integers(0, 30 * 1440))))
            for u in range(120) for it in rng.choice(np.arange(u % 4, 80, 4), 12, replace=False)]
    late = t0 + pd.Timedelta(days=27)
    rows += [(LATE_USER, f"i{it:03d}", late + pd.Timedelta(hours=h)) for h, it in enumerate((0, 4, 8))]
    rows += [(f"u{u:03d}", LATE_ITEM, late + pd.Timedelta(hours=u)) for u in range(0, 40, 4)]
    df = pd.DataFrame(rows, columns=[C.user, C.item, C.ts])
    return df.assign(**{C.event: "view", C.value: np.nan})[list(C.EVENT_TABLE)]


def cutoff_features(paths: Paths, cutoff: pd.Timestamp, key: str) -> pd.DataFrame:
    """The features as of the cutoff (what train reads through Feast's point-in-time join)."""
    f = pd.read_parquet(paths.user_features if key == C.user else paths.item_features)
    return f[pd.to_datetime(f[C.ts], utc=True) == cutoff].reset_index(drop=True)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Paths:
    """Validated events, their feature snapshots (cutoff and end) and the training set."""
    paths = Paths(tmp_path_factory.mktemp("refit"))
    paths.validated.mkdir(parents=True)
    events().to_parquet(paths.validated_events, index=False)
    snapshots.write(paths.validated, paths.feature_data, PARAMS)
    split = make_split(paths.validated_events, PARAMS)
    fit, validation = carve_validation(split.train, PARAMS)
    paths.trainset.mkdir(parents=True)
    cut = pd.Timestamp(split.cutoff)
    for frame, f in ((split.train, paths.train_pairs), (split.holdout, paths.holdout_pairs),
                     (fit, paths.fit_pairs), (validation, paths.validation_pairs),
                     (cutoff_features(paths, cut, C.user), paths.train_user_features),
                     (cutoff_features(paths, cut, C.item), paths.train_item_features)):
        frame.to_parquet(f, index=False)
    write_json(paths.trainset_meta, {"cutoff": cut.isoformat(), "train_pairs": len(split.train),
                                     "holdout_pairs": len(split.holdout)})
    return paths


def small_config(family: type) -> dict:
    """The family's default configuration, small where it has a size."""
    small = {"no_components": 8, "num_threads": 1, "epochs": 6, "factors": 8, "iterations": 3}
    config = {**family.from_config({}).config()}
    config.update({k: v for k, v in small.items() if k in config})
    if "user_features" in config:
        config.update(user_features=["activity", "recency"], item_features=["popularity"])
    return config


def judged(paths: Paths, family: type, dest: Path, best_epoch: int = 3) -> Path:
    """A model of ``family`` (its default configuration, small where it has a size) fitted on
    the train part with the cutoff features, saved as the train stage saves a candidate."""
    if family is Blend:   # LightFM (early stopping's best epoch in its own config) + ALS
        parts = {f: {"format": c.FORMAT, "config": small_config(c)} for f, c in
                 (("lightfm", LightFMRecommender), ("als", FAMILIES["recflow-als-v1"]))}
        parts["lightfm"]["config"]["epochs"] = best_epoch
        config = Blend(parts, {"lightfm": 0.5, "als": 0.5}).config()
    else:
        config = small_config(family)
    data = Data.load(paths)
    utok, itok = config_tokens(config, data.user_features, data.item_features)
    model = family.from_config(config).fit(data.train, utok, itok)
    write_artifact(model, dest, data.train, inputs_sha256(model.config(), data.train, utok, itok),
                   extra={"best_epoch": best_epoch})
    return dest


@pytest.mark.parametrize("fmt", sorted(FAMILIES))
def test_a_user_and_an_item_of_the_holdout_period_are_warm_for_every_family(built, tmp_path, fmt):
    family = FAMILIES[fmt]
    train = pd.read_parquet(built.train_pairs)
    assert LATE_USER not in set(train[C.user]) and LATE_ITEM not in set(train[C.item])
    src = judged(built, family, tmp_path / "judged")
    before = load_model(src)
    with serving_refit(src, PARAMS, built) as r:
        served = load_model(r.directory)
        info = r.info
    known_user = train[C.user].iloc[0]
    # as warm as a training user was for the judged model (popularity knows no user at all)
    assert served.known(LATE_USER) == before.known(known_user)
    assert not before.known(LATE_USER)
    assert LATE_ITEM in set(served.item_ids) and LATE_ITEM not in set(before.item_ids)
    assert type(served) is family and info["pairs"] == len(all_pairs(built.validated_events, PARAMS))
    if "epochs" in served.config():
        assert served.config()["epochs"] == 3         # early stopping's best epoch count
    if family is Blend:                                # each component refit with its setting
        assert served.config() == before.config() and set(served.parts) == {"lightfm", "als"}
        assert served.parts["lightfm"].config()["epochs"] == 3
        assert all(m.known(LATE_USER) for m in served.parts.values())
    assert not r.directory.exists()                    # the temp folder is gone after use


def test_the_served_refit_reads_the_serving_features(built, tmp_path):
    """Tokens as of the end of the data: the late user has them (cutoff features: no row)."""
    src = judged(built, LightFMRecommender, tmp_path / "judged")
    end = serving_features(built.user_features, C.user)
    assert LATE_USER in set(end[C.user])
    assert LATE_USER not in set(pd.read_parquet(built.train_user_features)[C.user])
    with serving_refit(src, PARAMS, built) as r:
        served = load_model(r.directory)
        assert r.info["features_as_of"] == pd.Timestamp(end[C.ts].max()).isoformat()
    late_tokens = user_tokens(end, PARAMS.model.user_features)[LATE_USER]
    assert late_tokens and set(late_tokens) <= set(served.user_vocab)


def test_the_served_champion_is_the_refit_and_its_card_keeps_both_lineages(built, tmp_path):
    import shutil

    paths = Paths(tmp_path / "proj")
    shutil.copytree(built.root, paths.root)
    judged(paths, LightFMRecommender, paths.candidate, best_epoch=6)
    evaluate.run(PARAMS, paths)
    rec = promote.run(PARAMS, paths)
    assert rec["promoted"], rec["reason"]
    vdir = registry.champion_dir(paths.registry)
    served, pre = load_model(vdir), load_model(vdir / registry.JUDGED)
    assert served.known(LATE_USER) and not pre.known(LATE_USER)
    card = registry.card(paths.registry, rec["version"])
    assert card["trained_on"] == {**card["trained_on"], "artifact": "judged/",
                                  "pairs": len(pd.read_parquet(paths.train_pairs))}
    assert card["judged_on"]["split"]["strategy"] == "time"
    assert card["served"]["pairs"] > card["trained_on"]["pairs"]
    assert card["inputs_sha256"] == pre.meta["inputs_sha256"] == card["served"]["judged_inputs_sha256"]
    assert card["served"]["inputs_sha256"] == served.meta["inputs_sha256"] != card["inputs_sha256"]
    shown = lineage.public(card)["lineage"]
    assert shown["served"]["pairs"] == card["served"]["pairs"] and shown["data"] == card["data"]


def test_a_refit_that_lost_items_of_the_judged_model_is_refused():
    def pop(items: list[str]) -> Popularity:
        return Popularity().fit(pd.DataFrame({C.user: "a", C.item: items}))

    judged = pop([f"i{j:03d}" for j in range(200)])
    check(pop([f"i{j:03d}" for j in range(1, 200)] + ["new"]), judged, ["a"], {})  # 1 of 200 gone
    with pytest.raises(RefitFailed, match="only 197 of the judged model's 200 items"):
        check(pop([f"i{j:03d}" for j in range(3, 200)]), judged, ["a"], {})
