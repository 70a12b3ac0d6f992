"""Non-personalised baseline: most popular items (by number of distinct users)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.columns import Columns as C
from pipeline.ranking import top_k


class Popularity:
    def fit(self, train: pd.DataFrame) -> Popularity:
        counts = train.groupby(C.item)[C.user].nunique().sort_values(ascending=False, kind="stable")
        self.item_ids = counts.index.astype(str).to_numpy()
        self.scores = counts.to_numpy(dtype=np.float32)
        return self

    def recommend(self, users: list[str], k: int, exclude: dict[str, set[str]] | None = None,
                  user_tokens: dict[str, list[str]] | None = None) -> pd.DataFrame:
        scores = np.broadcast_to(self.scores, (len(users), len(self.scores)))
        return top_k(users, self.item_ids, scores, k, exclude)
