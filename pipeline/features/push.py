"""Fresh events online: events that arrive after the last batch reach the online store now.

``push_events`` validates a batch with the same rules as the ``validate`` stage, recomputes
the affected users' features *as of now* with the same DuckDB SQL as the ``features`` stage
(validated history + every event pushed since), and pushes the rows through the Feast push
source. Accepted events are kept in ``data/pushed/`` so a later push still counts them; only
pushed events newer than the validated data are added, so a batch that has since been
ingested is not counted twice. The CLI (``recflow push-events FILE``) and the serving API call
the same function.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from pipeline.columns import Columns as C
from pipeline.columns import Feast
from pipeline.config import Params, Paths
from pipeline.data.suite import check
from pipeline.errors import DataError
from pipeline.feature_store import store
from pipeline.feature_store.planning import load_watermarks
from pipeline.features import snapshots
from pipeline.io import sql_path, sql_str, write_parquet

log = logging.getLogger("recflow.freshness")


def read_events(path: Path) -> pd.DataFrame:
    """Canonical events from a csv or parquet file (timestamps parsed as UTC)."""
    if not path.exists():
        raise DataError(f"{path}: not found.")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        elif path.suffix.lower() == ".csv":
            # the input contract: only an empty field is null ("NA" is an id, as in ingest)
            df = pd.read_csv(path, dtype={C.user: "string", C.item: "string", C.event: "string"},
                             keep_default_na=False, na_values=[""])
        else:
            raise DataError(f"{path}: expected a .csv or .parquet file of canonical events.")
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user problem
        raise DataError(f"{path}: cannot be read ({type(e).__name__}: "
                        f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}).") from None
    if C.ts in df.columns:
        df[C.ts] = pd.to_datetime(df[C.ts], utc=True, errors="coerce")
    for col in (C.user, C.item, C.event):
        if col in df.columns:
            df[col] = df[col].astype(object).where(df[col].notna(), None)
    return df


def push_events(params: Params, paths: Paths, events: pd.DataFrame, fs=None,
                now: datetime | None = None) -> dict:
    """Validate ``events``, recompute the affected users' features as of now, push them online.

    Returns a summary (accepted / quarantined / users pushed / as_of). A batch that fails
    validation or has no usable row raises DataError and pushes nothing.
    """
    now = now or datetime.now(UTC)
    fs = fs or store.open_store(paths)
    if Feast.user_view not in load_watermarks(paths, store.store_id(fs)):
        raise DataError(f"online store {store.store_id(fs)}: not materialized yet; run "
                        "'recflow materialize' before pushing fresh events.")
    out = check(events, params, now=now)
    if not out.ok:
        raise DataError(f"pushed events refused ({'; '.join(out.lines())}); nothing pushed.")
    accepted = out.accepted[list(C.EVENT_TABLE)].copy()
    if accepted.empty:
        raise DataError("pushed events: no row passed validation; nothing pushed.")
    accepted[C.ts] = pd.to_datetime(accepted[C.ts], utc=True).dt.as_unit("us")
    accepted[C.value] = pd.to_numeric(accepted[C.value], errors="coerce").astype("float64")

    digest = hashlib.sha256(pd.util.hash_pandas_object(accepted, index=False).to_numpy()
                            ).hexdigest()[:12]
    write_parquet(accepted, paths.pushed / f"pushed-{digest}.parquet")

    con = snapshots.connect(params)
    try:
        pushed = sorted(paths.pushed.glob("pushed-*.parquet"))
        files = ", ".join(sql_path(p) for p in pushed)
        con.sql(f"CREATE TEMP VIEW fresh_all AS SELECT * FROM read_parquet([{files}])")
        ev_file = paths.validated_events
        if ev_file.exists():
            hi = con.execute(f"SELECT max({C.ts}) FROM read_parquet({sql_path(ev_file)})").fetchall()[0][0]  # type: ignore[index]
            cond = f"WHERE {C.ts} > {sql_str(pd.Timestamp(hi).isoformat())}::TIMESTAMPTZ" if hi else ""
            con.sql(f"CREATE TEMP VIEW fresh AS SELECT * FROM fresh_all {cond}")
            snapshots.open_events(con, paths.validated, extra="fresh")
        else:  # no history yet: the fresh events are all there is
            con.sql("CREATE TEMP VIEW fresh AS SELECT * FROM fresh_all")
            _fresh_only(con)
        as_of = max(now, accepted[C.ts].max().to_pydatetime() + timedelta(microseconds=1))
        users = sorted(accepted[C.user].astype(str).unique())
        rows = snapshots.features_as_of(con, users, as_of, params)
    finally:
        con.close()
    store.push_users(fs, rows)
    log.debug("pushed features of %d users as of %s", len(rows), as_of.isoformat())
    return {"rows": len(events), "accepted": len(accepted), "quarantined": len(out.quarantined),
            "users_pushed": len(rows), "as_of": as_of.isoformat()}


def _fresh_only(con) -> None:
    con.sql(f"CREATE OR REPLACE VIEW ev AS SELECT *, NULL::VARCHAR AS {C.category} FROM fresh")


def run_file(params: Params, paths: Paths, path: Path) -> dict:
    return push_events(params, paths, read_events(path))
