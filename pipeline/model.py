"""LightFM hybrid (identity + feature tokens) with WARP loss, saved as arrays + JSON.

The artifact holds no pickle: ``model.npz`` (user embeddings/biases over the user vocabulary,
precomputed item representations and biases, popularity fallback) and ``model.json``
(vocabularies, ids, params). Scoring is a matrix product, so a model trained here can be
served or re-scored anywhere without LightFM and without unpickling code.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pipeline.columns import Columns as C
from pipeline.config import ModelParams
from pipeline.ranking import top_k

FORMAT = "recflow-lightfm-v1"


def _features(ids: list[str], id_index: dict[str, int], tokens: dict[str, list[str]],
              tok_index: dict[str, int], with_identity: bool) -> sp.csr_matrix:
    """Row-normalised (len(ids) × (|identity| + |tokens|)) matrix, LightFM's feature layout."""
    n_id = len(id_index)
    rows, cols = [], []
    for r, e in enumerate(ids):
        if with_identity and e in id_index:
            rows.append(r)
            cols.append(id_index[e])
        for t in tokens.get(e, ()):
            j = tok_index.get(t)
            if j is not None:
                rows.append(r)
                cols.append(n_id + j)
    m = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)),
                      shape=(len(ids), n_id + len(tok_index)))
    norm = np.asarray(m.sum(axis=1)).ravel()
    norm[norm == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / norm) @ m, dtype=np.float32)


