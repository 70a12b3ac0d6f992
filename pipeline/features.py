"""Stage ``features``: user and item features in DuckDB SQL, out of core (parquet → parquet).

Features are computed as *snapshots*: one row per entity per ``as_of`` time, using only
events strictly before it, stamped ``event_timestamp = as_of``. Feast's point-in-time join
then hands the train stage the snapshot at the split cutoff (no holdout information) and the
online store the latest one. Snapshots: the split cutoff and the end of the data.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd

from pipeline.columns import Columns as C
from pipeline.config import Params, Paths
from pipeline.errors import DataError
from pipeline.io import write_parquet

USER_FILE = "user_features.parquet"
ITEM_FILE = "item_features.parquet"


def _ident(name: str) -> str:
    return re.sub(r"[^0-9a-zA-Z_]", "_", name)


def snapshot_times(con: duckdb.DuckDBPyConnection, events: str, params: Params) -> list[datetime]:
    """The split cutoff (time split only) and one microsecond past the last event."""
    lo, hi = con.execute(f"SELECT min({C.ts}), max({C.ts}) FROM {events}").fetchall()[0]
    if hi is None:
        return []
    end = hi + timedelta(microseconds=1)
    times = [end]
    if params.split.strategy == "time":
        cut = end - timedelta(days=params.split.test_days)
        if cut > lo:
            times.insert(0, cut)
    return times


def user_features_sql(events: str, params: Params) -> str:
    w = params.features.windows_days
    types = params.event_types
    counts = ",\n".join(
        [f"count(*) FILTER (WHERE {C.event} = '{t}') AS n_{_ident(t)}" for t in types]
        + [f"count(*) FILTER (WHERE {C.ts} >= as_of - INTERVAL {d} DAY) AS n_events_{d}d" for d in w]
    )
    buy = "purchase" if "purchase" in types else types[0]
    view = "view" if "view" in types else types[0]
    return f"""
    WITH j AS (SELECT s.as_of, e.* FROM {events} e JOIN snaps s ON e.{C.ts} < s.as_of),
    agg AS (
        SELECT {C.user}, as_of,
               count(*) AS n_events,
               {counts},
               count(DISTINCT {C.item}) AS n_items,
               (count(*) FILTER (WHERE {C.event} = '{buy}'))::DOUBLE
                   / greatest(1, count(*) FILTER (WHERE {C.event} = '{view}')) AS purchase_rate,
               coalesce(avg({C.value}) FILTER (WHERE {C.event} = 'play'), 0.0) AS mean_watch,
               date_diff('second', max({C.ts}), as_of) / 86400.0 AS recency_days
        FROM j GROUP BY {C.user}, as_of
    ), cat AS (
        SELECT {C.user}, as_of, {C.category}, count(*) AS n,
               row_number() OVER (PARTITION BY {C.user}, as_of ORDER BY count(*) DESC, {C.category}) AS rn
        FROM j GROUP BY {C.user}, as_of, {C.category}
    ), rec AS (
        SELECT {C.user}, as_of, {C.item}, max({C.ts}) AS last,
               row_number() OVER (PARTITION BY {C.user}, as_of ORDER BY max({C.ts}) DESC, {C.item}) AS rn
        FROM j GROUP BY {C.user}, as_of, {C.item}
    ), recent AS (
        SELECT {C.user}, as_of, string_agg({C.item}, ',' ORDER BY rn) AS recent_items
        FROM rec WHERE rn <= {params.features.recent_items} GROUP BY {C.user}, as_of
    )
    SELECT a.*, c.{C.category} AS top_category, c.n::DOUBLE / a.n_events AS top_category_share,
           coalesce(r.recent_items, '') AS recent_items, a.as_of AS {C.ts}
    FROM agg a
    LEFT JOIN cat c ON c.{C.user} = a.{C.user} AND c.as_of = a.as_of AND c.rn = 1
    LEFT JOIN recent r ON r.{C.user} = a.{C.user} AND r.as_of = a.as_of
    ORDER BY a.as_of, a.{C.user}
    """


def item_features_sql(events: str, params: Params) -> str:
    w = params.features.windows_days
    types = params.event_types
    buy = "purchase" if "purchase" in types else types[0]
    view = "view" if "view" in types else types[0]
    pops = ",\n".join(
        f"count(*) FILTER (WHERE {C.ts} >= as_of - INTERVAL {d} DAY) AS pop_{d}d" for d in w
    )
    return f"""
    WITH j AS (SELECT s.as_of, e.* FROM {events} e JOIN snaps s ON e.{C.ts} < s.as_of)
    SELECT {C.item}, as_of,
           count(*) AS pop_all,
           {pops},
           count(DISTINCT {C.user}) AS unique_users,
           (count(*) FILTER (WHERE {C.event} = '{buy}'))::DOUBLE
               / greatest(1, count(*) FILTER (WHERE {C.event} = '{view}')) AS conversion_rate,
           coalesce(any_value({C.category}), 'unknown') AS {C.category},
           as_of AS {C.ts}
    FROM j GROUP BY {C.item}, as_of
    ORDER BY as_of, {C.item}
    """


def build(validated: Path, params: Params) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(user_features, item_features) from the validated events folder."""
    ev_file, items_file = validated / "events.parquet", validated / "items.parquet"
    con = duckdb.connect()
    try:
        con.sql(f"CREATE VIEW raw AS SELECT * FROM read_parquet('{ev_file}')")
        con.sql(f"CREATE VIEW items AS SELECT * FROM read_parquet('{items_file}')")
    except duckdb.Error as e:
        raise DataError(f"{validated}: cannot read validated events ({str(e).splitlines()[0]}). Re-run 'recflow validate'.") from None
    con.sql(
        f"CREATE VIEW ev AS SELECT r.*, i.{C.category} FROM raw r "
        f"LEFT JOIN items i USING ({C.item})"
    )
    times = snapshot_times(con, "ev", params)
    if not times:
        raise DataError(f"{ev_file}: no validated events; nothing to build features from.")
    con.execute("CREATE TABLE snaps AS SELECT unnest($t::TIMESTAMPTZ[]) AS as_of", {"t": times})
    users = con.sql(user_features_sql("ev", params)).df().drop(columns=["as_of"])
    items = con.sql(item_features_sql("ev", params)).df().drop(columns=["as_of"])
    for df in (users, items):
        df[C.ts] = pd.to_datetime(df[C.ts], utc=True).dt.as_unit("us")
    return users, items


def run(params: Params, paths: Paths) -> dict:
    users, items = build(paths.validated, params)
    write_parquet(users, paths.feature_data / USER_FILE)
    write_parquet(items, paths.feature_data / ITEM_FILE)
    return {
        "user_rows": len(users),
        "item_rows": len(items),
        "snapshots": sorted(str(t) for t in users[C.ts].unique()),
    }
