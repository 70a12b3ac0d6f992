"""Ranking metrics with one shape: per-user values and their mean, in one pass.

For a user with relevant set R (|R| ≥ 1) and top-k list L (train items already excluded):
  precision@k = |L ∩ R| / k
  recall@k    = |L ∩ R| / min(k, |R|)     (so a perfect list scores 1 even when |R| > k)
  ndcg@k      = Σ_{i ∈ L∩R} 1/log2(rank_i + 1)  /  Σ_{r=1..min(k,|R|)} 1/log2(r + 1)
  ap@k        = Σ_{i ∈ L∩R} precision@rank_i  /  min(k, |R|)          (MAP@k = mean over users)
  auc         = P(score of a random relevant item > score of a random non-relevant candidate),
                over all catalogue items not in the user's train set; ties count one half.
Example: k=2, R={a, c}, L=[a, b] → precision 0.5, recall 0.5, ndcg 1/(1 + 1/log2 3) ≈ 0.613,
ap 1/2 = 0.5.
Users in the holdout who got no recommendation count as zeros; users outside it are ignored.
A user without a relevant item inside the catalogue has no AUC (NaN, left out of the mean).
coverage = distinct recommended items / catalogue size.
Cold users have no train history (nothing before the split); warm users have some.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from pipeline.columns import Columns as C

METRICS = ("precision", "recall", "ndcg", "map")


def per_user(recs: pd.DataFrame, holdout: pd.DataFrame, k: int) -> pd.DataFrame:
    """One row per holdout user (index user_id): precision, recall, ndcg, map at k."""
    if k <= 0:
        raise ValueError("k must be ≥ 1")
    rel = holdout[[C.user, C.item]].drop_duplicates()
    n_rel = rel.groupby(C.user).size().rename("n_rel")
    top = recs[recs[C.rank] <= k][[C.user, C.item, C.rank]]
    hits = top.merge(rel, on=[C.user, C.item], how="inner").sort_values([C.user, C.rank])
    ranks = hits[C.rank].to_numpy(dtype=float)
    hits["gain"] = 1.0 / np.log2(ranks + 1.0)
    hits["prec_at_hit"] = (hits.groupby(C.user).cumcount().to_numpy() + 1.0) / ranks
    agg = hits.groupby(C.user).agg(n_hit=(C.item, "size"), dcg=("gain", "sum"),
                                   ap=("prec_at_hit", "sum"))
    out = n_rel.to_frame().join(agg, how="left").fillna({"n_hit": 0, "dcg": 0.0, "ap": 0.0})
    ideal_n = np.minimum(out["n_rel"].to_numpy(), k)
    disc = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))
    out["precision"] = out["n_hit"] / k
    out["recall"] = out["n_hit"] / ideal_n
    out["ndcg"] = out["dcg"] / disc[ideal_n - 1]
    out["map"] = out["ap"] / ideal_n
    return out[list(METRICS)]


def auc(scores: np.ndarray, excluded: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """Per-row AUC of a (users × items) score matrix, vectorised (Mann–Whitney U).

    ``excluded`` (train items) and ``relevant`` (holdout items) are boolean masks of the same
    shape; excluded cells are neither positives nor negatives. Rows with no positive or no
    negative candidate give NaN. Example: scores [3, 2, 1], relevant [F, T, F] → 0.5.
    """
    s = np.where(excluded, -np.inf, np.asarray(scores, dtype=np.float64))
    pos = relevant & ~excluded
    n_pos = pos.sum(axis=1)
    n_neg = (~excluded).sum(axis=1) - n_pos
    # Excluded cells tie at -inf below every candidate; their average rank is removed below.
    ranks = rankdata(s, axis=1, method="average")
    n_exc = excluded.sum(axis=1)
    pos_rank_sum = np.where(pos, ranks, 0.0).sum(axis=1) - n_pos * n_exc
    with np.errstate(invalid="ignore", divide="ignore"):
        u = pos_rank_sum - n_pos * (n_pos + 1) / 2.0
        out = u / (n_pos * n_neg)
    out[(n_pos == 0) | (n_neg == 0)] = np.nan
    return out


def _means(pu: pd.DataFrame, k: int, auc_by_user: pd.Series | None) -> dict:
    if pu.empty:
        return {**{f"{m}@{k}": None for m in METRICS}, "auc": None, "users": 0}
    out: dict = {f"{m}@{k}": float(pu[m].mean()) for m in METRICS}
    a = auc_by_user.reindex(pu.index).dropna() if auc_by_user is not None else pd.Series(dtype=float)
    out["auc"] = float(a.mean()) if len(a) else None
    out["users"] = int(len(pu))
    return out


def summary(recs: pd.DataFrame, holdout: pd.DataFrame, k: int, n_catalogue: int,
            auc_by_user: pd.Series | None = None, warm_users: set[str] | None = None,
            users: pd.DataFrame | None = None) -> dict:
    """Mean metrics over holdout users, catalogue coverage, and the same means for cold and
    warm users (when ``warm_users`` — users with train history — is given). ``users``: the
    :func:`per_user` table of the same arguments, when the caller already has it."""
    pu = per_user(recs, holdout, k) if users is None else users
    out = _means(pu, k, auc_by_user)
    if pu.empty:
        out = {key: (0.0 if v is None else v) for key, v in out.items()}
    top = recs[recs[C.rank] <= k]
    out["coverage"] = float(top[C.item].nunique() / n_catalogue) if n_catalogue else 0.0
    if warm_users is not None:
        warm = pu.index.isin(list(warm_users))
        out["warm"] = _means(pu[warm], k, auc_by_user)
        out["cold"] = _means(pu[~warm], k, auc_by_user)
    return out


def precision_recall_curve(recs: pd.DataFrame, holdout: pd.DataFrame, ks: tuple[int, ...]
                           ) -> list[dict]:
    """{k, precision, recall} at every k of ``ks`` in one pass: the same means as
    :func:`summary` at each k (holdout users without a hit count as zeros)."""
    rel = holdout[[C.user, C.item]].drop_duplicates()
    n_rel = rel.groupby(C.user).size()
    hits = recs[recs[C.rank] <= max(ks)][[C.user, C.item, C.rank]].merge(rel, on=[C.user, C.item])
    out = []
    for k in ks:
        n_hit = hits[hits[C.rank] <= k].groupby(C.user).size().reindex(n_rel.index, fill_value=0)
        n = n_hit.to_numpy(dtype=float)
        out.append({"k": k, "precision": float((n / k).mean()) if len(n) else 0.0,
                    "recall": float((n / np.minimum(n_rel.to_numpy(), k)).mean()) if len(n) else 0.0})
    return out
