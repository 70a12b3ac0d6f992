"""LightFM hybrid (identity + feature tokens) with WARP loss, saved as arrays + JSON.

The artifact holds no pickle: ``model.npz`` (user embeddings/biases over the user vocabulary,
precomputed item representations and biases, popularity fallback) and ``model.json``
(vocabularies, ids, params). Scoring is a matrix product, so a model trained here can be
served or re-scored anywhere without LightFM and without unpickling code.

Cold start on both sides: a catalogue item with feature tokens but no interaction (``cold_items``)
is scored from its tokens alone, so a new item can be recommended before anyone touched it;
a user's recent items (``history``) become session tokens (:func:`tokens.session_tokens`) in
training as of the cutoff and at request time alike (``session_items``).
"""

from __future__ import annotations

import time

from collections.abc import Callable
from typing import Any, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pipeline.columns import Columns as C
from pipeline.config import SELECTION_KEYS, ModelParams
from pipeline.models.base import History, RecommenderBase, TokenMap
from pipeline.models.popularity import catalogue, popularity_scores
from pipeline.models.tokens import (
    SESSION_PREFIX,
    merge,
    session_token_table,
    session_tokens,
    short_history_tokens,
)


def _token_weights(toks: list[str], token_weight: float, session_weight: float) -> list[float]:
    """Each token's weight: the session tokens (``recent_…``) share ``session_weight``, the
    other tokens ``token_weight`` (a repeated token is counted each time)."""
    n_s = sum(t.startswith(SESSION_PREFIX) for t in toks)
    n_o = len(toks) - n_s
    return [session_weight / n_s if t.startswith(SESSION_PREFIX) else token_weight / n_o
            for t in toks]


def _features(ids: list[str], id_index: dict[str, int], tokens: dict[str, list[str]],
              tok_index: dict[str, int], with_identity: bool,
              token_weight: float = 1.0, session_weight: float = 1.0) -> sp.csr_matrix:
    """(len(ids) × (|identity| + |tokens|)) matrix, LightFM's feature layout, rows summing to 1.

    The identity feature weighs 1, a row's feature tokens ``token_weight`` together and its
    session tokens ``session_weight`` together, before the row is normalised: a small
    ``token_weight`` keeps known users/items close to pure collaborative filtering while
    entities without identity (new users) still get a features-only vector.
    """
    n_id = len(id_index)
    rows, cols, vals = [], [], []
    for r, e in enumerate(ids):
        if with_identity and e in id_index:
            rows.append(r)
            cols.append(id_index[e])
            vals.append(1.0)
        toks = [t for t in tokens.get(e, ()) if t in tok_index]
        for t, w in zip(toks, _token_weights(toks, token_weight, session_weight), strict=True):
            rows.append(r)
            cols.append(n_id + tok_index[t])
            vals.append(w)
    m = sp.csr_matrix((np.asarray(vals, dtype=np.float32), (rows, cols)),
                      shape=(len(ids), n_id + len(tok_index)))
    norm = np.asarray(m.sum(axis=1)).ravel()
    norm[norm == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / norm) @ m, dtype=np.float32)


