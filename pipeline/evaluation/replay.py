"""Cold start measured by replaying the push path, and the tokens training builds for it.

Time split: every cold holdout user (no event before the cutoff) has their first
``evaluate.reveal_n`` holdout events (in time order) revealed the way ``push-events`` delivers
them: their features are recomputed as of just after the last revealed event by the push
path's own function (:func:`pipeline.features.snapshots.features_as_of` over the validated
events, which holds the revealed events and nothing later for that user). The rest of their
holdout is the target, and the revealed items are excluded from their lists (serving
excludes ``recent_items``). Segments, each scored for every model:

- ``warm``: users with training history, tokens and history as of the cutoff;
- ``cold_revealed``: cold users after the reveal (only those with a target left);
- ``cold``: cold users at their first request (nothing revealed: attributes only);
- ``cold_items`` / ``warm_items``: recall@k over the warm + cold_revealed users' target
  interactions on items with / without interactions before the cutoff.

Warm users are not replayed (their features stay as of the cutoff): one DuckDB query per
replayed user keeps this to the cold users it is about.

Every family reads the same history (ALS folds an unknown user in from it); one yardstick is
added: ``category_rule`` (the most popular items in the categories of the user's recent items).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from pipeline.columns import Columns as C
from pipeline.config import ModelParams, Params, Paths
from pipeline.evaluation.metrics import per_user
from pipeline.features import recent, snapshots
from pipeline.io import sql_str
from pipeline.models.base import History, RecommenderBase, TokenMap
from pipeline.models.tokens import check_features, fit_edges, item_tokens, model_tokens, user_tokens


@dataclass(frozen=True)
class TrainingTokens:
    user: TokenMap
    item: TokenMap
    edges: dict
    history: History        # recent items as of the cutoff (the snapshot SQL's recent_items)
    fit_history: History    # the same minus the validation slice's items (early stopping)


def training_tokens(mp: ModelParams, ts) -> TrainingTokens:
    """Tokens of a :class:`~pipeline.evaluation.trainset.Trainset`: unknown feature names exit
    2; numeric bucket edges come from the training rows (users/items with a train pair)."""
    check_features(ts.user_features, mp.user_features, C.user)
    check_features(ts.item_features, mp.item_features, C.item)
    tu = ts.user_features[ts.user_features[C.user].astype(str).isin(set(ts.train[C.user].astype(str)))]
    ti = ts.item_features[ts.item_features[C.item].astype(str).isin(set(ts.train[C.item].astype(str)))]
    edges = {"user": fit_edges(tu, mp.user_features, C.user, mp.buckets),
             "item": fit_edges(ti, mp.item_features, C.item, mp.buckets)}
    hist = recent.history_of(ts.user_features)
    val = ts.validation.groupby(C.user)[C.item].agg(lambda s: set(s.astype(str))).to_dict()
    fit_hist = {u: [i for i in items if i not in val.get(u, ())] for u, items in hist.items()}
    return TrainingTokens(user_tokens(ts.user_features, mp.user_features, edges["user"]),
                          item_tokens(ts.item_features, mp.item_features, edges["item"]),
                          edges, hist, {u: v for u, v in fit_hist.items() if v})


class CategoryRule(RecommenderBase):
    """The most popular items in the categories of the user's recent items (by how many of
    them fall in each category), then popularity. Not a served family: a yardstick."""

    def __init__(self, item_ids: np.ndarray, popularity: np.ndarray, categories: dict[str, str]):
        super().__init__()
        self.item_ids, self.popularity = item_ids, popularity.astype(np.float32)
        self.categories = categories
        cats = pd.Series([categories.get(str(i)) for i in item_ids])
        self._codes, self._names = pd.factorize(cats)

    def config(self) -> dict:
        return {}

    def scores(self, users, user_tokens=None, history=None):
        base = self.popularity / (float(self.popularity.max()) + 1.0)
        s = np.tile(base, (len(users), 1))
        index = {c: j for j, c in enumerate(self._names)}
        for r, u in enumerate(users):
            for it in (history or {}).get(u, []):
                j = index.get(self.categories.get(it))
                if j is not None:
                    s[r, self._codes == j] += 1.0
        return s


@dataclass
class Revealed:
    features: pd.DataFrame                        # the push path's rows, one per user
    pairs: pd.DataFrame                           # revealed (user, item)
    users: list[str] = field(default_factory=list)


def reveal(params: Params, paths: Paths, users: list[str], cutoff: datetime) -> Revealed:
    """The first ``reveal_n`` holdout events of ``users``, pushed one user at a time."""
    n = params.evaluate.reveal_n
    empty = Revealed(pd.DataFrame({C.user: []}), pd.DataFrame({C.user: [], C.item: []}))
    if n <= 0 or not users:
        return empty
    con = snapshots.connect(params)
    try:
        snapshots.open_events(con, paths.validated)
        con.execute("CREATE OR REPLACE TEMP TABLE cold_users AS SELECT unnest($u::VARCHAR[]) AS u",
                    {"u": users})
        ev = con.sql(
            f"SELECT {C.user}::VARCHAR AS {C.user}, {C.item}::VARCHAR AS {C.item}, {C.ts} FROM ev "
            f"WHERE {C.ts} >= {sql_str(pd.Timestamp(cutoff).isoformat())}::TIMESTAMPTZ AND "
            f"{C.user}::VARCHAR IN (SELECT u FROM cold_users) "
            f"ORDER BY {C.user}, {C.ts}, {C.item}").df()
        first = ev.groupby(C.user, sort=True).head(n)
        # the cold users' events once: each push below reads its user's rows from this table,
        # not the whole event log (one scan per cold user took minutes at 10M events)
        con.execute(f"CREATE OR REPLACE TEMP TABLE ev_cold AS SELECT * FROM ev "
                    f"WHERE {C.user}::VARCHAR IN (SELECT u FROM cold_users)")
        rows = []
        for u, g in first.groupby(C.user, sort=True):
            as_of = pd.Timestamp(g[C.ts].max()).to_pydatetime() + timedelta(microseconds=1)
            rows.append(snapshots.features_as_of(con, [str(u)], as_of, params, "ev_cold"))
            # ties with the last revealed event count as revealed (the push's as_of holds them)
        feats = pd.concat(rows, ignore_index=True) if rows else empty.features
        last = first.groupby(C.user)[C.ts].max()
        upto = ev[ev[C.ts] <= ev[C.user].map(last)]
    finally:
        con.close()
    return Revealed(feats, upto[[C.user, C.item]].drop_duplicates(), sorted(map(str, last.index)))


def _score(model, users: list[str], target: pd.DataFrame, exclude: dict[str, set[str]],
           tokens: TokenMap, history: History, k: int) -> pd.DataFrame:
    recs = model.recommend(users, k, exclude, tokens, history=history)
    return recs, per_user(recs, target[target[C.user].isin(users)], k)


def segments(params: Params, paths: Paths, models: dict[str, RecommenderBase], data,
             cutoff: datetime) -> dict:
    """Per model and segment: users, precision@k, recall@k; plus cold/warm-item recall."""
    k = params.evaluate.k
    train, holdout = data.train.astype({C.user: str, C.item: str}), data.holdout
    holdout = holdout.assign(**{C.user: holdout[C.user].astype(str),
                                C.item: holdout[C.item].astype(str)})
    warm_users = set(train[C.user])
    train_items = set(train[C.item])
    hold_users = sorted(holdout[C.user].unique())
    warm = [u for u in hold_users if u in warm_users]
    cold = [u for u in hold_users if u not in warm_users]
    seen = train.groupby(C.user)[C.item].agg(set).to_dict()
    uf = data.user_features.assign(**{C.user: data.user_features[C.user].astype(str)})
    hist_cut = recent.history_of(uf)

    rev = reveal(params, paths, cold, cutoff)
    revealed = rev.pairs.groupby(C.user)[C.item].agg(set).to_dict() if len(rev.pairs) else {}
    target_rev = holdout[holdout[C.user].isin(revealed)]
    target_rev = target_rev[[i not in revealed[u] for u, i in
                             zip(target_rev[C.user], target_rev[C.item], strict=True)]]
    cold_rev = sorted(target_rev[C.user].unique())
    rows = rev.features
    if len(rows):  # static attributes of those users, as the online lookup would add them
        attr_cols = [c for c in uf.columns if c not in rows.columns]
        rows = rows.assign(**{C.user: rows[C.user].astype(str)}).merge(
            uf[[C.user, *attr_cols]], on=C.user, how="left")
    hist_rev = recent.history_of(rows) if len(rows) else {}

    out: dict = {"k": k, "reveal_n": params.evaluate.reveal_n,
                 "users": {"warm": len(warm), "cold_revealed": len(cold_rev), "cold": len(cold)}}
    for name, m in models.items():
        tok_cut = model_tokens(m, uf)
        tok_rev = model_tokens(m, rows) if len(rows) else {}
        res = {}
        recs_w, pu_w = _score(m, warm, holdout, seen, tok_cut, hist_cut, k)
        recs_r, pu_r = _score(m, cold_rev, target_rev, revealed, tok_rev, hist_rev, k)
        _, pu_c = _score(m, cold, holdout, {}, tok_cut, {}, k)
        for seg, pu in (("warm", pu_w), ("cold_revealed", pu_r), ("cold", pu_c)):
            res[seg] = {f"precision@{k}": float(pu["precision"].mean()) if len(pu) else None,
                        f"recall@{k}": float(pu["recall"].mean()) if len(pu) else None}
        recs = pd.concat([recs_w, recs_r], ignore_index=True)
        target = pd.concat([holdout[holdout[C.user].isin(warm)], target_rev], ignore_index=True)
        hit = target.merge(recs[recs[C.rank] <= k][[C.user, C.item]].astype(str),
                           on=[C.user, C.item], how="left", indicator=True)["_merge"] == "both"
        is_cold = ~target[C.item].isin(train_items).to_numpy()
        res["cold_items"] = {f"recall@{k}": float(hit[is_cold].mean()) if is_cold.any() else None,
                             "interactions": int(is_cold.sum())}
        res["warm_items"] = {f"recall@{k}": float(hit[~is_cold].mean()) if (~is_cold).any() else None,
                             "interactions": int((~is_cold).sum())}
        out[name] = res
    return out


def baselines(data) -> dict[str, RecommenderBase]:
    """The history-reading yardstick over the same train part (ALS folds an unknown user in
    from their history itself, so the family's own row is "ALS with fold-in")."""
    from pipeline.models.popularity import Popularity

    pop = Popularity().fit(data.train)
    itf = data.item_features
    cats = ({str(i): str(c) for i, c in zip(itf[C.item], itf[C.category], strict=True)
             if c is not None and not pd.isna(c)} if C.category in itf else {})
    return {"category_rule": CategoryRule(pop.item_ids, pop.popularity, cats)}
