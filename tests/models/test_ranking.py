import numpy as np

from pipeline.columns import Columns as C
from pipeline.models.tokens import item_tokens, user_tokens
from pipeline.models.ranking import top_k, top_k_indices


def test_top_k_orders_and_excludes():
    items = np.array(["a", "b", "c", "d"], dtype=object)
    scores = np.array([[0.1, 0.9, 0.5, 0.7], [4.0, 3.0, 2.0, 1.0]])
    out = top_k(["u1", "u2"], items, scores, 2, exclude={"u1": {"b"}, "u2": {"zzz"}})
    assert out[out[C.user] == "u1"][C.item].tolist() == ["d", "c"]
    assert out[out[C.user] == "u2"][C.item].tolist() == ["a", "b"]
    assert out[C.rank].tolist() == [1, 2, 1, 2]
    assert scores[0, 1] == 0.9  # input untouched


def test_k_larger_than_catalogue_and_everything_excluded():
    items = np.array(["a", "b"], dtype=object)
    out = top_k(["u"], items, np.array([[1.0, 2.0]]), 5)
    assert out[C.item].tolist() == ["b", "a"]
    none = top_k(["u"], items, np.array([[1.0, 2.0]]), 5, exclude={"u": {"a", "b"}})
    assert none.empty
    assert top_k([], items, np.zeros((0, 2)), 3).empty


def test_top_k_indices_ties_are_stable():
    idx, sc = top_k_indices(np.array([[1.0, 1.0, 0.0]]), 2)
    assert sorted(idx[0].tolist()) == [0, 1] and sc[0].tolist() == [1.0, 1.0]


def test_tokens_from_frames_and_online_dicts_agree():
    rows = {C.user: ["u1", "u2", "u3"], "top_category": ["c1", None, "c2"], "n_events": [7, 0, None]}
    assert user_tokens(rows, ("top_category", "activity")) == {
        "u1": ["top_category=c1", "activity=3"], "u2": ["activity=0"], "u3": ["top_category=c2"]}
    import pandas as pd

    assert user_tokens(pd.DataFrame(rows), ("top_category", "activity")) == user_tokens(rows, ("top_category", "activity"))
    it = item_tokens({C.item: ["i"], C.category: ["x"], "pop_all": [1023.0]}, ("category", "popularity"))
    assert it == {"i": ["category=x", "popularity=10"]}


def test_large_matrices_take_the_candidate_pass_and_get_the_same_top_k(monkeypatch):
    """The candidate pass (serving batches, export) returns the same scores as partitioning
    every row, with exclusions and an item mask; heavy ties fall back to the plain path."""
    import pipeline.models.ranking as R

    rng = np.random.default_rng(1)
    s = rng.random((300, 8000), dtype=np.float32)
    ex = (rng.integers(0, 300, 2000), rng.integers(0, 8000, 2000))
    allowed = rng.random(8000) > 0.3
    fast_i, fast_s = R.top_k_indices(s, 20, ex, allowed, fast=True)
    plain_i, plain_s = R.top_k_indices(s, 20, ex, allowed)
    np.testing.assert_array_equal(fast_s, plain_s)
    assert (fast_i == plain_i).mean() > 0.999  # equal scores may swap
    assert allowed[fast_i].all() and not np.isin(fast_i[ex[0][:1]], ex[1][:1]).any()
    monkeypatch.setattr(R, "_LARGE", 1)
    ties = np.ones((50, 4000), dtype=np.float32)
    ties[:, 7] = 2.0
    i, v = R.top_k_indices(ties, 10, fast=True)
    assert i[0, 0] == 7 and v[0, 0] == 2.0 and (v[:, 1:] == 1.0).all()