class _Positives:
    """The positives WARP sees each epoch, two ways for confidence to steer it (chosen on
    validation: ``model.confidence``):

    - ``weight``: every pair once, its weight as LightFM's ``sample_weight`` (the gradient
      step of that positive is scaled; adagrad's per-parameter step sizes absorb part of it);
    - ``sample``: as many draws as pairs, with replacement, in proportion to the weight
      (seeded, a new draw per epoch): a strong pair is visited more often, a weak one may be
      skipped in an epoch, and every step has the same size.
    """

    def __init__(self, rows: np.ndarray, cols: np.ndarray, weight: np.ndarray,
                 shape: tuple[int, int], mode: str, seed: int) -> None:
        self.rows, self.cols, self.weight, self.shape, self.mode = rows, cols, weight, shape, mode
        self._rng = np.random.default_rng(seed)
        self._once = (sp.coo_matrix((np.ones_like(weight), (rows, cols)), shape=shape),
                      sp.coo_matrix((weight, (rows, cols)), shape=shape))

    def epoch(self) -> tuple[sp.coo_matrix, sp.coo_matrix | None]:
        """(interactions, sample_weight) for one epoch."""
        if self.mode != "sample" or len(self.weight) == 0:
            return self._once
        cum = np.cumsum(self.weight, dtype=np.float64)
        pick = np.sort(np.searchsorted(cum, self._rng.random(len(cum)) * cum[-1], side="right"))
        pick = np.minimum(pick, len(cum) - 1)
        ones = np.ones(len(pick), dtype=np.float32)
        return sp.coo_matrix((ones, (self.rows[pick], self.cols[pick])), shape=self.shape), None


class _IdentityDropout:
    """Each epoch, a seeded ``share`` of the warm items that have tokens trains without its
    identity column: its row is then its token part alone (``token_weight / (1 +
    token_weight)``), exactly how a cold item is scored, so the item tokens must learn to
    stand for an item by themselves. ``share`` 0: the same matrix every epoch."""

    def __init__(self, features: sp.csr_matrix, n_items: int, item_tokens: TokenMap,
                 items: list[str], share: float, seed: int) -> None:
        self.features, self.share = features, share
        self._rng = np.random.default_rng(seed + 104729)
        self._coo = features.tocoo()
        self._ident = self._coo.col < n_items
        self._can = np.flatnonzero([bool(item_tokens.get(i)) for i in items])

    def epoch(self) -> sp.csr_matrix:
        if self.share <= 0 or not len(self._can):
            return self.features
        drop = np.zeros(self.features.shape[0], dtype=bool)
        drop[self._rng.choice(self._can, int(round(self.share * len(self._can))),
                              replace=False)] = True
        coo = self._coo
        keep = ~(self._ident & drop[coo.row])
        return sp.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])),
                             shape=self.features.shape, dtype=np.float32)


