"""The scalable scoring against the exact definitions on small data: holdout metrics equal a
full sort + the pandas metrics + the rank-based AUC to 1e-9; the sampled AUC stays within its
stated bound; batches and the validation sample behave as documented."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.columns import Columns as C
from pipeline.evaluation.batches import BYTES_PER_CELL, batch_users
from pipeline.evaluation.holdout import score_exact, score_users
from pipeline.evaluation.metrics import per_user
from pipeline.evaluation.validation import ValidationSlice, validation_precision


class Fixed:
    """A model whose scores are a fixed (users × items) table, ties included."""

    def __init__(self, users: list[str], items: list[str], seed: int = 0, ties: bool = True):
        rng = np.random.default_rng(seed)
        t = rng.standard_normal((len(users), len(items))).astype(np.float32)
        self.table = np.round(t * 2) / 2 if ties else t
        self.row = {u: r for r, u in enumerate(users)}
        self.item_ids = np.asarray(items, dtype=object)

    def scores(self, users, user_tokens=None, history=None):
        return self.table[[self.row[u] for u in users]].copy()


class Shared(Fixed):
    """Every user gets the same row (a broadcast view, as popularity returns)."""

    def scores(self, users, user_tokens=None, history=None):
        return np.broadcast_to(self.table[0], (len(users), self.table.shape[1]))


def pairs(rng, users, items, n) -> pd.DataFrame:
    return pd.DataFrame({C.user: rng.choice(users, n), C.item: rng.choice(items, n)}).drop_duplicates()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    users = [f"u{i:03d}" for i in range(80)]
    items = [f"i{i:03d}" for i in range(300)]
    train = pairs(rng, users[:70], items, 3000)                 # u070… are cold
    holdout = pairs(rng, users, items + ["new1", "new2"], 600)   # a few items off-catalogue
    return users, items, train, holdout


def exact(model, users, items, train, holdout, k):
    """The definitions (full stable sort, pandas metrics, rank AUC) — the reference."""
    ref = score_exact(model, holdout, train, {}, k, len(items), batch=13)
    return ref.metrics, ref.curve, ref.per_user.to_frame("precision")


def flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, v in d.items():
        out.update(flat(v, f"{prefix}{key}.") if isinstance(v, dict) else {f"{prefix}{key}": v})
    return out


@pytest.mark.parametrize("family", [Fixed, Shared])
@pytest.mark.parametrize("memory_mb_cells", [None, 7 * 300 * BYTES_PER_CELL])   # one batch, or 7 users
def test_holdout_metrics_equal_the_exact_definitions(data, memory_mb_cells, family):
    users, items, train, holdout = data
    model = family(users, items)
    batch = None if memory_mb_cells is None else memory_mb_cells // (300 * BYTES_PER_CELL)
    got = score_users(model, holdout, train, {}, 10, len(items), batch, auc_negatives=1000)
    want, curve, pu = exact(model, users, items, train, holdout, 10)
    g, w = flat(got.metrics), flat(want)
    assert g.pop("auc_bound") == 0.0                             # 300 items ≤ 1000 draws: exact
    assert g.keys() == w.keys()
    for key in w:
        assert g[key] == pytest.approx(w[key], abs=1e-9), key
    for a, b in zip(got.curve, curve, strict=True):
        assert a == pytest.approx(b, abs=1e-9)
    assert np.allclose(got.per_user.to_numpy(), pu["precision"].sort_index().to_numpy(), atol=1e-9)


def test_sampled_auc_is_within_its_bound_and_seeded(data):
    users, items, train, holdout = data
    model = Fixed(users, items, seed=3, ties=False)
    want = exact(model, users, items, train, holdout, 10)[0]
    a = score_users(model, holdout, train, {}, 10, len(items), auc_negatives=100, seed=1).metrics
    b = score_users(model, holdout, train, {}, 10, len(items), auc_negatives=100, seed=1).metrics
    assert 0 < a["auc_bound"] < 0.05
    assert abs(a["auc"] - want["auc"]) <= a["auc_bound"]
    assert a == b                                                # same seed, same estimate
    assert a["precision@10"] == pytest.approx(want["precision@10"], abs=1e-12)   # top-k stays exact


def test_batches_follow_the_memory_budget():
    assert batch_users(50_000, 512) == 512 * 2 ** 20 // (50_000 * BYTES_PER_CELL)
    assert batch_users(10 ** 9, 1) == 1                          # never zero users


def test_validation_slice_samples_users_with_a_seed_and_scores_like_recommend(data):
    users, items, train, holdout = data
    known = set(train[C.user])
    full = ValidationSlice(train, holdout)
    assert full.users == sorted(set(holdout[C.user]) & known)
    a, b = ValidationSlice(train, holdout, 20, seed=5), ValidationSlice(train, holdout, 20, seed=5)
    assert a.users == b.users and len(a.users) == 20 and set(a.users) <= set(full.users)
    assert ValidationSlice(train, holdout, 20, seed=6).users != a.users
    assert set(a.relevant[C.user]) == set(a.users)
    model = Fixed(users, items)
    # the reference: recommend with the dict of exclusions, then the pandas per-user table
    from pipeline.models.ranking import top_k
    recs = top_k(full.users, model.item_ids, model.scores(full.users), 5, full.exclude)
    want = per_user(recs, full.relevant, 5)["precision"].mean()
    assert validation_precision(model, full, 5) == pytest.approx(want, abs=1e-12)
    assert validation_precision(model, full, 5, memory_mb=1) == pytest.approx(want, abs=1e-12)


def test_pair_matrix_holds_exactly_the_pairs_inside_both(data):
    from pipeline.models.ranking import pair_matrix

    users, items, train, holdout = data
    m = pair_matrix(holdout, users[:50], items).toarray()
    want = np.zeros_like(m)
    for u, it in zip(holdout[C.user], holdout[C.item], strict=True):
        if u in users[:50] and it in items:
            want[users.index(u), items.index(it)] = True
    assert np.array_equal(m, want) and m.any()


def test_tuning_trials_fit_on_a_seeded_sample_that_keeps_the_scored_users(data):
    from pipeline.evaluation.validation import trial_pairs

    users, items, train, holdout = data
    keep = users[:10]
    part = trial_pairs(train, keep, 30, seed=1)
    chosen = set(part[C.user])
    assert len(chosen) == 30 and set(keep) <= chosen
    assert part.equals(train[train[C.user].isin(chosen)])         # every pair of a chosen user
    assert set(trial_pairs(train, keep, 30, seed=1)[C.user]) == chosen
    assert trial_pairs(train, keep, None, seed=1) is train
    assert trial_pairs(train, keep, 10_000, seed=1) is train
