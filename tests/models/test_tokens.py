"""Tokens: the open feature set, numeric buckets from training data, session tokens."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.columns import Columns as C
from pipeline.config import ModelParams
from pipeline.errors import ConfigError
from pipeline.models.hybrid import LightFMRecommender, _features, _IdentityDropout
from pipeline.models.tokens import (
    check_features,
    fit_edges,
    item_tokens,
    session_tokens,
    short_history_tokens,
    user_tokens,
)


def test_any_attribute_or_feature_column_becomes_tokens():
    rows = pd.DataFrame({C.item: ["a", "b", "c"], "brand": ["x", None, "y"],
                         "genres": ['["Action","Drama"]', None, "[]"],
                         "price": [1.0, 50.0, np.nan], "category": ["k", "k", None]})
    edges = fit_edges(rows, ("brand", "genres", "price", "category"), C.item, 4)
    assert set(edges) == {"price"}  # numbers only; built-ins keep their own buckets
    got = item_tokens(rows, ("category", "brand", "genres", "price"), edges)
    assert got["a"] == ["category=k", "brand=x", "genres=Action", "genres=Drama", "price=0"]
    assert got["b"] == ["category=k", "price=3"]
    assert got["c"] == ["brand=y"]  # missing values give no token, never an error


def test_bucket_edges_come_from_training_rows_and_are_reused():
    train = pd.DataFrame({C.user: list("abcd"), "n_purchase_30d": [0, 1, 2, 100]})
    edges = fit_edges(train, ("n_purchase_30d",), C.user, 2)
    assert edges == {"n_purchase_30d": [1.5]}
    served = {C.user: ["new"], "n_purchase_30d": [1000]}  # the online lookup's column dict
    assert user_tokens(served, ("n_purchase_30d",), edges) == {"new": ["n_purchase_30d=1"]}


def test_unknown_feature_name_exits_2_naming_the_key():
    with pytest.raises(ConfigError) as e:
        check_features(pd.DataFrame({C.user: ["a"]}), ("top_category", "shoe_size"), C.user)
    assert "'model.user_features'" in str(e.value) and "shoe_size" in str(e.value)
    assert e.value.exit_code == 2


def test_unknown_user_gets_no_tokens_not_an_error():
    rows = {C.user: ["nobody"], "country": [None], "top_category": [None]}
    assert user_tokens(rows, ("country", "top_category")) == {"nobody": []}


def test_session_tokens_weigh_recent_items_more_and_skip_behaviour():
    items = {"i1": ["category=a", "popularity=3"], "i2": ["category=b"]}
    got = session_tokens({"u": ["i1", "i2", "i9"]}, items, 2)["u"]
    assert got.count("recent_category=a") == 2 and got.count("recent_category=b") == 1
    assert "recent_popularity=3" not in got and "recent_item=i9" not in got
    assert session_tokens({"u": ["i1"]}, items, 0) == {}


def _data(seed: int = 0):
    """Users who like one of two categories; a cold item of category a has no interactions."""
    rng = np.random.default_rng(seed)
    cat = {f"i{j}": "a" if j < 20 else "b" for j in range(40)}
    rows = []
    for u in range(60):
        own = [i for i, c in cat.items() if c == ("a" if u % 2 else "b")]
        rows += [(f"u{u}", i) for i in rng.choice(own, 8, replace=False)]
    train = pd.DataFrame(rows, columns=[C.user, C.item]).drop_duplicates()
    itok = {i: [f"category={c}"] for i, c in cat.items()} | {"cold": ["category=a"]}
    hist = train.groupby(C.user)[C.item].agg(list).to_dict()
    return train, itok, hist, cat


def test_cold_item_is_scored_from_its_tokens_and_session_tokens_personalise():
    train, itok, hist, cat = _data()
    m = LightFMRecommender(ModelParams(no_components=8, epochs=15, num_threads=1,
                                       session_items=5)).fit(train, {}, itok, history=hist)
    assert "cold" in list(m.item_ids)
    j = m.item_index["cold"]
    assert np.isfinite(m.item_repr[j]).all() and np.abs(m.item_repr[j]).sum() > 0
    # a new user who just touched category-a items: their list leans to category a, and the
    # cold category-a item ranks above every category-b item
    s = m.scores(["new"], {}, {"new": ["i1", "i2", "i3"]})[0]
    top = [m.item_ids[x] for x in np.argsort(-s)[:10]]
    assert sum(cat.get(i, "a") == "a" for i in top) >= 8
    b_items = [m.item_index[i] for i, c in cat.items() if c == "b"]
    assert s[j] > s[b_items].max()
    assert not np.allclose(s, m.scores(["new"], {}, None)[0])  # history changes the list


def test_artifact_keeps_session_map_and_edges(tmp_path):
    train, itok, hist, _ = _data(1)
    m = LightFMRecommender(ModelParams(no_components=4, epochs=2, num_threads=1)).fit(
        train, {}, itok, history=hist)
    m.token_edges = {"user": {"age": [30.0]}, "item": {}}
    m.save(tmp_path / "m")
    back = LightFMRecommender.load(tmp_path / "m")
    assert back.token_edges == m.token_edges and back.item_token_map == m.item_token_map
    h = {"x": ["i1", "i30"]}
    np.testing.assert_allclose(back.scores(["x"], {}, h), m.scores(["x"], {}, h), rtol=1e-6)


def test_short_history_tokens_are_those_of_a_user_who_did_only_these_items():
    items = {"i1": ["category=a", "brand=x"], "i2": ["category=b"], "i3": ["category=b"]}
    toks = ["country=fr", "activity=6", "recency=2", "top_category=c"]
    got = short_history_tokens(toks, ["i1", "i2", "i3"], items,
                               ("activity", "recency", "top_category"), 3)
    assert "country=fr" in got                         # attributes stay
    assert "activity=2" in got and "activity=6" not in got   # log2(1 + 3 events)
    assert "recency=0" in got and "top_category=b" in got and "top_category=c" not in got
    assert short_history_tokens(toks, [], items, ("activity", "recency"), 3) == ["country=fr"]
    # a behaviour token that is not configured is not invented
    assert not any(t.startswith("recency") for t in
                   short_history_tokens(toks, ["i1"], items, ("activity",), 1))


def test_short_history_copies_train_but_leave_the_artifact_users_alone():
    train, itok, hist, cat = _data()
    base = dict(no_components=8, epochs=10, num_threads=1, session_items=5)
    plain = LightFMRecommender(ModelParams(**base)).fit(train, {}, itok, history=hist)
    m = LightFMRecommender(ModelParams(**base, short_history_share=1.0)).fit(
        train, {}, itok, history=hist)
    assert list(m.user_ids) == list(plain.user_ids)       # the copies are training rows only
    assert m.user_emb.shape[0] == len(m.user_ids) + len(m.user_vocab)
    # trained on copies cut to 1..3 items, a user with one revealed item gets its category
    s = m.scores(["new"], {}, {"new": ["i1"]})[0]
    top = [m.item_ids[x] for x in np.argsort(-s)[:10]]
    assert sum(cat.get(i, "a") == "a" for i in top) >= 8
    assert not np.allclose(s, plain.scores(["new"], {}, {"new": ["i1"]})[0])


def test_identity_dropout_trains_items_as_cold_items_are_scored():
    train, itok, hist, cat = _data()
    warm = sorted(set(train[C.item]))
    iidx = {i: j for j, i in enumerate(warm)}
    tok = {"category=a": 0, "category=b": 1}
    full = _features(warm, iidx, itok, tok, True, 1.0)
    drop = _IdentityDropout(full, len(warm), itok, warm, 0.5, 0)
    f = drop.epoch()
    no_id = np.asarray(f[:, : len(warm)].sum(axis=1)).ravel() == 0
    assert no_id.sum() == len(warm) // 2             # the share, every epoch a new draw
    cold_row = _features(["cold"], iidx, itok, tok, False) * 0.5   # how "cold" is scored
    a = next(j for j, i in enumerate(warm) if no_id[j] and cat[i] == "a")
    np.testing.assert_allclose(f[a].toarray(), cold_row.toarray())
    assert not np.array_equal(no_id, np.asarray(drop.epoch()[:, : len(warm)].sum(axis=1)
                                                 ).ravel() == 0)
    assert _IdentityDropout(full, len(warm), itok, warm, 0.0, 0).epoch() is full
    # trained so, the cold category-a item still ranks above every category-b item for a
    # user who just touched category a
    m = LightFMRecommender(ModelParams(no_components=8, epochs=15, num_threads=1,
                                       session_items=5, item_identity_dropout=0.3)).fit(
        train, {}, itok, history=hist)
    s = m.scores(["new"], {}, {"new": ["i1", "i2", "i3"]})[0]
    assert s[m.item_index["cold"]] > s[[m.item_index[i] for i, c in cat.items() if c == "b"]].max()


def test_session_token_table_lists_the_session_tokens_the_vocabulary_has():
    """Per item, the vocabulary columns of session_token_names (repeats kept, behaviour
    tokens and tokens the vocabulary lacks left out), items without tokens included."""
    from pipeline.models.tokens import session_token_names, session_token_table

    items = {"a": ["category=x", "popularity=3", "category=x", "brand=b"], "b": ["brand=z"],
             "c": [], "d": ["item=a"]}
    vocab = {t: j for j, t in enumerate(["recent_item=a", "recent_category=x", "recent_brand=b",
                                         "recent_popularity=3", "recent_item=e", "top_category=x"])}
    ids = ["a", "b", "c", "d", "e"]
    ptr, cols = session_token_table(ids, items, vocab)
    for r, it in enumerate(ids):
        want = sorted(vocab[t] for t in session_token_names(it, items.get(it, ())) if t in vocab)
        assert sorted(cols[ptr[r]:ptr[r + 1]].tolist()) == want, it
    assert ptr[-1] == len(cols)