class LightFMRecommender:
    """fit → recommend → save/load; unknown users fall back to features, then popularity."""

    def __init__(self, params: ModelParams) -> None:
        self.params = params
        self.fitted = False

    # ---- training -------------------------------------------------------------------------
    def fit(self, train: pd.DataFrame, user_tokens: dict[str, list[str]],
            item_tokens: dict[str, list[str]],
            on_epoch: Callable[[int, LightFMRecommender], None] | None = None) -> LightFMRecommender:
        """``train``: (user_id, item_id, confidence) positives; confidence → sample_weight."""
        self._fit(train, user_tokens, item_tokens, on_epoch)
        self.fitted = True
        return self

    def _fit(self, train, user_tokens, item_tokens, on_epoch) -> None:
        from lightfm import LightFM

        p = self.params
        self.user_ids = np.asarray(sorted(train[C.user].astype(str).unique()), dtype=object)
        self.item_ids = np.asarray(sorted(train[C.item].astype(str).unique()), dtype=object)
        self.user_vocab = sorted({t for u in self.user_ids for t in user_tokens.get(u, ())})
        self.item_vocab = sorted({t for i in self.item_ids for t in item_tokens.get(i, ())})
        self._uidx = {u: j for j, u in enumerate(self.user_ids)}
        iidx = {i: j for j, i in enumerate(self.item_ids)}
        self._utok = {t: j for j, t in enumerate(self.user_vocab)}
        itok = {t: j for j, t in enumerate(self.item_vocab)}
        uf = _features(list(self.user_ids), self._uidx, user_tokens, self._utok, True)
        itf = _features(list(self.item_ids), iidx, item_tokens, itok, True)
        r = train[C.user].astype(str).map(self._uidx).to_numpy()
        c = train[C.item].astype(str).map(iidx).to_numpy()
        w = np.array(train[C.confidence].to_numpy(), dtype=np.float32)  # writable copy
        shape = (len(self.user_ids), len(self.item_ids))
        inter = sp.coo_matrix((np.ones_like(w), (r, c)), shape=shape)
        weights = sp.coo_matrix((w, (r, c)), shape=shape)
        self._lfm = LightFM(no_components=p.no_components, loss=p.loss, learning_rate=p.learning_rate,
                            item_alpha=p.item_alpha, user_alpha=p.user_alpha,
                            max_sampled=p.max_sampled, random_state=p.seed)
        pop = train.groupby(C.item)[C.user].nunique()
        self.popularity = pop.reindex(self.item_ids).fillna(0).to_numpy(dtype=np.float32)
        for epoch in range(p.epochs):
            self._lfm.fit_partial(inter, user_features=uf, item_features=itf, sample_weight=weights,
                                  epochs=1, num_threads=p.num_threads)
            self._snapshot(itf)
            if on_epoch:
                on_epoch(epoch, self)

    def _snapshot(self, item_features: sp.csr_matrix) -> None:
        m = self._lfm
        self.user_emb = np.asarray(m.user_embeddings, dtype=np.float32)
        self.user_bias = np.asarray(m.user_biases, dtype=np.float32)
        self.item_repr = np.asarray(item_features @ m.item_embeddings, dtype=np.float32)
        self.item_bias = np.asarray(item_features @ m.item_biases, dtype=np.float32)
        self._uidx = {u: j for j, u in enumerate(self.user_ids)}
        self._utok = {t: j for j, t in enumerate(self.user_vocab)}

    # ---- scoring --------------------------------------------------------------------------
    @property
    def item_index(self) -> dict[str, int]:
        """item_id → column of the score matrix (built once)."""
        if getattr(self, "_iidx_cache", None) is None:
            self._iidx_cache = {it: j for j, it in enumerate(self.item_ids)}
        return self._iidx_cache

    def known(self, user: str) -> bool:
        return user in self._uidx

    def _feature_indices(self, user: str, user_tokens: dict[str, list[str]]) -> list[int]:
        n_id = len(self._uidx)
        cols = [self._uidx[user]] if user in self._uidx else []
        cols += [n_id + self._utok[t] for t in user_tokens.get(user, ()) if t in self._utok]
        return cols

    def user_vectors(self, users: list[str], user_tokens: dict[str, list[str]] | None) -> tuple[np.ndarray, np.ndarray]:
        """(representations, has_signal): users with neither identity nor tokens get no signal.
        A representation is the mean of the user's feature embeddings (row-normalised
        features, as in training)."""
        tokens = user_tokens or {}
        if len(users) <= 64:  # serving: a gather beats building a sparse matrix
            reps = np.zeros((len(users), self.user_emb.shape[1]), dtype=np.float32)
            has = np.zeros(len(users), dtype=bool)
            for r, u in enumerate(users):
                cols = self._feature_indices(u, tokens)
                if cols:
                    reps[r] = self.user_emb[cols].mean(axis=0)
                    has[r] = True
            return reps, has
        f = _features(users, self._uidx, tokens, self._utok, True)
        has = np.asarray(f.getnnz(axis=1) > 0)
        return np.asarray(f @ self.user_emb, dtype=np.float32), has

    def scores(self, users: list[str], user_tokens: dict[str, list[str]] | None = None) -> np.ndarray:
        """(len(users) × n_items) scores; users without signal get the popularity order."""
        reps, has = self.user_vectors(users, user_tokens)
        s = reps @ self.item_repr.T + self.item_bias[None, :]
        if not has.all():
            s[~has] = self.popularity[None, :]
        return s

    def recommend(self, users: list[str], k: int, exclude: dict[str, set[str]] | None = None,
                  user_tokens: dict[str, list[str]] | None = None, batch: int = 2048) -> pd.DataFrame:
        index = self.item_index
        parts = [top_k(users[s:s + batch], self.item_ids,
                       self.scores(users[s:s + batch], user_tokens), k, exclude, index)
                 for s in range(0, len(users), batch)]
        return pd.concat(parts, ignore_index=True) if parts else top_k([], self.item_ids, np.zeros((0, 0)), k)

    # ---- persistence ----------------------------------------------------------------------
    def save(self, directory: Path, extra: dict | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(directory / "model.npz", user_emb=self.user_emb, user_bias=self.user_bias,
                 item_repr=self.item_repr, item_bias=self.item_bias, popularity=self.popularity)
        meta = {
            "format": FORMAT,
            "params": self.params.model_dump(mode="json"),
            "user_ids": list(self.user_ids),
            "item_ids": list(self.item_ids),
            "user_vocab": self.user_vocab,
            "item_vocab": self.item_vocab,
            **(extra or {}),
        }
        (directory / "model.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, directory: Path) -> LightFMRecommender:
        meta = json.loads((directory / "model.json").read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{directory}: not a {FORMAT} model artifact")
        self = cls(ModelParams(**meta["params"]))
        arrays = np.load(directory / "model.npz", allow_pickle=False)
        for k in ("user_emb", "user_bias", "item_repr", "item_bias", "popularity"):
            setattr(self, k, arrays[k])
        self.user_ids = np.asarray(meta["user_ids"], dtype=object)
        self.item_ids = np.asarray(meta["item_ids"], dtype=object)
        self.user_vocab, self.item_vocab = meta["user_vocab"], meta["item_vocab"]
        self._uidx = {u: j for j, u in enumerate(self.user_ids)}
        self._utok = {t: j for j, t in enumerate(self.user_vocab)}
        self.meta = meta
        self.fitted = True
        return self
