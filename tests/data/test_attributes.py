"""Attribute tables: config mapping, GX validation with quarantine, presets, taste."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.columns import Columns as C
from pipeline.config import AttributeParams, AttributeTableParams, Paths, SyntheticParams, load_params
from pipeline.data import attributes
from pipeline.data.synthetic import attributes as synthetic_attributes
from pipeline.data.synthetic import generate
from pipeline.errors import ConfigError
from tests.conftest import ROOT


def _params(items: AttributeTableParams | None = None, source: str = "landing", path: str = "x",
            max_len: int = 200):
    p = load_params(ROOT / "params.yaml")
    return p.model_copy(update={
        "ingest": p.ingest.model_copy(update={"source": source, "path": path}),
        "attributes": AttributeParams(items=items or AttributeTableParams(),
                                      max_value_length=max_len)})


def _items_csv(tmp_path: Path, text: str) -> Path:
    (tmp_path / "items.csv").write_text(text)
    return tmp_path / "items.csv"


SPEC = AttributeTableParams(path="items.csv", id="sku", categorical={"brand": "make"},
                            numeric={"price": "eur"}, multi={"genres": "tags"},
                            ranges={"price": (0.0, 1000.0)})


def test_mapping_types_and_multi_values(tmp_path):
    _items_csv(tmp_path, "sku,make,eur,tags\na,acme,9.5,Comedy|Action\nb,zeta,,Drama\n")
    t = attributes.load(_params(SPEC), Paths(tmp_path))["items"]
    ok, bad, rep = attributes.validate(t)
    assert len(bad) == 0 and rep["accepted"] == 2
    assert ok[C.item].tolist() == ["a", "b"] and ok["brand"].tolist() == ["acme", "zeta"]
    assert ok["price"].iloc[0] == 9.5 and np.isnan(ok["price"].iloc[1])  # empty = missing
    assert json.loads(ok["genres"].iloc[0]) == ["Action", "Comedy"]
    assert rep["features"] == {"brand": "categorical", "price": "numeric", "genres": "multi"}


def test_bad_rows_are_quarantined_with_a_reason_and_nothing_is_lost(tmp_path):
    _items_csv(tmp_path, "sku,make,eur,tags\n"
                         "a,acme,1,x\na,acme,2,y\n"          # duplicate id: both rows
                         ",acme,1,x\n"                        # no id
                         f"c,{'w' * 30},1,x\n"                # too long
                         "d,acme,cheap,x\n"                   # not a number
                         "e,acme,5000,x\n"                    # out of range
                         "f,acme,3,x\n")
    t = attributes.load(_params(SPEC, max_len=20), Paths(tmp_path))["items"]
    ok, bad, rep = attributes.validate(t)
    assert ok[C.item].tolist() == ["f"]
    assert len(ok) + len(bad) == 7 == rep["rows"]
    why = dict(zip(bad[C.item].fillna("<none>"), bad[C.reason], strict=False))
    assert why["a"] == "item_id: duplicate id" and why["<none>"] == "item_id: no id"
    assert "longer than 20" in why["c"] and why["d"] == "price: not a number"
    assert "ranges.price" in why["e"]


@pytest.mark.parametrize("spec, key", [
    (SPEC.model_copy(update={"categorical": {"brand": "nope"}}), "attributes.items.categorical.brand"),
    (SPEC.model_copy(update={"id": "missing"}), "attributes.items.id"),
    (SPEC.model_copy(update={"categorical": {"n_events": "make"}}), "attributes.items.categorical.n_events"),
    (SPEC.model_copy(update={"ranges": {"brand": (0, 1)}}), "attributes.items.ranges.brand"),
])
def test_mapping_mistakes_exit_2_naming_the_key(tmp_path, spec, key):
    _items_csv(tmp_path, "sku,make,eur,tags\na,acme,1,x\n")
    with pytest.raises(ConfigError) as e:
        attributes.load(_params(spec), Paths(tmp_path))
    assert f"'{key}'" in str(e.value) and e.value.exit_code == 2


def test_movielens_movies_csv_gives_every_genre_and_the_year(tmp_path):
    (tmp_path / "ml").mkdir()
    (tmp_path / "ml" / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4,0\n")
    (tmp_path / "ml" / "movies.csv").write_text(
        'movieId,title,genres\n1,Toy Story (1995),Adventure|Animation|Children\n'
        '2,"Heat, The",Action\n')
    t = attributes.load(_params(source="movielens", path="ml"), Paths(tmp_path))["items"]
    ok, bad, _ = attributes.validate(t)
    assert len(bad) == 0
    assert json.loads(ok["genres"].iloc[0]) == ["Adventure", "Animation", "Children"]
    assert ok["year"].iloc[0] == 1995 and np.isnan(ok["year"].iloc[1])


def test_feature_frame_is_static_and_flags_presence():
    f = attributes.feature_frame(pd.DataFrame({C.item: ["a"], "brand": ["x"]}), "items")
    assert f[C.ts].iloc[0] == pd.Timestamp(0, tz="UTC") and f["has_item_attributes"].tolist() == [1]
    empty = attributes.feature_frame(None, "users")
    assert list(empty.columns) == [C.user, C.ts, "has_user_attributes"] and len(empty) == 0


def test_synthetic_attributes_carry_taste():
    p = SyntheticParams(n_events=40000, n_users=800, n_items=1000, n_categories=10)
    events, items = generate(p)
    item_attr, user_attr = synthetic_attributes(p)
    assert item_attr[C.item].is_unique and user_attr[C.user].is_unique
    ev = events.merge(items, on=C.item).merge(user_attr, on=C.user)
    mix = pd.crosstab(ev["country"], ev[C.category], normalize="index")
    shuffled = ev.assign(country=np.random.default_rng(0).permutation(ev["country"].to_numpy()))
    base = pd.crosstab(shuffled["country"], shuffled[C.category], normalize="index")
    spread = lambda m: float((m - m.mean()).abs().sum(axis=1).mean())  # noqa: E731
    assert spread(mix) > 3 * spread(base)  # a country's category mix differs from the others'
    pop = events[C.item].value_counts()
    tier = item_attr.set_index(C.item)["brand"].str[1:].astype(int) // 4
    by_tier = pop.reindex(tier.index).fillna(0).groupby(tier).mean()
    assert by_tier.iloc[0] > 5 * by_tier.iloc[-1]  # the brand says how much of a hit it is
