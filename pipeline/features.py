"""Stage ``features``: user and item features in DuckDB SQL, out of core (parquet → parquet).

Features are computed as *snapshots*: one row per entity per ``as_of`` time, using only
events strictly before it, stamped ``event_timestamp = as_of``. Feast's point-in-time join
then hands the train stage the snapshot at the split cutoff (no holdout information) and the
online store the latest one. Snapshots: the split cutoff and the end of the data.

DuckDB reads the validated parquet and writes the feature parquet itself (``COPY``), so the
events never become a pandas frame; above ``features.memory_limit`` it spills to disk. Both
files are written to temp paths first and swapped in only when both are complete: a bad
batch leaves the previous features (and so the online store) as they were.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd

from pipeline.columns import Columns as C
from pipeline.config import Params, Paths
from pipeline.errors import DataError

USER_FILE = "user_features.parquet"
ITEM_FILE = "item_features.parquet"


def _ident(name: str) -> str:
    return re.sub(r"[^0-9a-zA-Z_]", "_", name)


def _lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def connect(params: Params) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection in UTC with the configured memory cap (it spills above it)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET memory_limit = {_lit(params.features.memory_limit)}")
    con.execute(f"SET threads = {int(params.features.threads)}")
    con.execute("SET preserve_insertion_order = false")
    return con


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


def _buy_view(params: Params) -> tuple[str, str]:
    types = params.event_types
    return ("purchase" if "purchase" in types else types[0],
            "view" if "view" in types else types[0])


def _us(days: int) -> int:
    return days * 86_400 * 1_000_000


def _joined(events: str, snaps: str) -> str:
    """Each event once per snapshot it precedes, with its age (µs) at that snapshot; windows
    compare the age with constants instead of doing timestamp arithmetic per row."""
    return (f"SELECT s.as_of, e.*, epoch_us(s.as_of) - epoch_us(e.{C.ts}::TIMESTAMPTZ) AS age "
            f"FROM {events} e JOIN {snaps} s ON e.{C.ts} < s.as_of")


def user_feature_columns(params: Params) -> list[str]:
    """Count columns that follow params (event types × windows), in output order."""
    w = params.features.windows_days
    cols = ["n_events", *[f"n_events_{d}d" for d in w]]
    for t in params.event_types:
        cols += [f"n_{_ident(t)}", *[f"n_{_ident(t)}_{d}d" for d in w]]
    return cols


def user_features_sql(events: str, params: Params, snaps: str = "snaps") -> str:
    """Per (user, as_of): counts by type over each window and all time, distinct items,
    purchase rate (purchases / views), mean watch fraction of plays, recency in days,
    the shares of the top-N categories and the most recent items (comma-separated)."""
    w = params.features.windows_days
    buy, view = _buy_view(params)
    counts = [f"count(*) FILTER (WHERE age <= {_us(d)}) AS n_events_{d}d" for d in w]
    for t in params.event_types:
        counts.append(f"count(*) FILTER (WHERE {C.event} = {_lit(t)}) AS n_{_ident(t)}")
        counts += [f"count(*) FILTER (WHERE {C.event} = {_lit(t)} AND age <= {_us(d)}) "
                   f"AS n_{_ident(t)}_{d}d" for d in w]
    n_top = params.features.top_categories
    tops = []
    for k in range(1, n_top + 1):
        sfx = "" if k == 1 else f"_{k}"
        tops.append(f"max({C.category}) FILTER (WHERE rn = {k}) AS top_category{sfx}")
        tops.append(f"coalesce(max(n) FILTER (WHERE rn = {k}), 0)::DOUBLE / max(tot) "
                    f"AS top_category{sfx}_share")
    return f"""
    WITH j AS ({_joined(events, snaps)}),
    agg AS (
        SELECT {C.user}, as_of,
               count(*) AS n_events,
               {", ".join(counts)},
               (count(*) FILTER (WHERE {C.event} = {_lit(buy)}))::DOUBLE
                   / greatest(1, count(*) FILTER (WHERE {C.event} = {_lit(view)})) AS purchase_rate,
               coalesce(avg({C.value}) FILTER (WHERE {C.event} = 'play'), 0.0) AS mean_watch,
               date_diff('second', max({C.ts}), as_of) / 86400.0 AS recency_days
        FROM j GROUP BY {C.user}, as_of
    ), cat AS (
        SELECT {C.user}, as_of, {C.category}, count(*) AS n,
               sum(count(*)) OVER (PARTITION BY {C.user}, as_of) AS tot,
               row_number() OVER (PARTITION BY {C.user}, as_of
                                  ORDER BY count(*) DESC, {C.category}) AS rn
        FROM j GROUP BY {C.user}, as_of, {C.category}
    ), top AS (
        SELECT {C.user}, as_of, {", ".join(tops)}
        FROM cat WHERE rn <= {n_top} GROUP BY {C.user}, as_of
    ), pair AS (
        SELECT {C.user}, as_of, {C.item}, max({C.ts}) AS last,
               row_number() OVER (PARTITION BY {C.user}, as_of
                                  ORDER BY max({C.ts}) DESC, {C.item}) AS rn
        FROM j GROUP BY {C.user}, as_of, {C.item}
    ), recent AS (
        SELECT {C.user}, as_of, count(*) AS n_items,
               string_agg({C.item}, ',' ORDER BY rn) FILTER (WHERE rn <= {params.features.recent_items})
                   AS recent_items
        FROM pair GROUP BY {C.user}, as_of
    )
    SELECT a.* EXCLUDE (as_of), r.n_items, t.* EXCLUDE ({C.user}, as_of),
           coalesce(r.recent_items, '') AS recent_items, a.as_of AS {C.ts}
    FROM agg a
    LEFT JOIN top t ON t.{C.user} = a.{C.user} AND t.as_of = a.as_of
    LEFT JOIN recent r ON r.{C.user} = a.{C.user} AND r.as_of = a.as_of
    ORDER BY a.as_of, a.{C.user}
    """


def item_features_sql(events: str, params: Params, snaps: str = "snaps") -> str:
    """Per (item, as_of): popularity over each window and all time, unique users, conversion
    rate (purchases / views) and category."""
    w = params.features.windows_days
    buy, view = _buy_view(params)
    pops = ",\n".join(f"count(*) FILTER (WHERE age <= {_us(d)}) AS pop_{d}d" for d in w)
    return f"""
    WITH j AS ({_joined(events, snaps)})
    SELECT {C.item},
           count(*) AS pop_all,
           {pops},
           count(DISTINCT {C.user}) AS unique_users,
           (count(*) FILTER (WHERE {C.event} = {_lit(buy)}))::DOUBLE
               / greatest(1, count(*) FILTER (WHERE {C.event} = {_lit(view)})) AS conversion_rate,
           coalesce(any_value({C.category}), 'unknown') AS {C.category},
           as_of AS {C.ts}
    FROM j GROUP BY {C.item}, as_of
    ORDER BY as_of, {C.item}
    """


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def open_events(con: duckdb.DuckDBPyConnection, validated: Path, extra: str | None = None) -> None:
    """Create view ``ev`` (usable events + item category) over the validated parquet files.

    ``extra`` names a registered relation of further canonical events (pushed fresh events).
    Rows without a user or item id cannot be attributed and are left out.
    """
    ev_file, items_file = validated / "events.parquet", validated / "items.parquet"
    cols = ", ".join(C.EVENT_TABLE)
    try:
        src = f"SELECT {cols} FROM read_parquet({_lit(str(ev_file))})"
        if extra:
            src += f" UNION ALL SELECT {cols} FROM {extra}"
        con.sql(f"CREATE OR REPLACE VIEW raw AS {src}")
        if items_file.exists():
            con.sql(f"CREATE OR REPLACE VIEW items AS SELECT {C.item}, {C.category} "
                    f"FROM read_parquet({_lit(str(items_file))})")
        else:
            con.sql(f"CREATE OR REPLACE VIEW items AS SELECT NULL::VARCHAR AS {C.item}, "
                    f"NULL::VARCHAR AS {C.category} WHERE false")
        con.sql(
            f"CREATE OR REPLACE VIEW ev AS SELECT r.*, i.{C.category}::VARCHAR AS {C.category} "
            f"FROM raw r LEFT JOIN items i USING ({C.item}) "
            f"WHERE r.{C.user} IS NOT NULL AND trim(r.{C.user}::VARCHAR) <> '' "
            f"AND r.{C.item} IS NOT NULL"
        )
    except duckdb.Error as e:
        raise DataError(f"{validated}: cannot read validated events ({_first_line(e)}). "
                        "Re-run 'recflow validate'.") from None


def _check_batch(con: duckdb.DuckDBPyConnection, validated: Path) -> None:
    """Refuse an unusable batch with a message that says which case it is."""
    ev_file = validated / "events.parquet"
    try:
        total, usable = con.execute("SELECT (SELECT count(*) FROM raw), (SELECT count(*) FROM ev)"
                                    ).fetchall()[0]
    except duckdb.Error as e:
        raise DataError(f"{ev_file}: cannot be read ({_first_line(e)}). "
                        "Re-run 'recflow validate'.") from None
    if total == 0:
        raise DataError(f"{ev_file}: the validated batch is empty; nothing to build features "
                        "from. Previous features kept.")
    if usable == 0:
        raise DataError(f"{ev_file}: none of the {total} events has a known user (every "
                        "user_id/item_id is missing). Previous features kept.")


def write(validated: Path, out_dir: Path, params: Params) -> dict:
    """Build both feature files into ``out_dir`` (temp names, then swapped in together)."""
    ev_file = validated / "events.parquet"
    if not ev_file.exists():
        raise DataError(f"{ev_file}: missing. Run 'recflow validate' first.")
    con = connect(params)
    open_events(con, validated)
    _check_batch(con, validated)
    times = snapshot_times(con, "ev", params)
    con.execute("CREATE TABLE snaps AS SELECT unnest($t::TIMESTAMPTZ[]) AS as_of", {"t": times})
    out_dir.mkdir(parents=True, exist_ok=True)
    targets = {out_dir / USER_FILE: user_features_sql("ev", params),
               out_dir / ITEM_FILE: item_features_sql("ev", params)}
    tmps = {t: t.with_name(f".{t.name}.tmp-{os.getpid()}") for t in targets}
    rows: dict[str, int] = {}
    try:
        for target, sql in targets.items():
            con.execute(f"COPY ({sql}) TO {_lit(str(tmps[target]))} (FORMAT parquet)")
            rows[target.name] = con.execute(
                f"SELECT count(*) FROM read_parquet({_lit(str(tmps[target]))})").fetchall()[0][0]  # type: ignore[index]
    except duckdb.Error as e:
        raise DataError(f"{validated}: feature build failed ({_first_line(e)}). "
                        "Previous features kept.") from None
    finally:
        con.close()
        if len(rows) < len(targets):
            for t in tmps.values():
                t.unlink(missing_ok=True)
    for target, tmp in tmps.items():  # both complete: swap them in
        os.replace(tmp, target)
    return {"user_rows": rows[USER_FILE], "item_rows": rows[ITEM_FILE],
            "snapshots": [str(pd.Timestamp(t)) for t in times]}


def build(validated: Path, params: Params) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(user_features, item_features) as frames — for tests and small data; the stage uses
    :func:`write`, which never materialises anything in pandas."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        write(validated, Path(d), params)
        users = pd.read_parquet(Path(d) / USER_FILE)
        items = pd.read_parquet(Path(d) / ITEM_FILE)
    return users, items


def features_as_of(con: duckdb.DuckDBPyConnection, user_ids: list[str], as_of: datetime,
                   params: Params) -> pd.DataFrame:
    """User features of ``user_ids`` as of ``as_of`` over view ``ev`` (same SQL as the stage)."""
    con.execute("CREATE OR REPLACE TEMP TABLE push_snaps AS SELECT $t::TIMESTAMPTZ AS as_of",
                {"t": as_of})
    con.execute("CREATE OR REPLACE TEMP TABLE push_users AS SELECT unnest($u::VARCHAR[]) AS u",
                {"u": user_ids})
    con.sql(f"CREATE OR REPLACE TEMP VIEW ev_push AS SELECT * FROM ev "
            f"WHERE {C.user} IN (SELECT u FROM push_users)")
    df = con.sql(user_features_sql("ev_push", params, snaps="push_snaps")).df()
    df[C.ts] = pd.to_datetime(df[C.ts], utc=True).dt.as_unit("us")
    return df


def run(params: Params, paths: Paths) -> dict:
    return write(paths.validated, paths.feature_data, params)
