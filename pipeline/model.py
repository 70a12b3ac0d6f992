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
from pipeline.ranking import recommend_batched

FORMAT = "recflow-lightfm-v1"
ARRAYS = ("user_emb", "user_bias", "item_repr", "item_bias", "popularity")


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


class LightFMRecommender:
    """fit → recommend → save/load; unknown users fall back to features, then popularity."""

    def __init__(self, params: ModelParams) -> None:
        self.params = params
        self.fitted = False

    # ---- training -------------------------------------------------------------------------
    def fit(self, train: pd.DataFrame, user_tokens: dict[str, list[str]] | None = None,
            item_tokens: dict[str, list[str]] | None = None,
            on_epoch: Callable[[int, LightFMRecommender], bool | None] | None = None
            ) -> LightFMRecommender:
        """``train``: (user_id, item_id, confidence) positives; confidence → sample_weight.

        ``on_epoch(epoch, model)`` runs after every epoch; returning True stops training.
        With ``num_threads: 1`` and a fixed seed, training is deterministic.
        """
        self._fit(train, user_tokens or {}, item_tokens or {}, on_epoch)
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
        pop = train.groupby(C.item)[C.user].nunique()
        self.popularity = pop.reindex(self.item_ids).fillna(0).to_numpy(dtype=np.float32)
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
    @property
    def item_index(self) -> dict[str, int]:
        """item_id → column of the score matrix (built once)."""
        if getattr(self, "_iidx_cache", None) is None:
            self._iidx_cache = {it: j for j, it in enumerate(self.item_ids)}
        return self._iidx_cache

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

    def scores(self, users: list[str], user_tokens: dict[str, list[str]] | None = None) -> np.ndarray:
        """(len(users) × n_items) scores; users without signal get the popularity order."""
        reps, has = self.user_vectors(users, user_tokens)
        s = reps @ self.item_repr.T + self.item_bias[None, :]
        if not has.all():
            s[~has] = self.popularity[None, :]
        return s

    def recommend(self, users: list[str], k: int, exclude: dict[str, set[str]] | None = None,
                  user_tokens: dict[str, list[str]] | None = None, batch: int = 2048) -> pd.DataFrame:
        return recommend_batched(self, users, k, exclude, user_tokens, batch)

    def state(self) -> dict[str, np.ndarray]:
        """A copy of the scoring arrays (to keep the best epoch while training goes on)."""
        return {k: getattr(self, k).copy() for k in ARRAYS}

    def restore(self, state: dict[str, np.ndarray]) -> None:
        for k, v in state.items():
            setattr(self, k, v)

    # ---- persistence ----------------------------------------------------------------------
    def save(self, directory: Path, extra: dict | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(directory / "model.npz", **{k: getattr(self, k) for k in ARRAYS})
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
        for k in ARRAYS:
            setattr(self, k, arrays[k])
        self.user_ids = np.asarray(meta["user_ids"], dtype=object)
        self.item_ids = np.asarray(meta["item_ids"], dtype=object)
        self.user_vocab, self.item_vocab = meta["user_vocab"], meta["item_vocab"]
        self._uidx = {u: j for j, u in enumerate(self.user_ids)}
        self._utok = {t: j for j, t in enumerate(self.user_vocab)}
        self.meta = meta
        self.fitted = True
        return self


def fit_early_stopping(params: ModelParams, train: pd.DataFrame, validation: pd.DataFrame,
                       user_tokens: dict[str, list[str]] | None, item_tokens: dict[str, list[str]] | None,
                       k: int, full_train: pd.DataFrame | None = None,
                       on_epoch: Callable[[dict], None] | None = None
                       ) -> tuple[LightFMRecommender, list[dict], int]:
    """Fit on ``train`` one epoch at a time, score precision@k on ``validation`` after each,
    stop after ``params.patience`` epochs without improvement and keep the best epoch.

    With ``params.refit`` and ``full_train`` (train + validation), a fresh model is then fitted
    on ``full_train`` for the best epoch count, so the validation interactions are not lost.
    Returns (model, per-epoch curve rows {epoch, k, val_precision, seconds}, best epoch).
    """
    import time

    from pipeline.metrics import per_user

    users = sorted(set(validation[C.user]) & set(train[C.user].astype(str)))
    validation = validation[validation[C.user].isin(users)]   # users the fit part knows
    exclude = train.groupby(C.user)[C.item].agg(set).to_dict()
    curve: list[dict] = []
    best: dict = {"epoch": 0, "precision": -1.0, "state": None}
    t0 = time.perf_counter()

    def step(epoch: int, model: LightFMRecommender) -> bool:
        recs = model.recommend(users, k, exclude, user_tokens)
        prec = float(per_user(recs, validation, k)["precision"].mean()) if users else 0.0
        row = {"epoch": epoch + 1, "k": k, "val_precision": prec,
               "seconds": round(time.perf_counter() - t0, 3)}
        curve.append(row)
        if on_epoch:
            on_epoch(row)
        if prec > best["precision"]:
            best.update(epoch=epoch + 1, precision=prec, state=model.state())
        return epoch + 1 - best["epoch"] >= params.patience

    model = LightFMRecommender(params).fit(train, user_tokens, item_tokens, step)
    if params.refit and full_train is not None:
        refit = params.model_copy(update={"epochs": best["epoch"]})
        model = LightFMRecommender(refit).fit(full_train, user_tokens, item_tokens)
        model.params = params
    else:
        model.restore(best["state"])
    return model, curve, best["epoch"]
