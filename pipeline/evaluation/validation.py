"""Model selection on the validation slice (carved out of the training period, never the
holdout): one ``validation_precision`` for early stopping and for every tuning loop.

It has to be cheap, as it runs after every epoch of every trial: the slice is built once
(CSR matrices of what each validation user has in the fit part and holds out), scores a
seeded sample of ``model.validation_users`` users, in memory-bounded batches, with the
same exact top-k as the holdout and no Python loop over (user, item) pairs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import cached_property

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pipeline.columns import Columns as C
from pipeline.config import ModelParams
from pipeline.evaluation.batches import masked_scores
from pipeline.evaluation.short_users import short_copies, with_rows, with_short
from pipeline.models.base import History, RecommenderBase, TokenMap
from pipeline.models.hybrid import LightFMRecommender
from pipeline.models.ranking import in_rows, pair_matrix, remap_columns, top_k_masked

log = logging.getLogger("recflow.validation")


class ValidationSlice:
    """The validation users (those the fit part knows; a seeded sample of ``n_users`` of
    them when there are more), their relevant pairs, and what each has in the fit part
    (excluded from their lists, as evaluation excludes train items).

    ``short_users`` > 0 (``model.validation_short_users``) with a ``history``: a seeded
    sample of them is also scored as a copy that has done only its 0..``short_n`` oldest
    recent items (:mod:`pipeline.evaluation.short_users`), for the same validation pairs, so
    validation judges a setting on cold users with a few revealed events too, not only on
    warm ones (``scored`` = the users then the copies)."""

    def __init__(self, fit_part: pd.DataFrame, validation: pd.DataFrame,
                 n_users: int | None = None, seed: int = 0, history: History | None = None,
                 short_users: int = 0, short_n: int = 3) -> None:
        val_users = validation[C.user].astype(str)
        known = val_users.isin(pd.Index(fit_part[C.user].astype(str).unique()))
        users = np.sort(val_users[known].unique())
        if n_users is not None and len(users) > n_users:
            users = np.sort(np.random.default_rng(seed).choice(users, n_users, replace=False))
        self.users: list[str] = users.tolist()
        self.relevant = validation[val_users.isin(pd.Index(self.users))]
        self._fit_part = fit_part
        self.items = np.asarray(sorted(set(fit_part[C.item].astype(str)) |
                                       set(validation[C.item].astype(str))), dtype=object)
        self.short = short_copies(self.users, history, short_users, short_n, seed)
        self.short_n = short_n
        self.scored: list[str] = self.users + list(self.short)
        rows = pd.Index(self.users).get_indexer([u for u, _ in self.short.values()])
        self._exclude = with_rows(pair_matrix(fit_part, self.users, self.items), rows)
        self._relevant = with_rows(pair_matrix(self.relevant, self.users, self.items), rows)
        self._for: tuple[np.ndarray, sp.csr_matrix, sp.csr_matrix] | None = None

    @cached_property
    def exclude(self) -> dict[str, set[str]]:
        """user → items in the fit part (the dict form, for callers of ``recommend``)."""
        f = self._fit_part[self._fit_part[C.user].astype(str).isin(pd.Index(self.users))]
        return f.groupby(f[C.user].astype(str))[C.item].agg(lambda s: set(s.astype(str))).to_dict()

    def matrices(self, item_ids: np.ndarray) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """(excluded, relevant) as (users × ``item_ids``) CSR; the last model's are kept, so
        an epoch loop (the same items every epoch) re-indexes once."""
        if self._for is None or self._for[0] is not item_ids:
            cols = pd.Index(item_ids).get_indexer(self.items)
            n = len(item_ids)
            self._for = (item_ids, remap_columns(self._exclude, cols, n),
                         remap_columns(self._relevant, cols, n))
        return self._for[1], self._for[2]


def validation_precision(model: RecommenderBase, vs: ValidationSlice, k: int,
                         user_tokens: TokenMap | None = None,
                         history: History | None = None, *,
                         memory_mb: int | None = None) -> float:
    """Mean precision@k of ``model`` over the validation users (0 when there are none)."""
    if not vs.users:
        return 0.0
    excluded, relevant = vs.matrices(model.item_ids)
    if vs.short:
        user_tokens, history = with_short(model, vs.short, user_tokens, history, vs.short_n)
    hits = 0
    for start, s, _ in masked_scores(model, vs.scored, user_tokens, excluded, memory_mb,
                                     "validation", history=history):
        idx, val = top_k_masked(s, k)
        hits += int((in_rows(relevant, start, idx) & np.isfinite(val)).sum())
    return hits / (k * len(vs.scored))


def fit_early_stopping(params: ModelParams, train: pd.DataFrame, validation: pd.DataFrame,
                       user_tokens: TokenMap | None, item_tokens: TokenMap | None,
                       k: int, full_train: pd.DataFrame | None = None,
                       on_epoch: Callable[[dict], None] | None = None,
                       history: History | None = None, full_history: History | None = None, *,
                       vs: ValidationSlice | None = None, memory_mb: int | None = None
                       ) -> tuple[LightFMRecommender, list[dict], int]:
    """Fit on ``train`` one epoch at a time, score precision@k on ``validation`` after each,
    stop after ``params.patience`` epochs without improvement and keep the best epoch.

    With ``params.refit`` and ``full_train`` (train + validation), a fresh model is then fitted
    on ``full_train`` for the best epoch count, so the validation interactions are not lost.
    ``history`` (recent items, without the validation slice's) is what the fit part sees;
    ``full_history`` what the refit sees.
    ``vs``: the slice of (``train``, ``validation``) when the caller already built it (a
    search builds it once for all its trials). Returns (model, per-epoch curve rows {epoch, k,
    val_precision, seconds, validation_seconds}, best epoch).
    """
    vs = vs or ValidationSlice(train, validation, params.validation_users, params.seed, history,
                               params.validation_short_users, params.short_history_n)
    curve: list[dict] = []
    best: dict = {"epoch": 0, "precision": -1.0, "state": None}
    t0 = time.perf_counter()

    def step(epoch: int, model: LightFMRecommender) -> bool:
        tv = time.perf_counter()
        prec = validation_precision(model, vs, k, user_tokens, history, memory_mb=memory_mb)
        row = {"epoch": epoch + 1, "k": k, "val_precision": prec,
               "seconds": round(time.perf_counter() - t0, 3),
               "validation_seconds": round(time.perf_counter() - tv, 3)}
        curve.append(row)
        log.info("epoch %d/%d: validation precision@%d %.4f over %d users (%.1f s, "
                 "validation %.1f s)", epoch + 1, params.epochs, k, prec, len(vs.users),
                 row["seconds"], row["validation_seconds"])
        if on_epoch:
            on_epoch(row)
        if prec > best["precision"]:
            best.update(epoch=epoch + 1, precision=prec, state=model.state())
        return epoch + 1 - best["epoch"] >= params.patience

    model = LightFMRecommender(params).fit(train, user_tokens, item_tokens, on_epoch=step,
                                           history=history)
    if params.refit and full_train is not None:
        log.info("refit on all of train (%d pairs) for the best %d epochs", len(full_train),
                 best["epoch"])
        model = refit_lightfm(params, best["epoch"], full_train, user_tokens, item_tokens,
                              full_history or history)
    else:
        model.restore(best["state"])
    return model, curve, best["epoch"]


def trial_pairs(fit_part: pd.DataFrame, keep: list[str], n_users: int | None, seed: int
                ) -> pd.DataFrame:
    """The fit-part pairs of at most ``n_users`` users: every user of ``keep`` (the scored
    validation users) plus a seeded sample of the others; all of ``fit_part`` when it has no
    more users than that. Trials on a large data set then cost a fraction of a full fit."""
    users = fit_part[C.user].astype(str)
    distinct = users.unique()
    if n_users is None or len(distinct) <= n_users:
        return fit_part
    # a hash set: np.setdiff1d on 200k object ids took 5 minutes (its sort-based isin)
    kept = set(keep)
    others = np.sort(np.asarray([u for u in distinct if u not in kept], dtype=object))
    extra = max(0, n_users - len(keep))
    chosen = np.random.default_rng(seed).choice(others, min(extra, len(others)), replace=False)
    log.info("tuning trials fit on %d of %d users", len(keep) + len(chosen), len(distinct))
    return fit_part[users.isin(pd.Index(np.concatenate([np.asarray(keep, dtype=object), chosen])))]


def refit_lightfm(params: ModelParams, epochs: int, full_train: pd.DataFrame,
                  user_tokens: TokenMap | None, item_tokens: TokenMap | None,
                  history: History | None = None) -> LightFMRecommender:
    """A fresh LightFM fitted on ``full_train`` for ``epochs`` epochs (early stopping's best),
    so the validation interactions are not lost; it keeps ``params`` as its configuration.
    ``history``: the recent items the refit sees (session tokens). One log line per epoch."""
    t1 = time.perf_counter()

    def refit_epoch(epoch: int, _model: LightFMRecommender) -> None:
        log.info("refit epoch %d/%d (%.1f s)", epoch + 1, epochs, time.perf_counter() - t1)

    model = LightFMRecommender(params.model_copy(update={"epochs": epochs})).fit(
        full_train, user_tokens, item_tokens, on_epoch=refit_epoch, history=history)
    model.params = params
    return model
