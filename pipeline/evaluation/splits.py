"""Train/holdout splits: by time for event streams, leave-N-out per user for rating sets."""

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
from pipeline.io import sql_path, sql_str


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame    # positives (user_id, item_id, confidence, ...) before the cutoff
    holdout: pd.DataFrame  # positives to predict; pairs already in train removed
    cutoff: datetime       # features are taken as of this time


def _end(con: duckdb.DuckDBPyConnection, src: str) -> datetime:
    (hi,) = con.execute(f"SELECT max({C.ts}) FROM {src}").fetchall()[0]
    return hi + timedelta(microseconds=1)


def make_split(events: Path, params: Params) -> Split:
    con = duckdb.connect()
    src = f"read_parquet({sql_path(events)})"
    end = _end(con, src)
    sp = params.signals
    if params.split.strategy == "time":
        cutoff = end - timedelta(days=params.split.test_days)
        c = f"TIMESTAMPTZ {sql_str(cutoff.isoformat())}"
        train = con.sql(confidence_sql(sp, f"(SELECT * FROM {src} WHERE {C.ts} < {c})", cutoff)).df()
        test = con.sql(confidence_sql(sp, f"(SELECT * FROM {src} WHERE {C.ts} >= {c})", end)).df()
        seen = train[[C.user, C.item]].assign(_seen=True)
        test = test.merge(seen, on=[C.user, C.item], how="left")
        test = test[test["_seen"].isna()].drop(columns="_seen")
    else:
        pairs = con.sql(confidence_sql(sp, src, end)).df()
        rng = np.random.default_rng(params.split.seed)
        shuffled = pairs.iloc[rng.permutation(len(pairs))]
        pos = shuffled.groupby(C.user).cumcount()
        test = shuffled[pos < params.split.n_out]
        train = shuffled[pos >= params.split.n_out]
        cutoff = end
    sort = [C.user, C.item]
    return Split(train.sort_values(sort).reset_index(drop=True),
                 test.sort_values(sort).reset_index(drop=True), cutoff)


def carve_validation(train: pd.DataFrame, params: Params) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(fit part, validation) out of the training period, for early stopping and tuning.

    time: pairs last seen in the final ``model.validation_days`` of the training period are
    the validation (an approximation: their earlier events are not replayed into the fit part);
    leave_n_out: ``model.validation_n`` more random pairs per user, only from users who keep
    at least one pair to fit on. The holdout is never looked at.
    """
    m = params.model
    if params.split.strategy == "time" and "last_ts" in train:
        ts = pd.to_datetime(train["last_ts"], utc=True)
        val_cut = ts.max() - timedelta(days=m.validation_days)
        is_val = (ts > val_cut).to_numpy()
    else:
        rng = np.random.default_rng(params.split.seed + 1)
        order = rng.permutation(len(train))
        shuffled = train.iloc[order]
        pos = shuffled.groupby(C.user).cumcount().to_numpy()
        size = shuffled.groupby(C.user)[C.item].transform("size").to_numpy()
        is_val = np.zeros(len(train), dtype=bool)
        is_val[order] = (pos < m.validation_n) & (size > m.validation_n)
    return (train[~is_val].reset_index(drop=True), train[is_val].reset_index(drop=True))
