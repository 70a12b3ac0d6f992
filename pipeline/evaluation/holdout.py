"""Holdout scoring: every model the same way, on the same holdout.

A (users × items) score matrix per batch, train items masked out, top-k and AUC from that
matrix — no Python loop over (user, item) pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pipeline.columns import Columns as C
from pipeline.evaluation.metrics import auc, per_user, precision_recall_curve, summary
from pipeline.models.ranking import top_k

PLOT_KS = (1, 3, 5, 10, 20)


def _mask(pairs: pd.DataFrame, users: list[str], items: np.ndarray) -> sp.csr_matrix:
    """Boolean (users × items) sparse mask of the (user, item) pairs that fall inside both."""
    ui = {u: j for j, u in enumerate(users)}
    ii = {it: j for j, it in enumerate(items)}
    r = pairs[C.user].map(ui)
    c = pairs[C.item].map(ii)
    ok = r.notna() & c.notna()
    return sp.csr_matrix((np.ones(int(ok.sum()), dtype=bool),
                          (r[ok].astype(int).to_numpy(), c[ok].astype(int).to_numpy())),
                         shape=(len(users), len(items)))


@dataclass(frozen=True)
class Scored:
    metrics: dict          # headline metrics at k: overall, cold, warm
    curve: list[dict]      # precision / recall at every plot k
    per_user: pd.Series    # precision@k of every holdout user (index user_id, sorted)


def score(model, holdout: pd.DataFrame, train: pd.DataFrame, utok: dict, k: int,
          n_catalogue: int, batch: int = 1024, history: dict | None = None
          ) -> tuple[dict, list[dict]]:
    """Headline metrics at k (overall, cold, warm), and precision/recall at every plot k."""
    s = score_users(model, holdout, train, utok, k, n_catalogue, batch, history)
    return s.metrics, s.curve


def score_users(model, holdout: pd.DataFrame, train: pd.DataFrame, utok: dict, k: int,
                n_catalogue: int, batch: int = 1024, history: dict | None = None) -> Scored:
    """:func:`score`, plus each holdout user's precision@k (what the gate's paired test reads).
    ``history``: each user's recent items as of the cutoff (what serving would pass)."""
    users = sorted(holdout[C.user].astype(str).unique())
    items = np.asarray(model.item_ids, dtype=object)
    kmax = max(k, *PLOT_KS)
    seen = train[[C.user, C.item]].astype(str)
    rel = holdout[[C.user, C.item]].astype(str)
    recs, aucs = [], []
    for s in range(0, len(users), batch):
        ub = users[s:s + batch]
        exc = _mask(seen, ub, items).toarray()
        scores = np.array(model.scores(ub, utok, history), dtype=np.float32, copy=True)
        aucs.append(auc(scores, exc, _mask(rel, ub, items).toarray()))
        scores[exc] = -np.inf
        recs.append(top_k(ub, items, scores, kmax))
    recs_df = pd.concat(recs, ignore_index=True) if recs else top_k([], items, np.zeros((0, 0)), kmax)
    auc_by_user = pd.Series(np.concatenate(aucs) if aucs else [], index=users, dtype=float)
    warm = set(seen[C.user])
    pu = per_user(recs_df, holdout, k)
    return Scored(summary(recs_df, holdout, k, n_catalogue, auc_by_user, warm, users=pu),
                  precision_recall_curve(recs_df, holdout, PLOT_KS), pu["precision"].sort_index())


#: the headline of each model (``dvc metrics show``); segments stay in the details
HEADLINE = ("precision", "recall", "ndcg")


def headline(metrics: dict, k: int) -> dict:
    """The few figures a terminal shows per model: precision/recall/NDCG@k, AUC, coverage."""
    return {**{f"{m}@{k}": metrics.get(f"{m}@{k}") for m in HEADLINE},
            "auc": metrics.get("auc"), "coverage": metrics.get("coverage")}
