import numpy as np
import pytest

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


@pytest.mark.parametrize("path", ["threshold", "block"])
@pytest.mark.parametrize("ties", [False, True])
def test_block_top_k_equals_a_full_stable_sort(ties, path, monkeypatch):
    """Wide enough for the threshold and the block pre-selection (6001 items, k up to 20):
    the same indices and scores as a full stable sort, with ties, -inf cells, all-excluded
    and constant rows (those the threshold leaves to the block pass, as does a probe
    narrower than k)."""
    from pipeline.models import ranking
    from pipeline.models.ranking import top_k_masked

    if path == "block":
        monkeypatch.setattr(ranking, "PROBE", 10**6)
    rng = np.random.default_rng(1)
    s = rng.standard_normal((40, 6001)).astype(np.float32)
    if ties:
        s = np.round(s * 2) / 2
    s[rng.random(s.shape) < 0.05] = -np.inf
    s[3], s[5] = -np.inf, 1.0
    s[4, :-5] = -np.inf
    s[6, rng.random(s.shape[1]) < 0.97] = -np.inf  # a narrow filter: ~180 cells pass
    for k in (1, 10, 20):
        idx, sc = top_k_masked(s.copy(), k)
        want = np.argsort(-s, axis=1, kind="stable")[:, :k]
        assert np.array_equal(idx, want)
        assert np.array_equal(sc, np.take_along_axis(s, want, axis=1))
        for r in (3, 4, 5, 6, 7):  # one row at a time: the per-row partition a request takes
            one, osc = top_k_masked(s[r:r + 1].copy(), k)
            assert np.array_equal(one[0], want[r]) and np.array_equal(osc[0], s[r, want[r]])


def test_top_k_of_a_shared_row_equals_masking_every_row():
    """Popularity-like rows (one row for all, integer ties) minus per-user exclusions."""
    import scipy.sparse as sp

    from pipeline.models.ranking import top_k_masked, top_k_shared

    rng = np.random.default_rng(2)
    row = rng.integers(0, 30, 7000).astype(np.float32)
    exc = sp.random(50, 7000, density=0.01, format="lil", random_state=3, dtype=bool)
    exc[7, np.argsort(-row, kind="stable")[:40]] = True     # a user who has every top item
    exc = sp.csr_matrix(exc)
    exc.sort_indices()
    order = np.argsort(-row, kind="stable")
    for start, rows in ((0, 50), (5, 20)):
        s = np.tile(row, (rows, 1))
        s[exc[start:start + rows].toarray()] = -np.inf
        for k in (1, 20):
            idx, sc = top_k_shared(row, order, exc, start, rows, k)
            want = top_k_masked(s, k)
            assert np.array_equal(idx, want[0]) and np.array_equal(sc, want[1])


@pytest.mark.parametrize("n", [3, 400])
def test_exclusion_rows_equal_exclusion_cells(n):
    """Per-row lists (the batch path, by index lookup or by dict) give the cells the
    per-user dict path gives, unknown items ignored."""
    import pandas as pd

    from pipeline.models.ranking import exclusion_cells, exclusion_rows

    items = np.asarray([f"i{j}" for j in range(50)], dtype=object)
    index = {it: j for j, it in enumerate(items)}
    rng = np.random.default_rng(4)
    users = [f"u{r}" for r in range(n)]
    lists = [[*rng.choice(items, int(rng.integers(0, 4))), "zzz"] if r % 3 else [] for r in range(n)]
    got = exclusion_rows(lists, pd.Index(items), index)
    want = exclusion_cells(users, index, dict(zip(users, lists, strict=True)))
    assert sorted(zip(*got, strict=True)) == sorted(zip(*want, strict=True))
