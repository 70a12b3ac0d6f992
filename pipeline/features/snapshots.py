"""User and item features in DuckDB SQL, out of core (parquet → parquet).

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
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd

from pipeline.columns import Columns as C
from pipeline.columns import Feast
from pipeline.columns import Features as F
from pipeline.config import EVENTS_FILE, ITEMS_FILE, Params
from pipeline.errors import DataError
from pipeline.features import recent
from pipeline.features.attributes import write_attributes
from pipeline.io import sql_path, sql_str


def _ident(name: str) -> str:
    return re.sub(r"[^0-9a-zA-Z_]", "_", name)


def connect(params: Params) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection in UTC with the configured memory cap (it spills above it)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET memory_limit = {sql_str(params.features.memory_limit)}")
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


def user_feature_columns(params: Params) -> list[str]:
    """Count columns that follow params (event types × windows), in output order."""
    w = params.features.windows_days
    cols = [F.n_events, *[f"{F.n_events}_{d}d" for d in w]]
    for t in params.event_types:
        cols += [f"n_{_ident(t)}", *[f"n_{_ident(t)}_{d}d" for d in w]]
    return cols


def _snaps(times: Sequence[datetime]) -> list[tuple[int, str]]:
    """(epoch µs, TIMESTAMPTZ literal) per snapshot; a naive time is taken as UTC."""
    out = []
    for t in times:
        ts = pd.Timestamp(t)
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        out.append((ts.value // 1000, f"{sql_str(ts.isoformat())}::TIMESTAMPTZ"))
    return out


def _scan(events: str, snaps: list[tuple[int, str]], cols: str) -> str:
    """The events that precede the latest snapshot, with their time as epoch µs (``us``):
    snapshot membership and windows become integer comparisons with constants."""
    return (f"SELECT {cols}, epoch_us({C.ts}::TIMESTAMPTZ) AS us FROM {events} "
            f"WHERE epoch_us({C.ts}::TIMESTAMPTZ) < {max(a for a, _ in snaps)}")


class _Buckets:
    """Every snapshot and window edge, sorted. An event's bucket (how many edges it is at or
    after) says which (snapshot, window) pairs it counts for, so events are first counted per
    (key, event type, bucket) — few aggregates over many rows — and the wide set of
    (type × window × snapshot) columns is then summed from that much smaller table."""

    def __init__(self, snaps: list[tuple[int, str]], windows: Sequence[int]) -> None:
        self.edges = sorted({a for a, _ in snaps} | {a - _us(d) for a, _ in snaps for d in windows})

    def expr(self) -> str:
        return " + ".join(f"(us >= {b})::TINYINT" for b in self.edges)

    def cond(self, a: int, days: int | None = None) -> str:
        """Bucket precedes snapshot ``a`` [and lies within ``days`` of it]."""
        hi = f"b <= {self.edges.index(a)}"
        return hi if days is None else f"{hi} AND b > {self.edges.index(a - _us(days))}"


def _sum_if(cond: str, col: str = "n") -> str:
    return f"sum(CASE WHEN {cond} THEN {col} ELSE 0 END)::BIGINT"


def _long(wide: str, snaps: list[tuple[int, str]], cols: list[tuple[str, str]], key: str,
          present: str) -> str:
    """One row per (entity, snapshot) out of the wide per-entity row: ``{k}`` in each column
    expression is the snapshot's suffix; entities without events before it are left out."""
    parts = []
    for k, (_, lit) in enumerate(snaps):
        sel = ", ".join(f"{expr.format(k=k, asof=lit)} AS {name}" for name, expr in cols)
        parts.append(f"SELECT {key}, {sel}, {lit} AS {C.ts} FROM {wide} "
                     f"WHERE {present.format(k=k)} > 0")
    return " UNION ALL ".join(parts) + f" ORDER BY {C.ts}, {key}"


