"""How confidence reaches LightFM (``model.confidence``, ``model.confidence_power``): stronger
signals must steer the ranking, not only be carried along."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.columns import Columns as C
from pipeline.config import ModelParams
from pipeline.models.hybrid import LightFMRecommender, _Positives

TINY = ModelParams(no_components=8, epochs=15, num_threads=1, learning_rate=0.05)


def strong_and_weak(n_users: int = 40, seed: int = 0) -> pd.DataFrame:
    """Every user has 5 of 10 'weak' items (confidence 1) and 5 of 10 'strong' ones (8): the
    two groups are equally popular, so only the confidence tells them apart."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for group, c in (("w", 1.0), ("s", 8.0)):
            rows += [(f"u{u:02d}", f"{group}{i}", c) for i in rng.choice(10, 5, replace=False)]
    return pd.DataFrame(rows, columns=[C.user, C.item, C.confidence])


def strong_share(model: LightFMRecommender, train: pd.DataFrame) -> float:
    """Share of users whose best unseen item is a strong one."""
    users = sorted(train[C.user].unique())
    seen = train.groupby(C.user)[C.item].agg(set).to_dict()
    recs = model.recommend(users, 1, seen)
    return float(recs[C.item].str.startswith("s").mean())


@pytest.mark.parametrize("mode, power", [("weight", 1.0), ("weight", 2.0), ("sample", 1.0)])
def test_strong_positives_rank_first(mode, power):
    train = strong_and_weak()
    binary = LightFMRecommender(TINY.model_copy(update={"confidence_power": 0.0})).fit(train)
    steered = LightFMRecommender(TINY.model_copy(update={"confidence": mode,
                                                         "confidence_power": power})).fit(train)
    assert strong_share(steered, train) >= 0.8
    assert strong_share(steered, train) > strong_share(binary, train) + 0.2


def test_sampling_draws_in_proportion_to_confidence():
    rows, cols = np.array([0, 1]), np.array([0, 0])
    pos = _Positives(rows, cols, np.array([1.0, 9.0], dtype=np.float32), (2, 1), "sample", 0)
    draws = np.concatenate([pos.epoch()[0].row for _ in range(500)])
    inter, weights = pos.epoch()
    assert weights is None and inter.nnz == 2          # as many draws as pairs, equal steps
    assert (draws == 1).mean() == pytest.approx(0.9, abs=0.03)
    again = _Positives(rows, cols, np.array([1.0, 9.0], dtype=np.float32), (2, 1), "sample", 0)
    assert np.array_equal(np.concatenate([again.epoch()[0].row for _ in range(500)]), draws)


def test_weight_mode_passes_confidence_as_sample_weight():
    pos = _Positives(np.array([0, 1]), np.array([0, 0]), np.array([1.0, 4.0], dtype=np.float32),
                     (2, 1), "weight", 0)
    inter, weights = pos.epoch()
    assert list(inter.data) == [1.0, 1.0] and list(weights.data) == [1.0, 4.0]
