"""Popularity: distinct users per item, the same list for everyone — the floor every model
must beat, and the order a model gives users it knows nothing about."""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import pandas as pd

from pipeline.columns import Columns as C
from pipeline.models.base import History, RecommenderBase, TokenMap


def popularity_scores(train: pd.DataFrame, item_ids: np.ndarray) -> np.ndarray:
    """Distinct users per item of ``train``, aligned to ``item_ids`` (0 for unseen items)."""
    pop = train.groupby(C.item)[C.user].nunique()
    return pop.reindex(item_ids).fillna(0).to_numpy(dtype=np.float32)


def catalogue(train: pd.DataFrame, col: str) -> np.ndarray:
    """Sorted distinct ids of ``train[col]`` as strings: the row / column order of a model."""
    return np.asarray(sorted(train[col].astype(str).unique()), dtype=object)


class Popularity(RecommenderBase):
    """Most popular items (by distinct users), the same list for everyone."""

    FORMAT = "recflow-popularity-v1"
    ARRAYS = ("popularity",)

    def config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: dict) -> Self:
        return cls()

    def _fit(self, train: pd.DataFrame, user_tokens: TokenMap, item_tokens: TokenMap,
             **kw: Any) -> None:
        self.item_ids = catalogue(train, C.item)
        self.popularity = popularity_scores(train, self.item_ids)

    def scores(self, users: list[str], user_tokens: TokenMap | None = None,
               history: History | None = None) -> np.ndarray:
        return np.broadcast_to(self.popularity, (len(users), len(self.popularity)))
