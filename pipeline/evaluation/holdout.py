"""Holdout scoring: every model the same way, on the same holdout.

Users are scored in batches sized from ``evaluate.memory_mb`` (:mod:`.batches`), train items
masked from a CSR matrix; each batch gives the exact top-k (:func:`top_k_masked`, no full
sort) and a seeded sample of negatives for AUC (:func:`sampled_auc`, its bound reported as
``auc_bound``). No Python loop over (user, item) pairs and no pandas join of the lists: the
metrics come from a (users × k) matrix of hits. The relevance set is the ``holdout`` passed in.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.columns import Columns as C
from pipeline.evaluation.batches import masked_scores
from pipeline.evaluation.metrics import (
    METRICS,
    auc,
    auc_bound,
    from_hits,
    per_user,
    precision_recall_curve,
    sampled_auc,
    summarise,
    summary,
)
from pipeline.models.ranking import in_rows, pair_matrix, row_cells, top_k_masked, top_k_shared

log = logging.getLogger("recflow.evaluate")

PLOT_KS = (1, 3, 5, 10, 20)
#: AUC draws per user when the caller does not say (``evaluate.auc_negatives``)
AUC_NEGATIVES = 1000


@dataclass(frozen=True)
class Scored:
    metrics: dict          # headline metrics at k: overall, cold, warm
    curve: list[dict]      # precision / recall at every plot k
    per_user: pd.Series    # precision@k of every holdout user (index user_id, sorted)


def score(model, holdout: pd.DataFrame, train: pd.DataFrame, utok: dict, k: int,
          n_catalogue: int, batch: int | None = None, history: dict | None = None,
          **kw) -> tuple[dict, list[dict]]:
    """Headline metrics at k (overall, cold, warm), and precision/recall at every plot k."""
    s = score_users(model, holdout, train, utok, k, n_catalogue, batch, history, **kw)
    return s.metrics, s.curve


def options(params) -> dict:
    """The keyword arguments of :func:`score_users` that come from ``params`` (one place for
    the evaluate stage and the champion's re-scoring)."""
    e = params.evaluate
    return {"memory_mb": e.memory_mb, "auc_negatives": e.auc_negatives, "seed": params.split.seed}


def _negatives(n_rows: int, n_items: int, m: int, seed: int, start: int) -> tuple[np.ndarray, bool]:
    """(rows × draws) item columns of each row's negative draws, and whether they are every
    item (exact AUC): uniform with replacement, seeded by (seed, first row of the batch)."""
    if n_items <= m:
        return np.broadcast_to(np.arange(n_items), (n_rows, n_items)), True
    return np.random.default_rng([seed, start]).integers(0, n_items, (n_rows, m)), False


def score_users(model, holdout: pd.DataFrame, train: pd.DataFrame, utok: dict, k: int,
                n_catalogue: int, batch: int | None = None, history: dict | None = None, *,
                memory_mb: int | None = None, auc_negatives: int = AUC_NEGATIVES, seed: int = 0,
                name: str = "model") -> Scored:
    """:func:`score`, plus each holdout user's precision@k (what the gate's paired test reads).
    ``batch`` (users) overrides the batch sized from ``memory_mb``; ``history``: each user's
    recent items as of the cutoff (what serving would pass)."""
    t0 = time.perf_counter()
    users = sorted(holdout[C.user].astype(str).unique())
    items = np.asarray(model.item_ids, dtype=object)
    n, kmax = len(items), max(k, *PLOT_KS)
    excluded, relevant = pair_matrix(train, users, items), pair_matrix(holdout, users, items)
    rel = holdout[[C.user, C.item]].astype(str).drop_duplicates()
    n_rel = rel.groupby(C.user).size().reindex(users).to_numpy()
    hits = np.zeros((len(users), kmax), dtype=bool)
    covered = np.zeros(n, dtype=bool)
    aucs, draws, exact = np.full(len(users), np.nan), np.zeros(len(users)), True
    order = None
    for start, s, shared in masked_scores(model, users, utok, excluded, memory_mb,
                                          f"evaluate {name}", batch, history):
        rows = len(s)
        if shared is not None:
            order = np.argsort(-shared, kind="stable") if order is None else order
            idx, val = top_k_shared(shared, order, excluded, start, rows, kmax)
        else:
            idx, val = top_k_masked(s, kmax)
        found = np.isfinite(val)
        hits[start:start + rows, :idx.shape[1]] = in_rows(relevant, start, idx) & found
        covered[idx[:, :k][found[:, :k]]] = True
        # AUC: train items hold -inf (no positive, no negative); marking the positives NaN
        # leaves the finite draws as exactly the valid negatives (model scores are finite)
        pr, pc = row_cells(relevant, start, start + rows)
        pos_scores = s[pr, pc]
        pos = np.isfinite(pos_scores)
        s[pr, pc] = np.nan
        cols, all_items = _negatives(rows, n, auc_negatives, seed, start)
        neg = np.take(s.reshape(-1), cols + (np.arange(rows) * n)[:, None])
        a, m = sampled_auc(rows, pr[pos], pos_scores[pos], neg, np.isfinite(neg))
        aucs[start:start + rows], draws[start:start + rows] = a, m
        exact &= all_items
    pu = pd.DataFrame(from_hits(hits, n_rel, k), index=pd.Index(users, name=C.user))[list(METRICS)]
    auc_by_user = pd.Series(aucs, index=users, dtype=float)
    warm = set(train[C.user].astype(str))
    metrics = summarise(pu, k, float(covered.sum() / n_catalogue) if n_catalogue else 0.0,
                        auc_by_user, warm)
    metrics["auc_bound"] = auc_bound(draws[~np.isnan(aucs)], exact)
    curve = [{"k": kp, "precision": float(c["precision"].mean()) if len(users) else 0.0,
              "recall": float(c["recall"].mean()) if len(users) else 0.0}
             for kp, c in ((kp, from_hits(hits, n_rel, kp)) for kp in PLOT_KS)]
    log.info("evaluate %s: %d holdout users × %d items in %.1f s (precision@%d %.4f)",
             name, len(users), n, time.perf_counter() - t0, k, metrics[f"precision@{k}"])
    return Scored(metrics, curve, pu["precision"].sort_index())


def score_exact(model, holdout: pd.DataFrame, train: pd.DataFrame, utok: dict, k: int,
                n_catalogue: int, batch: int = 256, history: dict | None = None) -> Scored:
    """The same figures by their definitions, slowly: a full stable sort of every row, the
    pandas metrics of :mod:`.metrics` over the lists, the rank-based AUC over every candidate.
    The reference that tests and ``benchmarks/end_to_end.py`` hold :func:`score_users` to."""
    users = sorted(holdout[C.user].astype(str).unique())
    items = np.asarray(model.item_ids, dtype=object)
    excluded, relevant = pair_matrix(train, users, items), pair_matrix(holdout, users, items)
    recs, aucs = [], []
    for start in range(0, len(users), batch):
        ub = users[start:start + batch]
        s = np.array(model.scores(ub, utok, history), dtype=np.float32)
        exc = excluded[start:start + len(ub)].toarray()
        aucs.append(auc(s, exc, relevant[start:start + len(ub)].toarray()))
        s[exc] = -np.inf
        order = np.argsort(-s, axis=1, kind="stable")[:, :max(k, *PLOT_KS)]
        sc = np.take_along_axis(s, order, axis=1)
        ok = np.isfinite(sc)
        recs.append(pd.DataFrame({C.user: np.repeat(np.asarray(ub, dtype=object), order.shape[1])[ok.ravel()],
                                  C.item: items[order[ok]], C.score: sc[ok],
                                  C.rank: np.tile(np.arange(1, order.shape[1] + 1), len(ub))[ok.ravel()]}))
    r = pd.concat(recs, ignore_index=True)
    h = holdout.assign(**{C.user: holdout[C.user].astype(str), C.item: holdout[C.item].astype(str)})
    pu = per_user(r, h, k)
    a = pd.Series(np.concatenate(aucs), index=users, dtype=float)
    return Scored(summary(r, h, k, n_catalogue, a, set(train[C.user].astype(str)), users=pu),
                  precision_recall_curve(r, h, PLOT_KS), pu["precision"].sort_index())


#: the headline of each model (``dvc metrics show``); segments stay in the details
HEADLINE = ("precision", "recall", "ndcg")


def headline(metrics: dict, k: int) -> dict:
    """The few figures a terminal shows per model: precision/recall/NDCG@k, AUC, coverage."""
    return {**{f"{m}@{k}": metrics.get(f"{m}@{k}") for m in HEADLINE},
            "auc": metrics.get("auc"), "coverage": metrics.get("coverage")}