def pairs_sql(events: str, times: Sequence[datetime]) -> str:
    """Per (user, item): category, and per snapshot ``k`` the events before it (``n__k``) and
    the last one's time in µs (``last__k``). Shared by the user (categories, recent items)
    and the item features (unique users)."""
    snaps = _snaps(times)
    top = max(a for a, _ in snaps)  # the scan keeps only events before it: no condition
    aggs = ", ".join(f"count(*) AS n__{k}, max(us) AS last__{k}" if a == top else
                     f"count_if(us < {a})::BIGINT AS n__{k}, max(CASE WHEN us < {a} THEN us END) "
                     f"AS last__{k}" for k, (a, _) in enumerate(snaps))
    return (f"SELECT {C.user}, {C.item}, any_value({C.category}) AS {C.category}, {aggs} "
            f"FROM ({_scan(events, snaps, f'{C.user}, {C.item}, {C.category}')}) "
            f"GROUP BY {C.user}, {C.item}")


_MAX_N = 2**40  # top-category key: (_MAX_N - count) * n_categories + category rank


def make_pairs(con: duckdb.DuckDBPyConnection, events: str, times: Sequence[datetime],
               name: str = "pairs") -> bool:
    """Create temp table ``name`` (:func:`pairs_sql`); return whether the recent-items sort
    key, (snapshot − last event) µs × (items + 1) + item rank, could overflow BIGINT (then
    the slower HUGEINT is used; a span of years over ~100k items, say)."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {pairs_sql(events, times)}")
    lo, n = con.execute(f"SELECT min(least({', '.join(f'last__{k}' for k in range(len(times)))})),"
                        f" count(DISTINCT {C.item}) FROM {name}").fetchall()[0]
    if lo is None:
        return False
    return (max(a for a, _ in _snaps(times)) - lo + 1) * (n + 2) >= 2**62


def user_features_sql(events: str, params: Params, times: Sequence[datetime], pairs: str,
                      wide_key: bool) -> str:
    """Per (user, as_of in ``times``): counts by type over each window and all time, distinct
    items, purchase rate (purchases / views), mean watch fraction of plays, recency in days,
    the shares of the top-N categories, the most recent items and the seen set (every item
    with an event of a type not in ``features.repeatable_events``, sorted): JSON arrays,
    :mod:`pipeline.features.recent`. Serving excludes the seen set (``serving.exclude_seen``).

    One pass serves every snapshot (an event counts for each snapshot it precedes). Top
    categories (count DESC, category ASC, NULL last) and recent items (last time DESC, item
    ASC) are bounded ``arg_min`` aggregates over one integer key that encodes both sort
    columns (ranks of the category / item ids), not windows over big partitions.
    ``pairs`` names a table made by :func:`pairs_sql` over the same events and times;
    ``wide_key`` (from :func:`make_pairs`) says whether the recent-items key needs HUGEINT.
    """
    snaps = _snaps(times)
    w = params.features.windows_days
    bk = _Buckets(snaps, w)
    buy, view = _buy_view(params)
    n_top, n_recent = params.features.top_categories, params.features.recent_items
    types = list(params.event_types)
    ut_aggs, gt_aggs, t_aggs, t_dec, r_aggs, r_dec = [], [], [], [], [], []
    key_t = "HUGEINT" if wide_key else "BIGINT"
    for k, (a, _) in enumerate(snaps):
        ut_aggs.append(f"{_sum_if(bk.cond(a))} AS n_events__{k}")
        ut_aggs += [f"{_sum_if(bk.cond(a, d))} AS n_events_{d}d__{k}" for d in w]
        play = f"{C.event} = 'play' AND {bk.cond(a)}"
        ut_aggs.append(f"coalesce(sum(CASE WHEN {play} THEN sv END) / "
                       f"nullif(sum(CASE WHEN {play} THEN cv END), 0), 0.0) AS mean_watch__{k}")
        gt_aggs.append(f"{_sum_if(bk.cond(a))} AS n__{k}")
        gt_aggs += [f"{_sum_if(bk.cond(a, d))} AS n_{d}d__{k}" for d in w]
        t_aggs.append(f"min(({_MAX_N} - n__{k}) * nc + rk, {n_top}) FILTER (WHERE n__{k} > 0) "
                      f"AS top__{k}")
        t_dec.append(f"list_transform(top__{k}, lambda x: {{'c': cats[x % nc], "
                     f"'n': {_MAX_N} - x // nc}}) AS top__{k}")
        r_aggs += [f"count_if(n__{k} > 0)::BIGINT AS n_items__{k}",
                   f"timezone('UTC', make_timestamp(max(last__{k}))) AS last_ts__{k}",
                   f"min(({a} - last__{k})::{key_t} * ni + rk, {max(1, n_recent)}) "
                   f"AS recent__{k}"]
        r_dec.append(f"list_transform(recent__{k}, lambda x: items[(x % ni)::BIGINT]) "
                     f"AS recent__{k}")
    names = [F.n_events, *[f"{F.n_events}_{d}d" for d in w]]
    cols = [(n, f"{n}__{{k}}") for n in names]
    per_type = []
    for t in types:  # pivot: one join per type of its (user, type) counts, renamed
        sub = [f"n_{_ident(t)}{s}" for s in ["", *[f"_{d}d" for d in w]]]
        cols += [(n, f"coalesce({n}__{{k}}, 0)") for n in sub]
        ren = ", ".join(f"{g}__{k} AS {n}__{k}" for k in range(len(snaps))
                        for g, n in zip(["n", *[f"n_{d}d" for d in w]], sub, strict=True))
        per_type.append(f"LEFT JOIN (SELECT {C.user}, {ren} FROM gt WHERE {C.event} = {sql_str(t)}) "
                        f"USING ({C.user})")
    nb, nv = f"n_{_ident(buy)}__{{k}}", f"n_{_ident(view)}__{{k}}"
    cols += [("purchase_rate", f"coalesce({nb}, 0)::DOUBLE / greatest(1, coalesce({nv}, 0))"),
             ("mean_watch", "mean_watch__{k}"),
             (F.recency_days, "date_diff('second', last_ts__{k}, {asof}) / 86400.0"),
             ("n_items", "n_items__{k}")]
    for i in range(1, n_top + 1):
        sfx = "" if i == 1 else f"_{i}"
        cols += [(f"{F.top_category}{sfx}", f"top__{{k}}[{i}].c"),
                 (f"{F.top_category}{sfx}_share",
                  f"coalesce(top__{{k}}[{i}].n, 0)::DOUBLE / n_events__{{k}}")]
    cols.append((F.recent_items, recent.sql("recent__{k}") if n_recent else "'[]'"))
    cols.append((F.seen_items, recent.sql("seen__{k}")))
    ev = _scan(events, snaps, f"{C.user}, {C.event}, {C.value}")
    rep = params.features.repeatable_events
    not_rep = f"WHERE {C.event} NOT IN ({', '.join(map(sql_str, rep))})" if rep else ""
    s_aggs = ", ".join(f"list({C.item} ORDER BY {C.item}) FILTER (WHERE first < {a}) AS seen__{k}"
                       for k, (a, _) in enumerate(snaps))
    return f"""
    WITH g AS (SELECT {C.user}, {C.event}, {bk.expr()} AS b, count(*) AS n, sum({C.value}) AS sv,
                 count({C.value}) AS cv FROM ({ev}) GROUP BY ALL),
    ut AS (SELECT {C.user}, {", ".join(ut_aggs)} FROM g GROUP BY {C.user}),
    gt AS (SELECT {C.user}, {C.event}, {", ".join(gt_aggs)} FROM g GROUP BY {C.user}, {C.event}),
    c AS (SELECT {C.user}, {C.category}, {", ".join(f"sum(n__{k})::BIGINT AS n__{k}" for k in range(len(snaps)))}
          FROM {pairs} GROUP BY {C.user}, {C.category}),
    cr AS (SELECT {C.category}, row_number() OVER (ORDER BY {C.category} NULLS LAST) AS rk,
                  count(*) OVER () + 1 AS nc FROM (SELECT DISTINCT {C.category} FROM c)),
    cl AS (SELECT list({C.category} ORDER BY rk) AS cats, count(*) + 1 AS nc FROM cr),
    tk AS (SELECT {C.user}, {", ".join(t_aggs)} FROM c JOIN cr
           ON c.{C.category} IS NOT DISTINCT FROM cr.{C.category} GROUP BY {C.user}),
    t AS (SELECT {C.user}, {", ".join(t_dec)} FROM tk, cl),
    ir AS (SELECT {C.item}, row_number() OVER (ORDER BY {C.item}) AS rk,
                  count(*) OVER () + 1 AS ni FROM (SELECT DISTINCT {C.item} FROM {pairs})),
    il AS (SELECT list({C.item} ORDER BY rk) AS items, count(*) + 1 AS ni FROM ir),
    rk AS (SELECT {C.user}, {", ".join(r_aggs)} FROM {pairs} JOIN ir USING ({C.item}) GROUP BY {C.user}),
    r AS (SELECT rk.* EXCLUDE ({", ".join(f"recent__{k}" for k in range(len(snaps)))}),
                 {", ".join(r_dec)} FROM rk, il),
    sp AS (SELECT {C.user}, {C.item}, min(us) AS first
           FROM ({_scan(events, snaps, f"{C.user}, {C.item}, {C.event}")}) {not_rep} GROUP BY ALL),
    sn AS (SELECT {C.user}, {s_aggs} FROM sp GROUP BY {C.user}),
    wide AS MATERIALIZED (SELECT * FROM ut JOIN t USING ({C.user}) JOIN r USING ({C.user})
          LEFT JOIN sn USING ({C.user}) {" ".join(per_type)})
    {_long("wide", snaps, cols, C.user, "n_events__{k}")}
    """


def item_features_sql(events: str, params: Params, times: Sequence[datetime],
                      pairs: str) -> str:
    """Per (item, as_of in ``times``): popularity over each window and all time, unique
    users, conversion rate (purchases / views) and category. One pass for every snapshot;
    unique users are the (user, item) pairs with an event before it (``pairs`` as in
    :func:`user_features_sql`), not a DISTINCT per snapshot."""
    snaps = _snaps(times)
    w = params.features.windows_days
    bk = _Buckets(snaps, w)
    buy, view = _buy_view(params)
    i_aggs, n_aggs = [], []
    for k, (a, _) in enumerate(snaps):
        i_aggs.append(f"{_sum_if(bk.cond(a))} AS pop_all__{k}")
        i_aggs += [f"{_sum_if(bk.cond(a, d))} AS pop_{d}d__{k}" for d in w]
        i_aggs.append(f"{_sum_if(f'{C.event} = {sql_str(buy)} AND {bk.cond(a)}')}::DOUBLE / "
                      f"greatest(1, {_sum_if(f'{C.event} = {sql_str(view)} AND {bk.cond(a)}')}) "
                      f"AS conversion_rate__{k}")
        n_aggs.append(f"count_if(n__{k} > 0)::BIGINT AS unique_users__{k}")
    cols = [(n, f"{n}__{{k}}") for n in [F.pop_all, *[f"pop_{d}d" for d in w], "unique_users",
                                          F.conversion_rate]]
    cols.append((C.category, f"coalesce({C.category}, 'unknown')"))
    ev = _scan(events, snaps, f"{C.item}, {C.event}")
    return f"""
    WITH g AS (SELECT {C.item}, {C.event}, {bk.expr()} AS b, count(*) AS n FROM ({ev})
               GROUP BY ALL),
    i AS (SELECT {C.item}, {", ".join(i_aggs)} FROM g GROUP BY {C.item}),
    n AS (SELECT {C.item}, {", ".join(n_aggs)}, any_value({C.category}) AS {C.category}
          FROM {pairs} GROUP BY {C.item}),
    wide AS MATERIALIZED (SELECT * FROM i JOIN n USING ({C.item}))
    {_long("wide", snaps, cols, C.item, "pop_all__{k}")}
    """


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def open_events(con: duckdb.DuckDBPyConnection, validated: Path, extra: str | None = None) -> None:
    """Create view ``ev`` (usable events + item category) over the validated parquet files.

    ``extra`` names a registered relation of further canonical events (pushed fresh events).
    Rows without a user or item id cannot be attributed and are left out.
    """
    ev_file, items_file = validated / EVENTS_FILE, validated / ITEMS_FILE
    cols = ", ".join(C.EVENT_TABLE)
    try:
        src = f"SELECT {cols} FROM read_parquet({sql_path(ev_file)})"
        if extra:
            src += f" UNION ALL SELECT {cols} FROM {extra}"
        con.sql(f"CREATE OR REPLACE VIEW raw AS {src}")
        if items_file.exists():
            # one row per item: a feature never counts an event twice, and DuckDB drops the
            # join from every query that does not need the category
            con.sql(f"CREATE OR REPLACE VIEW items AS SELECT {C.item}, min({C.category}) AS "
                    f"{C.category} FROM read_parquet({sql_path(items_file)}) GROUP BY {C.item}")
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
    ev_file = validated / EVENTS_FILE
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
    ev_file = validated / EVENTS_FILE
    if not ev_file.exists():
        raise DataError(f"{ev_file}: missing. Run 'recflow validate' first.")
    con = connect(params)
    open_events(con, validated)
    _check_batch(con, validated)
    times = snapshot_times(con, "ev", params)
    out_dir.mkdir(parents=True, exist_ok=True)
    targets = [out_dir / Feast.user_file, out_dir / Feast.item_file]
    tmps = {t: t.with_name(f".{t.name}.tmp-{os.getpid()}") for t in targets}
    rows: dict[str, int] = {}
    try:
        wide = make_pairs(con, "ev", times)
        sqls = {targets[0]: user_features_sql("ev", params, times, "pairs", wide),
                targets[1]: item_features_sql("ev", params, times, "pairs")}
        for target, sql in sqls.items():
            con.execute(f"COPY ({sql}) TO {sql_path(tmps[target])} (FORMAT parquet)")
            rows[target.name] = con.execute(
                f"SELECT count(*) FROM read_parquet({sql_path(tmps[target])})").fetchall()[0][0]  # type: ignore[index]
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
    return {"user_rows": rows[Feast.user_file], "item_rows": rows[Feast.item_file],
            "snapshots": [str(pd.Timestamp(t)) for t in times],
            **write_attributes(validated, out_dir)}


def features_as_of(con: duckdb.DuckDBPyConnection, user_ids: list[str], as_of: datetime,
                   params: Params, source: str = "ev") -> pd.DataFrame:
    """User features of ``user_ids`` as of ``as_of`` over view ``ev`` (same SQL as the stage).
    ``source``: a relation holding at least these users' rows of ``ev`` (a user's features
    read only their own events), so many calls need not scan every event each."""
    con.execute("CREATE OR REPLACE TEMP TABLE push_users AS SELECT unnest($u::VARCHAR[]) AS u",
                {"u": user_ids})
    con.sql(f"CREATE OR REPLACE TEMP VIEW ev_push AS SELECT * FROM {source} "
            f"WHERE {C.user} IN (SELECT u FROM push_users)")
    wide = make_pairs(con, "ev_push", [as_of], "push_pairs")
    df = con.sql(user_features_sql("ev_push", params, [as_of], "push_pairs", wide)).df()
    df[C.ts] = pd.to_datetime(df[C.ts], utc=True).dt.as_unit("us")
    return df
