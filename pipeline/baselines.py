"""Baselines on the same split as the model: popularity and ``implicit`` ALS.

Both satisfy the model contract of pipeline.model (fit → scores/recommend → save/load, arrays +
JSON on disk, no pickle), so evaluation treats every model the same way.
"""

from __future__ import annotations

import json
import logging
from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pipeline.columns import Columns as C
from pipeline.config import ALSParams
from pipeline.ranking import recommend_batched

log = logging.getLogger("recflow.baselines")


def _popularity(train: pd.DataFrame, item_ids: np.ndarray) -> np.ndarray:
    """Distinct users per item, aligned to ``item_ids``."""
    pop = train.groupby(C.item)[C.user].nunique()
    return pop.reindex(item_ids).fillna(0).to_numpy(dtype=np.float32)


class Popularity:
    """Most popular items (by distinct users), the same list for everyone."""

    FORMAT = "recflow-popularity-v1"

    def fit(self, train: pd.DataFrame, user_tokens: dict | None = None,
            item_tokens: dict | None = None) -> Popularity:
        self.item_ids = np.asarray(sorted(train[C.item].astype(str).unique()), dtype=object)
        self.popularity = _popularity(train, self.item_ids)
        return self

    def scores(self, users: list[str], user_tokens: dict | None = None) -> np.ndarray:
        return np.broadcast_to(self.popularity, (len(users), len(self.popularity)))

    def recommend(self, users: list[str], k: int, exclude: dict[str, set[str]] | None = None,
                  user_tokens: dict[str, list[str]] | None = None) -> pd.DataFrame:
        return recommend_batched(self, users, k, exclude, user_tokens)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(directory / "model.npz", popularity=self.popularity)
        (directory / "model.json").write_text(json.dumps(
            {"format": self.FORMAT, "item_ids": list(self.item_ids)}))

    @classmethod
    def load(cls, directory: Path) -> Popularity:
        meta = json.loads((directory / "model.json").read_text())
        if meta.get("format") != cls.FORMAT:
            raise ValueError(f"{directory}: not a {cls.FORMAT} artifact")
        self = cls()
        self.item_ids = np.asarray(meta["item_ids"], dtype=object)
        self.popularity = np.load(directory / "model.npz", allow_pickle=False)["popularity"]
        return self


class ALS:
    """``implicit`` ALS on confidence-weighted (user × item); unknown users get popularity."""

    FORMAT = "recflow-als-v1"

    def __init__(self, factors: int = 64, regularization: float = 0.01, alpha: float = 1.0,
                 iterations: int = 15, seed: int = 42, num_threads: int = 1) -> None:
        self.config = {"factors": factors, "regularization": regularization, "alpha": alpha,
                       "iterations": iterations, "seed": seed, "num_threads": num_threads}

    def fit(self, train: pd.DataFrame, user_tokens: dict | None = None,
            item_tokens: dict | None = None) -> ALS:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        self.user_ids = np.asarray(sorted(train[C.user].astype(str).unique()), dtype=object)
        self.item_ids = np.asarray(sorted(train[C.item].astype(str).unique()), dtype=object)
        self._uidx = {u: j for j, u in enumerate(self.user_ids)}
        r = train[C.user].astype(str).map(self._uidx).to_numpy()
        c = train[C.item].astype(str).map({i: j for j, i in enumerate(self.item_ids)}).to_numpy()
        w = train[C.confidence].to_numpy(dtype=np.float32) if C.confidence in train else \
            np.ones(len(train), dtype=np.float32)
        ui = sp.csr_matrix((w, (r, c)), shape=(len(self.user_ids), len(self.item_ids)))
        cfg = self.config
        # implicit parallelises itself; a BLAS thread pool underneath only fights it (and warns).
        with threadpool_limits(1, "blas"):
            m = AlternatingLeastSquares(factors=cfg["factors"], regularization=cfg["regularization"],
                                        alpha=cfg["alpha"], iterations=cfg["iterations"],
                                        random_state=cfg["seed"], num_threads=cfg["num_threads"])
            m.fit(ui, show_progress=False)
        self.user_factors = np.asarray(m.user_factors, dtype=np.float32)
        self.item_factors = np.asarray(m.item_factors, dtype=np.float32)
        self.popularity = _popularity(train, self.item_ids)
        return self

    def scores(self, users: list[str], user_tokens: dict | None = None) -> np.ndarray:
        rows = np.asarray([self._uidx.get(u, -1) for u in users], dtype=np.int64)
        known = rows >= 0
        s = np.empty((len(users), len(self.item_ids)), dtype=np.float32)
        s[known] = self.user_factors[rows[known]] @ self.item_factors.T
        s[~known] = self.popularity[None, :]
        return s

    def recommend(self, users: list[str], k: int, exclude: dict[str, set[str]] | None = None,
                  user_tokens: dict[str, list[str]] | None = None) -> pd.DataFrame:
        return recommend_batched(self, users, k, exclude, user_tokens)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(directory / "model.npz", user_factors=self.user_factors,
                 item_factors=self.item_factors, popularity=self.popularity)
        (directory / "model.json").write_text(json.dumps(
            {"format": self.FORMAT, "config": self.config, "user_ids": list(self.user_ids),
             "item_ids": list(self.item_ids)}))

    @classmethod
    def load(cls, directory: Path) -> ALS:
        meta = json.loads((directory / "model.json").read_text())
        if meta.get("format") != cls.FORMAT:
            raise ValueError(f"{directory}: not a {cls.FORMAT} artifact")
        self = cls(**meta["config"])
        arrays = np.load(directory / "model.npz", allow_pickle=False)
        for key in ("user_factors", "item_factors", "popularity"):
            setattr(self, key, arrays[key])
        self.user_ids = np.asarray(meta["user_ids"], dtype=object)
        self.item_ids = np.asarray(meta["item_ids"], dtype=object)
        self._uidx = {u: j for j, u in enumerate(self.user_ids)}
        return self


def tune_als(p: ALSParams, fit_part: pd.DataFrame, validation: pd.DataFrame, k: int
             ) -> tuple[dict, list[dict]]:
    """Grid over factors × regularization, scored by precision@k on the validation slice.

    Returns the best configuration (ready for ``ALS(**best)``) and every grid row.
    """
    from pipeline.metrics import per_user

    users = sorted(validation[C.user].unique())
    exclude = fit_part.groupby(C.user)[C.item].agg(set).to_dict()
    rows = []
    for f, reg in product(p.factors, p.regularization):
        cfg = {"factors": f, "regularization": reg, "alpha": p.alpha, "iterations": p.iterations,
               "seed": p.seed, "num_threads": p.num_threads}
        recs = ALS(**cfg).fit(fit_part).recommend(users, k, exclude)
        prec = float(per_user(recs, validation, k)["precision"].mean()) if users else 0.0
        rows.append({**cfg, f"val_precision@{k}": prec})
        log.info("ALS %s → validation precision@%d %.4f", cfg, k, prec)
    best = max(rows, key=lambda r: r[f"val_precision@{k}"])
    return {key: v for key, v in best.items() if not key.startswith("val_")}, rows
