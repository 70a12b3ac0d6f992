"""``implicit`` ALS on confidence-weighted (user × item) interactions; unknown users get
popularity. The collaborative-filtering baseline beside the hybrid."""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pipeline.columns import Columns as C
from pipeline.models.base import History, RecommenderBase, TokenMap
from pipeline.models.popularity import catalogue, popularity_scores


class ALS(RecommenderBase):
    """Alternating least squares (``implicit``), confidence as the matrix values."""

    FORMAT = "recflow-als-v1"
    ARRAYS = ("user_factors", "item_factors", "popularity")

    def __init__(self, factors: int = 64, regularization: float = 0.01, alpha: float = 1.0,
                 iterations: int = 15, seed: int = 42, num_threads: int = 1) -> None:
        super().__init__()
        self._config = {"factors": factors, "regularization": regularization, "alpha": alpha,
                        "iterations": iterations, "seed": seed, "num_threads": num_threads}

    def config(self) -> dict:
        return dict(self._config)

    @classmethod
    def from_config(cls, config: dict) -> Self:
        return cls(**config)

    def _fit(self, train: pd.DataFrame, user_tokens: TokenMap, item_tokens: TokenMap,
             **kw: Any) -> None:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        self.user_ids = catalogue(train, C.user)
        self.item_ids = catalogue(train, C.item)
        self._uidx = {u: j for j, u in enumerate(self.user_ids)}
        r = train[C.user].astype(str).map(self._uidx).to_numpy()
        c = train[C.item].astype(str).map({i: j for j, i in enumerate(self.item_ids)}).to_numpy()
        w = train[C.confidence].to_numpy(dtype=np.float32) if C.confidence in train else \
            np.ones(len(train), dtype=np.float32)
        ui = sp.csr_matrix((w, (r, c)), shape=(len(self.user_ids), len(self.item_ids)))
        cfg = self._config
        # implicit parallelises itself; a BLAS thread pool underneath only fights it (and warns).
        with threadpool_limits(1, "blas"):
            m = AlternatingLeastSquares(factors=cfg["factors"], regularization=cfg["regularization"],
                                        alpha=cfg["alpha"], iterations=cfg["iterations"],
                                        random_state=cfg["seed"], num_threads=cfg["num_threads"])
            m.fit(ui, show_progress=False)
        self.user_factors = np.asarray(m.user_factors, dtype=np.float32)
        self.item_factors = np.asarray(m.item_factors, dtype=np.float32)
        self.popularity = popularity_scores(train, self.item_ids)

    def known(self, user: str) -> bool:
        return user in self._uidx

    def scores(self, users: list[str], user_tokens: TokenMap | None = None,
               history: History | None = None) -> np.ndarray:
        rows = np.asarray([self._uidx.get(u, -1) for u in users], dtype=np.int64)
        known = rows >= 0
        s = np.empty((len(users), len(self.item_ids)), dtype=np.float32)
        s[known] = self.user_factors[rows[known]] @ self.item_factors.T
        s[~known] = self.popularity[None, :]
        return s

    def item_vectors(self) -> np.ndarray:
        return self.item_factors

    def _meta(self) -> dict:
        return {"user_ids": list(self.user_ids), **super()._meta()}

    def _restore(self, meta: dict) -> None:
        super()._restore(meta)
        self.user_ids = np.asarray(meta["user_ids"], dtype=object)
        self._uidx = {u: j for j, u in enumerate(self.user_ids)}
