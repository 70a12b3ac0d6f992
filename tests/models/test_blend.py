"""The blend family: per-user normalisation, the weighted sum, the union catalogue, and an
artifact of arrays + JSON with its components inside (the contract suite in test_contract.py
runs on a blend too)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.columns import Columns as C
from pipeline.config import ModelParams
from pipeline.models.artifact import load_model
from pipeline.models.base import Unsupported
from pipeline.models.blend import COMPONENTS_DIR, Blend, normalise
from pipeline.models.ease import EASE
from pipeline.models.hybrid import LightFMRecommender
from pipeline.models.popularity import Popularity
from tests.models.test_contract import checkerboard

LFM = ModelParams(no_components=4, epochs=8, num_threads=1, user_features=(),
                  item_features=("category",), session_items=0)


def test_normalise_makes_each_row_z_scores_and_keeps_its_order():
    s = np.array([[1.0, 2.0, 3.0], [10.0, 0.0, 5.0], [4.0, 4.0, 4.0]], dtype=np.float32)
    z = normalise(s)
    np.testing.assert_allclose(z[:2].mean(axis=1), 0.0, atol=1e-6)
    np.testing.assert_allclose(z[:2].std(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(z[0], [-1.2247449, 0.0, 1.2247449], atol=1e-6)
    assert (np.argsort(z[:2], axis=1) == np.argsort(s[:2], axis=1)).all()
    assert (z[2] == 0).all() and z.dtype == np.float32
    assert s[0, 0] == 1.0                                   # the input is not modified
    assert normalise(np.zeros((0, 3))).shape == (0, 3)


@pytest.fixture(scope="module")
def parts():
    train, _ = checkerboard()
    itok = {i: [f"category={int(i[1:]) % 2}"] for i in train[C.item].unique()}
    itok["i99"] = ["category=1"]                            # a catalogue item nobody touched
    lfm = LightFMRecommender(LFM).fit(train, {}, itok)
    return train, itok, {"lightfm": lfm, "ease": EASE(1.0).fit(train)}


def test_scores_are_the_weighted_sum_of_normalised_scores_over_the_union_catalogue(parts):
    train, _, models = parts
    b = Blend.of(models, {"lightfm": 0.3, "ease": 0.7})
    assert "i99" in set(b.item_ids) and "i99" not in set(models["ease"].item_ids)
    users = ["u00", "u03", "nobody"]
    got = b.scores(users)
    want = np.zeros_like(got)
    for name, w in (("lightfm", 0.3), ("ease", 0.7)):
        m = models[name]
        z = normalise(m.scores(users))
        cols = pd.Index(b.item_ids).get_indexer(m.item_ids)
        want[:, cols] += w * z                              # an unknown item: 0, the user's mean
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert b.known("u00") and not b.known("nobody")


def test_a_component_of_weight_zero_is_dropped():
    train, _ = checkerboard()
    b = Blend.of({"ease": EASE(1.0).fit(train), "popularity": Popularity().fit(train)},
                 {"ease": 1.0, "popularity": 0.0})
    assert list(b.parts) == ["ease"] and b.config()["weights"] == {"ease": 1.0}
    with pytest.raises(ValueError, match="positive weight"):
        Blend.of({"ease": EASE(1.0).fit(train)}, {"ease": 0.0})


def test_save_load_round_trip_keeps_scores_components_and_weights(parts, tmp_path):
    train, itok, models = parts
    b = Blend.of(models, {"lightfm": 0.6, "ease": 0.4}, configs={
        "lightfm": {**models["lightfm"].config(), "epochs": 5}})
    b.token_edges = {"user": {}, "item": {}}
    b.save(tmp_path / "b")
    meta = json.loads((tmp_path / "b" / "model.json").read_text())
    assert meta["format"] == Blend.FORMAT and meta["config"]["weights"] == {"lightfm": 0.6, "ease": 0.4}
    assert meta["config"]["components"]["lightfm"]["config"]["epochs"] == 5
    assert meta["config"]["item_features"] == ["category"]  # lifted: callers build its tokens
    for name in ("lightfm", "ease"):
        assert (tmp_path / "b" / COMPONENTS_DIR / name / "model.npz").is_file()
        with np.load(tmp_path / "b" / COMPONENTS_DIR / name / "model.npz", allow_pickle=False) as a:
            assert all(a[k].dtype != object for k in a.files)
    loaded = load_model(tmp_path / "b")
    assert type(loaded) is Blend and loaded.weights == b.weights
    users = ["u00", "u01", "nobody", "new"]
    history = {"new": ["i00", "i02"], "u01": ["i03"]}
    np.testing.assert_allclose(loaded.scores(users, {}, history), b.scores(users, {}, history),
                               rtol=1e-6, atol=1e-6)
    assert list(loaded.item_ids) == list(b.item_ids)
    # similarity: the highest-weighted component with item vectors, aligned to the blend
    assert loaded.similar_from == "lightfm"
    np.testing.assert_allclose(loaded.item_vectors(), b.item_vectors())
    assert loaded.item_vectors().shape[0] == len(loaded.item_ids)
    v = loaded.token_item_vectors({"new-item": ["category=0"]}, ["new-item"])
    assert v.shape == (1, loaded.item_vectors().shape[1]) and np.abs(v).sum() > 0


def test_a_blend_without_item_vectors_says_unsupported():
    train, _ = checkerboard()
    b = Blend.of({"pop": Popularity().fit(train), "pop2": Popularity().fit(train)},
                 {"pop": 0.5, "pop2": 0.5})
    with pytest.raises(Unsupported):
        b.item_vectors()


def test_from_config_refits_every_component_with_its_setting(parts):
    train, itok, models = parts
    b = Blend.of(models, {"lightfm": 0.5, "ease": 0.5},
                 configs={"lightfm": {**models["lightfm"].config(), "epochs": 3}})
    refit = Blend.from_config(b.config()).fit(train, {}, itok)
    assert refit.config() == b.config()
    assert refit.parts["lightfm"].epochs_trained == 3
    assert refit.parts["ease"].config() == models["ease"].config()
    assert refit.parts["lightfm"] is not models["lightfm"]
    assert list(refit.item_ids) == list(b.item_ids)
