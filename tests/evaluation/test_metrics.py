"""Metric functions against hand-computed tables, including the empty and NaN cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipeline.columns import Columns as C
from pipeline.evaluation.metrics import auc, per_user, summary


def recs_of(lists: dict[str, list[str]]) -> pd.DataFrame:
    rows = [(u, it, float(-r), r) for u, items in lists.items() for r, it in enumerate(items, 1)]
    return pd.DataFrame(rows, columns=[C.user, C.item, C.score, C.rank])


def rel_of(sets: dict[str, list[str]]) -> pd.DataFrame:
    return pd.DataFrame([(u, it) for u, items in sets.items() for it in items], columns=[C.user, C.item])


L2 = 1 / math.log2(3)   # discount of rank 2
L3 = 1 / math.log2(4)   # discount of rank 3

# (recommended list, relevant set, k, precision, recall, ndcg, ap) — computed by hand.
CASES = [
    (["a", "b"], ["a", "c"], 2, 0.5, 0.5, 1 / (1 + L2), 0.5),
    (["b", "a"], ["a", "c"], 2, 0.5, 0.5, L2 / (1 + L2), 0.25),
    (["a", "b", "c"], ["a", "c"], 3, 2 / 3, 1.0, (1 + L3) / (1 + L2), (1 + 2 / 3) / 2),
    (["x", "y", "z"], ["a"], 3, 0.0, 0.0, 0.0, 0.0),
    (["a"], ["a", "b", "c"], 1, 1.0, 1.0, 1.0, 1.0),            # recall's denominator is min(k,|R|)
    (["a", "b", "c", "d"], ["d"], 4, 0.25, 1.0, 1 / math.log2(5), 0.25),
    ([], ["a"], 3, 0.0, 0.0, 0.0, 0.0),                          # no recommendation counts as zero
]


@pytest.mark.parametrize(("rec", "rel", "k", "prec", "recall", "ndcg", "ap"), CASES)
def test_per_user_hand_computed(rec, rel, k, prec, recall, ndcg, ap):
    recs = recs_of({"u": rec}) if rec else recs_of({})
    got = per_user(recs, rel_of({"u": rel}), k).loc["u"]
    assert got["precision"] == pytest.approx(prec)
    assert got["recall"] == pytest.approx(recall)
    assert got["ndcg"] == pytest.approx(ndcg)
    assert got["map"] == pytest.approx(ap)


def test_users_outside_the_holdout_are_ignored_and_ranks_beyond_k_cut():
    recs = recs_of({"u": ["b", "a"], "stranger": ["a"]})
    pu = per_user(recs, rel_of({"u": ["a"]}), 1)
    assert list(pu.index) == ["u"]
    assert pu.loc["u", "precision"] == 0.0   # "a" is at rank 2, beyond k = 1


def test_k_must_be_positive():
    with pytest.raises(ValueError):
        per_user(recs_of({"u": ["a"]}), rel_of({"u": ["a"]}), 0)


# (scores, excluded, relevant, expected AUC) — Mann–Whitney by hand.
AUC_CASES = [
    ([3, 2, 1], [0, 0, 0], [1, 0, 0], 1.0),
    ([3, 2, 1], [0, 0, 0], [0, 0, 1], 0.0),
    ([3, 2, 1], [0, 0, 0], [0, 1, 0], 0.5),
    ([3, 2, 1, 0], [0, 0, 0, 0], [1, 0, 1, 0], 0.75),   # pairs: 3>2 ✓, 3>0 ✓, 1<2 ✗, 1>0 ✓
    ([1, 1, 1], [0, 0, 0], [1, 0, 0], 0.5),             # ties count one half
    ([9, 2, 1], [1, 0, 0], [0, 0, 1], 0.0),             # excluded top item is not a negative
    ([9, 2, 1], [1, 0, 0], [1, 0, 0], math.nan),        # the only positive is excluded
    ([3, 2, 1], [0, 0, 0], [1, 1, 1], math.nan),        # no negative
    ([3, 2, 1], [0, 0, 0], [0, 0, 0], math.nan),        # no positive
]


@pytest.mark.parametrize(("scores", "excluded", "relevant", "expected"), AUC_CASES)
def test_auc_hand_computed(scores, excluded, relevant, expected):
    got = auc(np.array([scores], dtype=float), np.array([excluded], dtype=bool),
              np.array([relevant], dtype=bool))[0]
    if math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(expected)


def test_auc_is_row_wise():
    s = np.array([[3, 2, 1], [1, 2, 3]], dtype=float)
    rel = np.array([[1, 0, 0], [1, 0, 0]], dtype=bool)
    assert auc(s, np.zeros_like(rel), rel).tolist() == [1.0, 0.0]


def test_summary_splits_cold_and_warm_and_counts_coverage():
    recs = recs_of({"w": ["a", "b"], "c": ["c", "d"]})
    hold = rel_of({"w": ["a"], "c": ["x"]})
    aucs = pd.Series({"w": 0.9, "c": np.nan})
    s = summary(recs, hold, 2, n_catalogue=8, auc_by_user=aucs, warm_users={"w"})
    assert s["precision@2"] == pytest.approx(0.25)
    assert s["map@2"] == pytest.approx(0.5)
    assert s["coverage"] == pytest.approx(4 / 8)
    assert s["auc"] == pytest.approx(0.9)          # NaN users are left out of the mean
    assert s["warm"]["precision@2"] == pytest.approx(0.5) and s["warm"]["users"] == 1
    assert s["cold"]["precision@2"] == 0.0 and s["cold"]["auc"] is None


def test_summary_of_an_empty_holdout_is_zero_not_a_crash():
    empty = rel_of({})
    s = summary(recs_of({}), empty, 10, n_catalogue=0, warm_users=set())
    assert s["precision@10"] == 0.0 and s["users"] == 0 and s["coverage"] == 0.0
    assert s["cold"]["users"] == 0 and s["cold"]["precision@10"] is None


def test_precision_recall_curve_equals_summary_at_every_k():
    from pipeline.evaluation.metrics import precision_recall_curve

    rng = np.random.default_rng(0)
    recs = recs_of({f"u{u}": [f"i{i}" for i in rng.choice(100, 20, replace=False)] for u in range(50)})
    rel = rel_of({f"u{u}": [f"i{i}" for i in rng.choice(100, rng.integers(1, 15), replace=False)]
                  for u in range(60)})    # 10 holdout users got no list: zeros
    for row in precision_recall_curve(recs, rel, (1, 3, 5, 10, 20)):
        m = summary(recs, rel, row["k"], 100)
        assert (row["precision"], row["recall"]) == (m[f"precision@{row['k']}"], m[f"recall@{row['k']}"])
