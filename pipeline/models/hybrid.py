"""LightFM hybrid (identity + feature tokens) with WARP loss, saved as arrays + JSON.

The artifact holds no pickle: ``model.npz`` (user embeddings/biases over the user vocabulary,
precomputed item representations and biases, popularity fallback) and ``model.json``
(vocabularies, ids, params). Scoring is a matrix product, so a model trained here can be
served or re-scored anywhere without LightFM and without unpickling code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pipeline.columns import Columns as C
from pipeline.config import ModelParams
from pipeline.models.base import History, RecommenderBase, TokenMap
from pipeline.models.popularity import catalogue, popularity_scores


def _features(ids: list[str], id_index: dict[str, int], tokens: dict[str, list[str]],
              tok_index: dict[str, int], with_identity: bool,
              token_weight: float = 1.0) -> sp.csr_matrix:
    """(len(ids) × (|identity| + |tokens|)) matrix, LightFM's feature layout, rows summing to 1.

    The identity feature weighs 1 and a row's tokens ``token_weight`` together, before the row
    is normalised: a small ``token_weight`` keeps known users/items close to pure collaborative
    filtering while entities without identity (new users) still get a features-only vector.
    """
    n_id = len(id_index)
    rows, cols, vals = [], [], []
    for r, e in enumerate(ids):
        if with_identity and e in id_index:
            rows.append(r)
            cols.append(id_index[e])
            vals.append(1.0)
        toks = [tok_index[t] for t in tokens.get(e, ()) if t in tok_index]
        for j in toks:
            rows.append(r)
            cols.append(n_id + j)
            vals.append(token_weight / len(toks))
    m = sp.csr_matrix((np.asarray(vals, dtype=np.float32), (rows, cols)),
                      shape=(len(ids), n_id + len(tok_index)))
    norm = np.asarray(m.sum(axis=1)).ravel()
    norm[norm == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / norm) @ m, dtype=np.float32)


class LightFMRecommender(RecommenderBase):
    """LightFM hybrid; unknown users fall back to their feature tokens, then popularity."""

    FORMAT = "recflow-lightfm-v1"
    ARRAYS = ("user_emb", "user_bias", "item_repr", "item_bias", "popularity")

    def __init__(self, params: ModelParams) -> None:
        super().__init__()
        self.params = params

    def config(self) -> dict:
        return self.params.model_dump(mode="json")

    @classmethod
    def from_config(cls, config: dict) -> Self:
        return cls(ModelParams(**config))

    # ---- training -------------------------------------------------------------------------
    def _fit(self, train: pd.DataFrame, user_tokens: TokenMap, item_tokens: TokenMap,
             on_epoch: Callable[[int, LightFMRecommender], bool | None] | None = None,
             **kw: Any) -> None:
        """``train``: (user_id, item_id, confidence) positives; confidence → sample_weight.

        ``on_epoch(epoch, model)`` runs after every epoch; returning True stops training.
        With ``num_threads: 1`` and a fixed seed, training is deterministic.
        """
        from lightfm import LightFM

        p = self.params
        self.user_ids = catalogue(train, C.user)
        self.item_ids = catalogue(train, C.item)
        self.user_vocab = sorted({t for u in self.user_ids for t in user_tokens.get(u, ())})
        self.item_vocab = sorted({t for i in self.item_ids for t in item_tokens.get(i, ())})
        self._uidx = {u: j for j, u in enumerate(self.user_ids)}
        iidx = {i: j for j, i in enumerate(self.item_ids)}
        self._utok = {t: j for j, t in enumerate(self.user_vocab)}
        itok = {t: j for j, t in enumerate(self.item_vocab)}
        uf = _features(list(self.user_ids), self._uidx, user_tokens, self._utok, True,
                       p.token_weight)
        itf = _features(list(self.item_ids), iidx, item_tokens, itok, True, p.token_weight)
        r = train[C.user].astype(str).map(self._uidx).to_numpy()
        c = train[C.item].astype(str).map(iidx).to_numpy()
        w = (np.array(train[C.confidence].to_numpy(), dtype=np.float32)  # writable copy
             if C.confidence in train else np.ones(len(train), dtype=np.float32))
        shape = (len(self.user_ids), len(self.item_ids))
        inter = sp.coo_matrix((np.ones_like(w), (r, c)), shape=shape)
        weights = sp.coo_matrix((w, (r, c)), shape=shape)
        # ``ensemble`` members differ only in their seed and train in lockstep, so early
        # stopping and refit see one model; ``_snapshot`` folds them into one factor model.
        self._members = [
            LightFM(no_components=p.no_components, loss=p.loss, learning_rate=p.learning_rate,
                    learning_schedule=p.learning_schedule,
                    item_alpha=p.item_alpha, user_alpha=p.user_alpha,
                    max_sampled=p.max_sampled, random_state=p.seed + j)
            for j in range(p.ensemble)]
        self.popularity = popularity_scores(train, self.item_ids)
        for epoch in range(p.epochs):
            for m in self._members:
                m.fit_partial(inter, user_features=uf, item_features=itf, sample_weight=weights,
                              epochs=1, num_threads=p.num_threads)
            self._snapshot(itf)
            self.epochs_trained = epoch + 1
            if on_epoch and on_epoch(epoch, self):
                break

    def _snapshot(self, item_features: sp.csr_matrix) -> None:
        """Fold the members into one factor model: the mean of N dot products u_n·i_n equals
        [u_1 … u_N]/N · [i_1 … i_N], so user rows (identity and token rows alike) are
        concatenated and divided by N, item representations concatenated, biases averaged.
        Scoring, serving and the artifact stay those of a single model (just wider)."""
        ms, n = self._members, len(self._members)
        self.user_emb = np.hstack([m.user_embeddings for m in ms]).astype(np.float32) / n
        self.user_bias = np.mean([m.user_biases for m in ms], axis=0).astype(np.float32)
        self.item_repr = np.hstack([item_features @ m.item_embeddings for m in ms]
                                   ).astype(np.float32)
        self.item_bias = np.mean([item_features @ m.item_biases for m in ms], axis=0
                                 ).astype(np.float32)
        self._uidx = {u: j for j, u in enumerate(self.user_ids)}
        self._utok = {t: j for j, t in enumerate(self.user_vocab)}

    # ---- scoring --------------------------------------------------------------------------
    def known(self, user: str) -> bool:
        return user in self._uidx

    def _user_vectors_small(self, users: list[str], tokens: dict[str, list[str]]
                            ) -> tuple[np.ndarray, np.ndarray]:
        n_id, tw = len(self._uidx), self.params.token_weight
        reps = np.zeros((len(users), self.user_emb.shape[1]), dtype=np.float32)
        has = np.zeros(len(users), dtype=bool)
        for r, u in enumerate(users):
            toks = [n_id + self._utok[t] for t in tokens.get(u, ()) if t in self._utok]
            ident = self._uidx.get(u)
            cols = ([ident] if ident is not None else []) + toks
            w = ([1.0] if ident is not None else []) + [tw / max(1, len(toks))] * len(toks)
            total = sum(w)
            if cols and total > 0:
                reps[r] = (np.asarray(w, dtype=np.float32) / total) @ self.user_emb[cols]
                has[r] = True
        return reps, has

    def user_vectors(self, users: list[str], user_tokens: dict[str, list[str]] | None) -> tuple[np.ndarray, np.ndarray]:
        """(representations, has_signal): users with neither identity nor tokens get no signal.
        Same weighting as ``_features`` (identity 1, tokens ``token_weight`` together)."""
        tokens = user_tokens or {}
        if len(users) <= 64:  # serving: a gather beats building a sparse matrix
            return self._user_vectors_small(users, tokens)
        f = _features(users, self._uidx, tokens, self._utok, True, self.params.token_weight)
        has = np.asarray(f.getnnz(axis=1) > 0)
        return np.asarray(f @ self.user_emb, dtype=np.float32), has

    def scores(self, users: list[str], user_tokens: TokenMap | None = None,
               history: History | None = None) -> np.ndarray:
        """(len(users) × n_items) scores; users without signal get the popularity order."""
        reps, has = self.user_vectors(users, user_tokens)
        s = reps @ self.item_repr.T
        s += self.item_bias[None, :]             # in place: no second (users × items) matrix
        if not has.all():
            s[~has] = self.popularity[None, :]
        return s

    # ---- persistence ----------------------------------------------------------------------
    def _meta(self) -> dict:
        return {"user_ids": list(self.user_ids), **super()._meta(),
                "user_vocab": self.user_vocab, "item_vocab": self.item_vocab}

    def _restore(self, meta: dict) -> None:
        super()._restore(meta)
        self.user_ids = np.asarray(meta["user_ids"], dtype=object)
        self.user_vocab, self.item_vocab = meta["user_vocab"], meta["item_vocab"]
        self._uidx = {u: j for j, u in enumerate(self.user_ids)}
        self._utok = {t: j for j, t in enumerate(self.user_vocab)}
