"""Business filters as masks over the item axis, and the item vectors similar items use."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.columns import Columns as C
from pipeline.config import Paths, load_params
from pipeline.models.base import Unsupported
from pipeline.models.popularity import Popularity
from pipeline.serving.catalogue import Catalogue, Filters
from tests.conftest import ROOT

ITEMS = ["a1", "a2", "b1", "b2", "c1"]


@pytest.fixture(scope="module")
def cat(tmp_path_factory) -> Catalogue:
    root = tmp_path_factory.mktemp("cat")
    paths = Paths(root)
    paths.validated.mkdir(parents=True)
    # "new" is catalogued but the model never saw it
    pd.DataFrame({C.item: [*ITEMS, "new"], C.category: ["A", "A", "B", "B", None, "B"]}
                 ).to_parquet(paths.validated_items, index=False)
    train = pd.DataFrame({C.user: ["u"] * 5, C.item: ITEMS})
    return Catalogue(Popularity().fit(train), load_params(ROOT / "params.yaml"), paths)


def _ids(cat: Catalogue, f: Filters) -> list[str]:
    m = cat.mask(f)
    return list(cat.item_ids[m]) if m is not None else list(cat.item_ids)


@pytest.mark.parametrize("f, want", [
    (Filters(), ITEMS),
    (Filters(categories=("A",)), ["a1", "a2"]),
    (Filters(categories=("A", "B")), ["a1", "a2", "b1", "b2"]),
    (Filters(exclude_categories=("A",)), ["b1", "b2", "c1"]),
    (Filters(categories=("nope",)), []),
    (Filters(categories=()), []),                       # an empty include list lets nothing in
    (Filters(exclude=()), ITEMS),                       # an empty exclude list removes nothing
    (Filters(allowed_items=("b2", "a1", "zz")), ["a1", "b2"]),  # unknown ids are ignored
    (Filters(exclude=("a1", "zz"), categories=("A", "B")), ["a2", "b1", "b2"]),
])
def test_filters_are_one_mask(cat, f, want):
    assert _ids(cat, f) == want


def test_known_items_include_the_catalogue_not_only_the_model(cat):
    assert "new" in cat.known and "a1" in cat.known and "zz" not in cat.known


def test_popularity_has_no_vectors_and_says_why(cat):
    assert cat.vectors is None
    with pytest.raises(Unsupported, match="item similarity"):
        cat.query_vectors(["a1"])


def test_vectors_are_normalised_and_unknown_ids_reported(tmp_path):
    from pipeline.models.als import ALS

    paths = Paths(tmp_path)
    rng = np.random.default_rng(0)
    train = pd.DataFrame({C.user: [f"u{rng.integers(20)}" for _ in range(200)],
                          C.item: [ITEMS[rng.integers(5)] for _ in range(200)]}).drop_duplicates()
    c = Catalogue(ALS(factors=3, iterations=3).fit(train), load_params(ROOT / "params.yaml"), paths)
    np.testing.assert_allclose(np.linalg.norm(c.vectors, axis=1), 1.0, rtol=1e-5)
    q, missing = c.query_vectors(["a1", "zz"])
    np.testing.assert_allclose(q[0], c.vectors[c.index["a1"]])
    assert missing == {"zz": "not in the catalogue"}