class LightFMRecommender(RecommenderBase):
    """LightFM hybrid; unknown users fall back to their feature tokens, then popularity."""

    FORMAT = "recflow-lightfm-v1"
    ARRAYS = ("user_emb", "user_bias", "item_repr", "item_bias", "popularity")
    OPTIONAL_ARRAYS = ("item_token_emb",)  # new items from their tokens (similar items)

    def __init__(self, params: ModelParams) -> None:
        super().__init__()
        self.params = params

    def config(self) -> dict:
        """The LightFM configuration (without ``model.families`` / ``model.search``, which
        choose between configurations: a model is one of them)."""
        return self.params.model_dump(mode="json", exclude=set(SELECTION_KEYS))

    @classmethod
    def from_config(cls, config: dict) -> Self:
        return cls(ModelParams(**config))

    # ---- training -------------------------------------------------------------------------
    def _fit(self, train: pd.DataFrame, user_tokens: TokenMap, item_tokens: TokenMap,
             on_epoch: Callable[[int, LightFMRecommender], bool | None] | None = None,
             history: History | None = None, **kw: Any) -> None:
        """``train``: (user_id, item_id, confidence) positives; ``confidence ** confidence_power``
        steers WARP as ``model.confidence`` says (:class:`_Positives`).

        ``history``: each user's recent items as of the cutoff (session tokens).
        ``on_epoch(epoch, model)`` runs after every epoch; returning True stops training.
        With ``num_threads: 1`` and a fixed seed, training is deterministic.
        """
        from lightfm import LightFM

        p = self.params
        self.user_ids = catalogue(train, C.user)
        warm = catalogue(train, C.item)
        known = set(warm)
        cold = (np.asarray(sorted(i for i, t in item_tokens.items() if t and i not in known),
                           dtype=object) if p.cold_items else np.asarray([], dtype=object))
        self.item_ids = np.concatenate([warm, cold]) if len(cold) else warm
        self.item_token_map = ({str(i): list(item_tokens.get(i, ())) for i in self.item_ids}
                               if p.session_items else {})
        # users as their tokens only needs session tokens; without a history, keep identity
        self.uses_identity = bool(p.user_identity or not history or not p.session_items)
        short = self._short_users(train, user_tokens or {}, history)
        user_tokens = self._with_session(user_tokens, history)
        self.user_vocab = sorted({t for u in self.user_ids for t in user_tokens.get(u, ())}
                                 | {t for toks in short[0].values() for t in toks})
        self.item_vocab = sorted({t for i in self.item_ids for t in item_tokens.get(i, ())})
        self._uidx = {u: j for j, u in enumerate(self.user_ids)}
        iidx = {i: j for j, i in enumerate(warm)}
        self._utok = {t: j for j, t in enumerate(self.user_vocab)}
        itok = {t: j for j, t in enumerate(self.item_vocab)}
        uf = _features(list(self.user_ids), self._uidx, user_tokens, self._utok, self.uses_identity,
                       p.token_weight, p.session_weight)
        itf = _features(list(warm), iidx, item_tokens, itok, True, p.token_weight)
        # cold items: their tokens only (the identity columns stay empty), weighted as the
        # token part of a warm item's row, so a cold item is "a warm item with these tokens
        # and an unknown identity", not one whose tokens count twice
        self._cold_f = (_features(list(cold), iidx, item_tokens, itok, False)
                        * (p.token_weight / (1.0 + p.token_weight)) if len(cold) else None)
        r = train[C.user].astype(str).map(self._uidx).to_numpy()
        c = train[C.item].astype(str).map(iidx).to_numpy()
        w = (np.array(train[C.confidence].to_numpy(), dtype=np.float32)  # writable copy
             if C.confidence in train else np.ones(len(train), dtype=np.float32))
        n_rows = len(self.user_ids)
        if short[0]:
            # the short-history copies: extra feature rows (tokens only) and their positives,
            # in the same columns, so the artifact's user rows stay those of the real users
            ids = list(short[0])
            uf = sp.vstack([uf, _features(ids, self._uidx, short[0], self._utok, False,
                                          p.token_weight, p.session_weight)]).tocsr()
            pick = short[1]
            r = np.concatenate([r, n_rows + pick[0]])
            c = np.concatenate([c, c[pick[1]]])
            w = np.concatenate([w, w[pick[1]]])
            n_rows += len(ids)
        w **= np.float32(p.confidence_power)
        shape = (n_rows, len(warm))   # cold items are not in the interactions
        pairs = _Positives(r, c, w, shape, p.confidence, p.seed)
        dropout = _IdentityDropout(itf, len(warm), item_tokens, list(warm),
                                   p.item_identity_dropout, p.seed)
        # ``ensemble`` members differ only in their seed and train in lockstep, so early
        # stopping and refit see one model; ``_snapshot`` folds them into one factor model.
        self._members = [
            LightFM(no_components=p.no_components, loss=p.loss, learning_rate=p.learning_rate,
                    learning_schedule=p.learning_schedule,
                    item_alpha=p.item_alpha, user_alpha=p.user_alpha,
                    max_sampled=p.max_sampled, random_state=p.seed + j)
            for j in range(p.ensemble)]
        self.popularity = popularity_scores(train, self.item_ids)
        self.learn_seconds = 0.0   # inside LightFM only: the benchmark's "bare fit" share
        for epoch in range(p.epochs):
            inter, weights = pairs.epoch()
            itf_epoch = dropout.epoch()
            t = time.perf_counter()
            for m in self._members:
                m.fit_partial(inter, user_features=uf, item_features=itf_epoch,
                              sample_weight=weights,
                              epochs=1, num_threads=p.num_threads)
            self.learn_seconds += time.perf_counter() - t
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
        if self._cold_f is not None:
            item_features = sp.vstack([item_features, self._cold_f]).tocsr()
        self.user_emb = np.hstack([m.user_embeddings for m in ms]).astype(np.float32) / n
        self.user_bias = np.mean([m.user_biases for m in ms], axis=0).astype(np.float32)
        self.item_repr = np.hstack([item_features @ m.item_embeddings for m in ms]
                                   ).astype(np.float32)
        self.item_bias = np.mean([item_features @ m.item_biases for m in ms], axis=0
                                 ).astype(np.float32)
        n_items = len(self.item_ids)  # item feature columns: identities, then tokens
        self.item_token_emb = np.hstack([m.item_embeddings[n_items:] for m in ms]
                                        ).astype(np.float32)
        self._uidx = {u: j for j, u in enumerate(self.user_ids)}
        self._utok = {t: j for j, t in enumerate(self.user_vocab)}

    def _short_users(self, train: pd.DataFrame, user_tokens: TokenMap, history: History | None
                     ) -> tuple[dict[str, list[str]], np.ndarray]:
        """``model.short_history_share`` of the users with a longer history, each as a copy
        that has done only its 0..``short_history_n`` oldest recent items (seeded; 0: a new
        user with attributes only, the ``cold`` segment): tokens
        (:func:`tokens.short_history_tokens` + session tokens, no identity) and, as (copy
        index, row of ``train``), the rest of the user's positives, which it must rank from
        that short history — what a cold user who revealed a few events asks of the model
        (their behaviour tokens as of ``short_history_n`` events, as ``evaluate.reveal_n``).
        ({}, empty) when off or without session tokens."""
        p = self.params
        none = ({}, np.zeros((2, 0), dtype=np.int64))
        if p.short_history_share <= 0 or not history or not p.session_items:
            return none
        rng = np.random.default_rng(p.seed + 7919)
        users = [u for u in self.user_ids if len(history.get(u, ())) > 1]
        users = [users[j] for j in np.sort(rng.choice(len(users), int(round(
            p.short_history_share * len(users))), replace=False))] if users else []
        rows = train.groupby(train[C.user].astype(str), sort=False).indices
        items = train[C.item].astype(str).to_numpy()
        which = tuple(self.params.user_features)
        toks: dict[str, list[str]] = {}
        pick_u, pick_r = [], []
        for u in users:
            recent = list(history[u])
            n = int(rng.integers(0, min(p.short_history_n, len(recent) - 1) + 1))
            seen = recent[-n:] if n else []
            cut = set(seen)
            rest = [j for j in rows.get(u, ()) if items[j] not in cut]
            if not rest or not (seen or user_tokens.get(u)):
                continue
            key = f"\x00short:{u}"  # never a real id
            toks[key] = (short_history_tokens(user_tokens.get(u, ()), seen,
                                              self.item_token_map, which,
                                              p.short_history_n)
                         + session_tokens({u: seen}, self.item_token_map,
                                          p.session_items).get(u, []))
            pick_u += [len(toks) - 1] * len(rest)
            pick_r += rest
        return toks, np.asarray([pick_u, pick_r], dtype=np.int64).reshape(2, -1)

    # ---- scoring --------------------------------------------------------------------------
    def _with_session(self, user_tokens: TokenMap | None, history: History | None) -> TokenMap:
        """``user_tokens`` plus the session tokens of ``history`` (when configured)."""
        n = self.params.session_items
        if not history or not n:
            return user_tokens or {}
        return merge(user_tokens or {}, session_tokens(history, self.item_token_map, n))

    def known(self, user: str) -> bool:
        return user in self._uidx

    def _user_vectors_small(self, users: list[str], tokens: dict[str, list[str]]
                            ) -> tuple[np.ndarray, np.ndarray]:
        n_id, p = len(self._uidx), self.params
        reps = np.zeros((len(users), self.user_emb.shape[1]), dtype=np.float32)
        has = np.zeros(len(users), dtype=bool)
        for r, u in enumerate(users):
            names = [t for t in tokens.get(u, ()) if t in self._utok]
            toks = [n_id + self._utok[t] for t in names]
            ident = self._uidx.get(u) if self.uses_identity else None
            cols = ([ident] if ident is not None else []) + toks
            w = (([1.0] if ident is not None else [])
                 + _token_weights(names, p.token_weight, p.session_weight))
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
        return self._user_vectors_batch(users, tokens, None)

    def _user_vectors_batch(self, users: list[str], tokens: TokenMap, history: History | None
                            ) -> tuple[np.ndarray, np.ndarray]:
        """:func:`_features` of ``tokens`` plus the session tokens of ``history`` (as
        :meth:`_with_session` adds them) times the user embeddings, without a Python step per
        token: the same COO cells (token columns by a vocabulary lookup over the batch's
        flattened tokens, session cells from a per-item table of its session-token columns,
        repeated by recency), then the same scipy sum and normalisation, so the matrix is
        bit for bit the one ``_features`` builds and the export scores what it scored."""
        p, n_id = self.params, len(self._uidx)
        vocab, is_session, table = self._batch_tables()
        n_users = len(users)
        lists = [tokens.get(u, ()) for u in users]
        lens = np.fromiter(map(len, lists), dtype=np.int64, count=n_users)
        flat = [t for toks in lists for t in toks]
        tcol = vocab.get_indexer(flat) if flat else np.zeros(0, dtype=np.int64)
        trow = np.repeat(np.arange(n_users, dtype=np.int64), lens)
        ok = tcol >= 0
        rows, cols, mult = [trow[ok]], [tcol[ok]], [np.ones(int(ok.sum()), dtype=np.int64)]
        n_s = p.session_items
        if history and n_s:
            keys, ptr, scols = table
            recent = [list(history.get(u, ()))[:n_s] for u in users]
            hlens = np.fromiter(map(len, recent), dtype=np.int64, count=n_users)
            hflat = [it for h in recent for it in h]
            if hflat:
                key = keys.get_indexer(hflat)
                hrow = np.repeat(np.arange(n_users, dtype=np.int64), hlens)
                pos = np.arange(len(hflat)) - np.repeat(np.cumsum(hlens) - hlens, hlens)
                known = key >= 0
                key, hrow, rep = key[known], hrow[known], (n_s - pos)[known]
                width = ptr[key + 1] - ptr[key]
                at = (np.repeat(ptr[key] - (np.cumsum(width) - width), width)
                      + np.arange(int(width.sum())))
                rows.append(np.repeat(hrow, width))
                cols.append(scols[at])
                mult.append(np.repeat(rep, width))  # an item at recency r: its tokens n - r times
        r, c, m = np.concatenate(rows), np.concatenate(cols), np.concatenate(mult)
        sess = is_session[c]
        cnt_s = np.bincount(r, weights=m * sess, minlength=n_users)
        cnt_o = np.bincount(r, weights=m * ~sess, minlength=n_users)
        with np.errstate(divide="ignore", invalid="ignore"):
            w = np.where(sess, p.session_weight / cnt_s[r], p.token_weight / cnt_o[r])
        # each cell repeated as often as ``_features`` lists it (duplicates are summed in float32
        # there: n equal float32 values summed one by one, so the same sum here)
        r, c, w = np.repeat(r, m), np.repeat(c + n_id, m), np.repeat(w, m)
        if self.uses_identity:
            ident = np.fromiter((self._uidx.get(u, -1) for u in users), dtype=np.int64,
                                count=n_users)
            has_id = np.flatnonzero(ident >= 0)
            r = np.concatenate([has_id, r])
            c = np.concatenate([ident[has_id], c])
            w = np.concatenate([np.ones(len(has_id)), w])
        f = sp.csr_matrix((w.astype(np.float32), (r, c)), shape=(n_users, n_id + len(self._utok)))
        norm = np.asarray(f.sum(axis=1)).ravel()
        norm[norm == 0] = 1.0
        f = sp.csr_matrix(sp.diags(1.0 / norm) @ f, dtype=np.float32)
        has = np.asarray(f.getnnz(axis=1) > 0)
        return np.asarray(f @ self.user_emb, dtype=np.float32), has

    def _batch_tables(self) -> tuple[pd.Index, np.ndarray, tuple[pd.Index, np.ndarray, np.ndarray]]:
        """What :meth:`_user_vectors_batch` looks tokens up in, built once per model: the user
        vocabulary as an index, whether each token is a session token, and per item id the
        vocabulary columns of its session tokens (:func:`tokens.session_token_table`, those
        the vocabulary has; an id the item table lacks has at most ``recent_item=<id>``)."""
        cached = getattr(self, "_tables", None)
        if cached is not None and cached[0] is self._utok:
            return cached[1]
        vocab = pd.Index(self.user_vocab, dtype=object)
        is_session = np.fromiter((t.startswith(SESSION_PREFIX) for t in self.user_vocab),
                                 dtype=bool, count=len(self.user_vocab))
        tmap = getattr(self, "item_token_map", {}) or {}
        prefix = f"{SESSION_PREFIX}item="
        ids = list(tmap) + [t[len(prefix):] for t in self.user_vocab
                            if t.startswith(prefix) and t[len(prefix):] not in tmap]
        ptr, scols = session_token_table(ids, tmap, self._utok)
        out = (vocab, is_session, (pd.Index(ids, dtype=object), ptr, scols))
        self._tables = (self._utok, out)
        return out

    def scores(self, users: list[str], user_tokens: TokenMap | None = None,
               history: History | None = None) -> np.ndarray:
        """(len(users) × n_items) scores; users without signal get the popularity order."""
        if history:
            history = {u: history[u] for u in users if u in history}
        if len(users) > 64:  # a batch (export, evaluation): tokens looked up as arrays
            reps, has = self._user_vectors_batch(users, user_tokens or {}, history)
        else:
            reps, has = self.user_vectors(users, self._with_session(user_tokens, history))
        s = reps @ self.item_repr.T
        s += self.item_bias[None, :]             # in place: no second (users × items) matrix
        if not has.all():
            s[~has] = self.popularity[None, :]
        return s

    def item_vectors(self) -> np.ndarray:
        return self.item_repr

    def token_item_vectors(self, item_tokens: TokenMap, items: list[str]) -> np.ndarray:
        """Tokens only (no identity): the row LightFM would build, each token 1/n."""
        emb = getattr(self, "item_token_emb", None)
        if emb is None:
            return super().token_item_vectors(item_tokens, items)
        itok = {t: j for j, t in enumerate(self.item_vocab)}
        out = np.zeros((len(items), emb.shape[1]), dtype=np.float32)
        for r, it in enumerate(items):
            cols = [itok[t] for t in item_tokens.get(it, ()) if t in itok]
            if cols:
                out[r] = emb[cols].mean(axis=0)
        return out

    # ---- persistence ----------------------------------------------------------------------
    def _meta(self) -> dict:
        return {"user_ids": list(self.user_ids), **super()._meta(),
                "user_vocab": self.user_vocab, "item_vocab": self.item_vocab,
                "item_token_map": getattr(self, "item_token_map", {}),
                "token_edges": getattr(self, "token_edges", {}),
                "uses_identity": self.uses_identity}

    def _restore(self, meta: dict) -> None:
        super()._restore(meta)
        self.user_ids = np.asarray(meta["user_ids"], dtype=object)
        self.user_vocab, self.item_vocab = meta["user_vocab"], meta["item_vocab"]
        self.item_token_map = meta.get("item_token_map", {})
        self.token_edges = meta.get("token_edges", {})
        self.uses_identity = meta.get("uses_identity", True)
        self._uidx = {u: j for j, u in enumerate(self.user_ids)}
        self._utok = {t: j for j, t in enumerate(self.user_vocab)}
