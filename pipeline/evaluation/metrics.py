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
At scale AUC is estimated from sampled negatives (:func:`sampled_auc`, error bound there).
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


def from_hits(hits: np.ndarray, n_rel: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-user precision, recall, ndcg, map at k from a (users × ≥k) boolean matrix of
    whether each rank of the user's list is relevant (the formulas above, exactly)."""
    if k <= 0:
        raise ValueError("k must be ≥ 1")
    h = np.zeros((len(hits), k), dtype=bool)
    w = min(k, hits.shape[1])
    h[:, :w] = hits[:, :w]
    ideal_n = np.minimum(np.asarray(n_rel), k)
    ranks = np.arange(1, k + 1, dtype=float)
    disc = 1.0 / np.log2(ranks + 1.0)
    n_hit = h.sum(axis=1)
    prec_at_hit = np.where(h, np.cumsum(h, axis=1) / ranks, 0.0)
    return {"precision": n_hit / k, "recall": n_hit / ideal_n,
            "ndcg": (h * disc).sum(axis=1) / np.cumsum(disc)[ideal_n - 1],
            "map": prec_at_hit.sum(axis=1) / ideal_n}


def sampled_auc(n_rows: int, pos_rows: np.ndarray, pos_scores: np.ndarray,
                neg_scores: np.ndarray, neg_valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row AUC from each row's positives against that row's negatives; (auc, negatives).

    ``neg_scores``/``neg_valid`` (rows × m): the scores of the row's negative draws and
    which of them count (a draw of an excluded or relevant item does not). Ties count one
    half. With every candidate as the draws (catalogue ≤ ``evaluate.auc_negatives``) this is
    the exact AUC. With m draws uniform with replacement over the catalogue (seeded), the
    valid ones are iid uniform over the row's negatives, so the estimate is unbiased and,
    by Hoeffding (each draw's share of won pairs lies in [0, 1]),
    P(|AUC_est − AUC| ≥ t) ≤ 2·exp(−2·m'·t²) for a row with m' valid draws:
    ±0.061 at 99.9 % for m' = 1000. The mean over U rows: see :func:`auc_bound`.
    Rows without a positive or a valid draw give NaN.
    """
    wins = np.zeros(n_rows)
    step = max(1, (1 << 22) // max(1, neg_scores.shape[1]))      # ≤ 4M comparisons at once
    for s in range(0, len(pos_rows), step):
        r, p = pos_rows[s:s + step], pos_scores[s:s + step, None]
        neg, ok = neg_scores[r], neg_valid[r]
        w = ((p > neg) & ok).sum(axis=1) + 0.5 * ((p == neg) & ok).sum(axis=1)
        wins += np.bincount(r, weights=w, minlength=n_rows)
    n_pos = np.bincount(pos_rows, minlength=n_rows)
    m = neg_valid.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = wins / (n_pos * m)
    out[(n_pos == 0) | (m == 0)] = np.nan
    return out, m


def auc_bound(negatives: np.ndarray, exact: bool, delta: float = 1e-3) -> float:
    """Half-width t of the mean AUC over users (rows with a value), holding with probability
    ≥ 1 − ``delta``: every draw is independent, so Hoeffding on the weighted sum gives
    t = sqrt(ln(2/δ) · Σ_u 1/m'_u / (2 U²)); 0 when the AUC was exact."""
    m = np.asarray(negatives, dtype=float)
    m = m[m > 0]
    if exact or not len(m):
        return 0.0
    return float(np.sqrt(np.log(2 / delta) * (1.0 / m).sum() / (2 * len(m) ** 2)))


def auc(scores: np.ndarray, excluded: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """Per-row exact AUC of a dense (users × items) score matrix (Mann–Whitney U over every
    candidate): the definition, O(n log n) per row — the reference for small data and
    tests; the holdout scores with :func:`sampled_auc`.

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
    top = recs[recs[C.rank] <= k]
    coverage = float(top[C.item].nunique() / n_catalogue) if n_catalogue else 0.0
    return summarise(pu, k, coverage, auc_by_user, warm_users)


def summarise(pu: pd.DataFrame, k: int, coverage: float, auc_by_user: pd.Series | None = None,
              warm_users: set[str] | None = None) -> dict:
    """:func:`summary` from the per-user table and the coverage already computed."""
    out = _means(pu, k, auc_by_user)
    if pu.empty:
        out = {key: (0.0 if v is None else v) for key, v in out.items()}
    out["coverage"] = coverage
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
