"""Ranking metrics with one shape: per-user values and their mean, in one pass.

For a user with relevant set R (|R| ≥ 1) and top-k list L:
  precision@k = |L ∩ R| / k
  recall@k    = |L ∩ R| / min(k, |R|)     (so a perfect list scores 1 even when |R| > k)
  ndcg@k      = Σ_{i ∈ L∩R} 1/log2(rank_i + 1)  /  Σ_{r=1..min(k,|R|)} 1/log2(r + 1)
Example: k=2, R={a, c}, L=[a, b] → precision 0.5, recall 0.5, ndcg 1/(1 + 1/log2 3) ≈ 0.613.
Users in the holdout who got no recommendation count as zeros; users outside it are ignored.
coverage = distinct recommended items / catalogue size.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.columns import Columns as C


def per_user(recs: pd.DataFrame, holdout: pd.DataFrame, k: int) -> pd.DataFrame:
    """One row per holdout user: precision, recall, ndcg at k."""
    if k <= 0:
        raise ValueError("k must be ≥ 1")
    rel = holdout[[C.user, C.item]].drop_duplicates()
    n_rel = rel.groupby(C.user).size().rename("n_rel")
    top = recs[recs[C.rank] <= k][[C.user, C.item, C.rank]]
    hits = top.merge(rel, on=[C.user, C.item], how="inner")
    hits["gain"] = 1.0 / np.log2(hits[C.rank].to_numpy(dtype=float) + 1.0)
    agg = hits.groupby(C.user).agg(n_hit=(C.item, "size"), dcg=("gain", "sum"))
    out = n_rel.to_frame().join(agg, how="left").fillna({"n_hit": 0, "dcg": 0.0})
    ideal_n = np.minimum(out["n_rel"].to_numpy(), k)
    disc = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))
    out["precision"] = out["n_hit"] / k
    out["recall"] = out["n_hit"] / ideal_n
    out["ndcg"] = out["dcg"] / disc[ideal_n - 1]
    return out[["precision", "recall", "ndcg"]]


def summary(recs: pd.DataFrame, holdout: pd.DataFrame, k: int, n_catalogue: int) -> dict[str, float]:
    """Mean metrics over holdout users, plus catalogue coverage and the user count."""
    pu = per_user(recs, holdout, k)
    if pu.empty:
        return {f"precision@{k}": 0.0, f"recall@{k}": 0.0, f"ndcg@{k}": 0.0, "coverage": 0.0, "users": 0}
    top = recs[recs[C.rank] <= k]
    return {
        f"precision@{k}": float(pu["precision"].mean()),
        f"recall@{k}": float(pu["recall"].mean()),
        f"ndcg@{k}": float(pu["ndcg"].mean()),
        "coverage": float(top[C.item].nunique() / n_catalogue) if n_catalogue else 0.0,
        "users": int(len(pu)),
    }
