"""``implicit`` ALS on confidence-weighted (user × item) interactions. A user the model was
not fitted on is folded in from their recent items (``history``, read from the online store)
by the least-squares step ALS itself alternates (implicit's ``recalculate_user``), on the
stored item factors; a user with no known item gets popularity."""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pipeline.columns import Columns as C
from pipeline.models.base import History, TokenMap, UserRowsModel
from pipeline.models.popularity import catalogue, popularity_scores


class ALS(UserRowsModel):
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

        self._index_users(catalogue(train, C.user))
        self.item_ids = catalogue(train, C.item)
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
        self._yty = None

    def fold_in(self, items: list[str]) -> np.ndarray | None:
        """The factors of a new user who has ``items`` (confidence 1 each), or None when no
        item is in the model: x = (YᵀY + λI + Σ (c − 1) yᵢyᵢᵀ)⁻¹ Σ c yᵢ with c = alpha, the
        solve implicit's ``recalculate_user`` runs."""
        index = self.item_index
        cols = sorted({index[i] for i in items if i in index})
        if not cols:
            return None
        y = self.item_factors
        if self._yty is None:
            self._yty = (y.T @ y).astype(np.float64)
        c = float(self._config["alpha"])
        yi = y[cols].astype(np.float64)
        a = self._yty + self._config["regularization"] * np.eye(y.shape[1]) + (c - 1.0) * yi.T @ yi
        return np.linalg.solve(a, c * yi.sum(axis=0)).astype(np.float32)

    def scores(self, users: list[str], user_tokens: TokenMap | None = None,
               history: History | None = None) -> np.ndarray:
        """Known users: their fitted factors; others with a history: folded in; the rest:
        popularity."""
        rows = np.asarray([self._uidx.get(u, -1) for u in users], dtype=np.int64)
        has = rows >= 0
        vecs = np.zeros((len(users), self.item_factors.shape[1]), dtype=np.float32)
        vecs[has] = self.user_factors[rows[has]]
        if history:
            for r in np.flatnonzero(~has):
                v = self.fold_in(history.get(users[r], []))
                if v is not None:
                    vecs[r], has[r] = v, True
        s = vecs @ self.item_factors.T
        s[~has] = self.popularity[None, :]
        return s

    def item_vectors(self) -> np.ndarray:
        return self.item_factors

    def _restore(self, meta: dict) -> None:
        super()._restore(meta)
        self._yty = None
