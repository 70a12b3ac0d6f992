"""Holdout scoring: every model the same way, on the same holdout.

A (users × items) score matrix per batch, train items masked out, top-k and AUC from that
matrix — no Python loop over (user, item) pairs.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pipeline.columns import Columns as C
from pipeline.config import Params, Paths
from pipeline.evaluation.metrics import auc, summary
from pipeline.models.artifact import load_model
from pipeline.models.ranking import top_k
from pipeline.models.tokens import user_tokens
from pipeline.registry import versions

log = logging.getLogger("recflow.evaluate")

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


def score(model, holdout: pd.DataFrame, train: pd.DataFrame, utok: dict, k: int,
          n_catalogue: int, batch: int = 1024) -> tuple[dict, list[dict]]:
    """Headline metrics at k (overall, cold, warm), and precision/recall at every plot k."""
    users = sorted(holdout[C.user].astype(str).unique())
    items = np.asarray(model.item_ids, dtype=object)
    kmax = max(k, *PLOT_KS)
    seen = train[[C.user, C.item]].astype(str)
    rel = holdout[[C.user, C.item]].astype(str)
    recs, aucs = [], []
    for s in range(0, len(users), batch):
        ub = users[s:s + batch]
        exc = _mask(seen, ub, items).toarray()
        scores = np.array(model.scores(ub, utok), dtype=np.float32, copy=True)
        aucs.append(auc(scores, exc, _mask(rel, ub, items).toarray()))
        scores[exc] = -np.inf
        recs.append(top_k(ub, items, scores, kmax))
    recs_df = pd.concat(recs, ignore_index=True) if recs else top_k([], items, np.zeros((0, 0)), kmax)
    auc_by_user = pd.Series(np.concatenate(aucs) if aucs else [], index=users, dtype=float)
    warm = set(seen[C.user])
    curve = []
    for kk in PLOT_KS:
        m = summary(recs_df, holdout, kk, n_catalogue)
        curve.append({"k": kk, "precision": m[f"precision@{kk}"], "recall": m[f"recall@{kk}"]})
    return summary(recs_df, holdout, k, n_catalogue, auc_by_user, warm), curve


def score_champion(params: Params, paths: Paths) -> dict | None:
    """The current champion's metrics on the current holdout (same protocol as the stage)."""
    d = versions.champion_dir(paths.registry)
    if d is None:
        return None
    train = pd.read_parquet(paths.train_pairs)
    holdout = pd.read_parquet(paths.holdout_pairs)
    utok = user_tokens(pd.read_parquet(paths.train_user_features), params.model.user_features)
    metrics, _ = score(load_model(d), holdout, train, utok, params.evaluate.k,
                       train[C.item].nunique())
    return metrics


def with_current_champion(ev: dict, params: Params, paths: Paths) -> dict:
    """``ev`` (evaluation.json) with the champion *as it is now*.

    The champion is state outside DVC's graph (evaluate cannot depend on promote's output), so
    DVC may re-run promote alone — e.g. after a ``gate.*`` change or a rollback — on an
    evaluation that scored another champion, or none. Then the current champion is re-scored
    here on the same holdout, so the gate never compares against a stale record.
    """
    current = versions.champion(paths.registry)
    if current == ev.get("champion_version"):
        return ev
    log.info("champion is %s but evaluation scored %s: re-scoring it on the same holdout",
             current, ev.get("champion_version"))
    return {**ev, "champion_version": current,
            "champion": score_champion(params, paths) if current else None}
