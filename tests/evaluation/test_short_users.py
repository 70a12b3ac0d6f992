"""Validation users cut to a short history (cold-like copies) beside the warm ones."""

from __future__ import annotations

import pytest

from pipeline.evaluation.short_users import PREFIX, short_copies
from pipeline.evaluation.validation import ValidationSlice, validation_precision
from pipeline.models.als import ALS
from pipeline.models.popularity import Popularity
from tests.models.test_contract import checkerboard


@pytest.fixture(scope="module")
def board():
    train, hold = checkerboard()
    hist = train.groupby("user_id")["item_id"].agg(list).to_dict()   # newest first, say
    return train, hold, hist


def test_copies_are_seeded_and_hold_the_oldest_items(board):
    _, _, hist = board
    users = sorted(hist)
    a = short_copies(users, hist, 10, 3, seed=1)
    assert a == short_copies(users, hist, 10, 3, seed=1) != short_copies(users, hist, 10, 3, 2)
    assert len(a) == 10 and all(c == PREFIX + u and c not in hist for c, (u, _) in a.items())
    for u, items in a.values():   # 0 items: a new user with attributes only
        assert len(items) <= 3 and (not items or items == hist[u][-len(items):])
    assert {len(items) for _, items in short_copies(users, hist, 40, 3, 1).values()} == {0, 1, 2, 3}
    assert short_copies(users, None, 10, 3, 1) == {} == short_copies(users, hist, 0, 3, 1)


def test_copies_are_scored_for_their_users_pairs(board):
    train, hold, hist = board
    warm = ValidationSlice(train, hold)
    every = ValidationSlice(train, hold, history=hist, short_users=10_000, short_n=2)
    assert every.scored == every.users + list(every.short) and len(every.short) == len(warm.users)
    # popularity ignores history: each copy scores as its user, so the mean is unchanged
    pop = Popularity().fit(train)
    assert validation_precision(pop, every, 5) == pytest.approx(validation_precision(pop, warm, 5))
    # ALS folds a copy's 0–2 items in: the checkerboard's parity is found from them
    als = ALS(factors=8, regularization=0.01, alpha=10.0, iterations=15, seed=0,
              num_threads=1).fit(train)
    copies = ValidationSlice(train, hold, history=hist, short_users=10_000, short_n=2)
    got = validation_precision(als, copies, 5)
    assert got > validation_precision(pop, copies, 5)
    assert got != pytest.approx(validation_precision(als, warm, 5))
