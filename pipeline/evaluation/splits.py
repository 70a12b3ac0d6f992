"""Train/holdout splits: by time for event streams, leave-N-out per user for rating sets.

Both are pure functions of (data, params): the time split cuts at a time; leave-N-out ranks each
user's positive pairs by a seeded md5 of (user, item) and holds out the first ``split.n_out``,
so the same events give the same holdout on any machine, thread count and row order (never a
permutation of a DuckDB result, whose row order changes with threads and load). New pairs only
push the existing ones down the ranking, so new data never moves a training pair into the
holdout (a held-out pair may move to train when a user gains a pair that ranks before it).
The validation carve ranks the training pairs the same way with its own salt.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from pipeline.columns import Columns as C
from pipeline.config import Params
from pipeline.data.signals import confidence_sql
from pipeline.errors import DataError
from pipeline.evaluation import target
from pipeline.evaluation.fingerprint import pair_hash
from pipeline.io import sql_path, sql_str


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame    # positives (user_id, item_id, confidence, ...) before the cutoff
    holdout: pd.DataFrame  # positives to predict; pairs already in train removed (every
                           # positive: ``target.relevant`` keeps those in evaluate.target)
    cutoff: datetime       # features are taken as of this time


def _end(con: duckdb.DuckDBPyConnection, src: str, strategy: str) -> datetime:
    lo, hi = con.execute(f"SELECT min({C.ts}), max({C.ts}) FROM {src}").fetchall()[0]
    if hi is None:
        raise DataError(f"{src}: no events to split.")
    if strategy == "time" and lo == hi:
        raise DataError(f"{src}: every event has the same time (data without time, e.g. a count "
                        "file loaded with ingest.loader.time_unit: none), so a time split has "
                        "nothing to cut; use split.strategy: leave_n_out.")
    return hi + timedelta(microseconds=1)


def rank_in_user(pairs: pd.DataFrame, salt: str) -> np.ndarray:
    """0-based rank of each row among its user's rows, by :func:`pair_hash` (item id breaks a
    tie), aligned to ``pairs``' rows whatever their order."""
    key = pd.DataFrame({"u": pairs[C.user].astype(str).to_numpy(),
                        "h": pair_hash(pairs, salt), "i": pairs[C.item].astype(str).to_numpy(),
                        "row": np.arange(len(pairs))})
    key = key.sort_values(["u", "h", "i"], kind="stable")
    rank = np.empty(len(pairs), dtype=np.int64)
    rank[key["row"].to_numpy()] = key.groupby("u", sort=False).cumcount().to_numpy()
    return rank


def make_split(events: Path, params: Params) -> Split:
    con = duckdb.connect()
    src = f"read_parquet({sql_path(events)})"
    end = _end(con, src, params.split.strategy)
    sp = params.signals
    fl = target.flags(params.evaluate.target)
    if params.split.strategy == "time":
        cutoff = end - timedelta(days=params.split.test_days)
        c = f"TIMESTAMPTZ {sql_str(cutoff.isoformat())}"
        train = con.sql(confidence_sql(sp, f"(SELECT * FROM {src} WHERE {C.ts} < {c})", cutoff,
                                       fl)).df()
        test = con.sql(confidence_sql(sp, f"(SELECT * FROM {src} WHERE {C.ts} >= {c})", end,
                                      fl)).df()
        seen = train[[C.user, C.item]].assign(_seen=True)
        test = test.merge(seen, on=[C.user, C.item], how="left")
        test = test[test["_seen"].isna()].drop(columns="_seen")
    else:
        pairs = con.sql(confidence_sql(sp, src, end, fl)).df()
        out = rank_in_user(pairs, f"split:{params.split.seed}") < params.split.n_out
        test, train = pairs[out], pairs[~out]
        cutoff = end
    con.close()
    sort = [C.user, C.item]
    return Split(train.sort_values(sort).reset_index(drop=True),
                 test.sort_values(sort).reset_index(drop=True), cutoff)


def all_pairs(events: Path, params: Params) -> pd.DataFrame:
    """Every positive pair of the data, its confidence as of the end: what the served model is
    refit on after the gate (train ∪ holdout under leave-N-out; under the time split also the
    holdout-period events of pairs first seen before the cutoff)."""
    con = duckdb.connect()
    try:
        src = f"read_parquet({sql_path(events)})"
        pairs = con.sql(confidence_sql(params.signals, src, _end(con, src, "all"))).df()
    finally:
        con.close()
    return pairs.sort_values([C.user, C.item]).reset_index(drop=True)


def carve_validation(train: pd.DataFrame, params: Params) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(fit part, validation) out of the training period, for early stopping and tuning.

    time: pairs last seen in the final ``model.validation_days`` of the training period are
    the validation (an approximation: their earlier events are not replayed into the fit part);
    leave_n_out: the first ``model.validation_n`` pairs of each user by a seeded hash of
    (user, item) (as the split itself), only from users who keep at least one pair to fit on.
    The holdout is never looked at.
    """
    m = params.model
    if params.split.strategy == "time" and "last_ts" in train:
        ts = pd.to_datetime(train["last_ts"], utc=True)
        val_cut = ts.max() - timedelta(days=m.validation_days)
        is_val = (ts > val_cut).to_numpy()
    else:
        rank = rank_in_user(train, f"validation:{params.split.seed}")
        size = train.groupby(C.user)[C.item].transform("size").to_numpy()
        is_val = (rank < m.validation_n) & (size > m.validation_n)
    return (train[~is_val].reset_index(drop=True), train[is_val].reset_index(drop=True))
