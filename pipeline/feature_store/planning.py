"""Materialization planning: register the Feast objects, then load the online store incrementally.

Each feature view keeps a watermark per online store (``feature_repo/data/materialized.json``):
the end of the last window written. A run materializes only ``(watermark, newest row]``; the
first run (no watermark, or a SQLite file that is gone) writes an explicit window over all the
rows that exist. ``materialize_incremental`` is never used: on a first run it starts at
now − ttl and silently skips older rows. ``recflow backfill`` rewrites an explicit window.

Windows are written by :mod:`pipeline.feature_store.writer` (the newest row per entity in
``[start, end)``, in Feast's exact online layout, one SQLite transaction / a Redis undo log);
a view or store it cannot reproduce exactly goes through Feast's own ``materialize``. A
watermark moves only after its window was written.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from pipeline.columns import Columns as C
from pipeline.columns import Feast
from pipeline.config import Paths
from pipeline.errors import ConfigError, DataError
from pipeline.feature_store import store, writer
from pipeline.io import read_json, write_json

log = logging.getLogger("recflow.materialize")
#: view name → (feature file, join key)
VIEWS = Feast.VIEWS
_EPS = timedelta(microseconds=1)


@dataclass(frozen=True)
class Window:
    view: str
    start: datetime
    end: datetime
    entities: int  # distinct entities with a row in the window (what gets written)


def _span(path: Path, key: str, start: datetime | None = None,
          end: datetime | None = None) -> tuple[datetime | None, datetime | None, int]:
    """(min ts, max ts, distinct keys) of the rows of ``path`` in [start, end)."""
    where = []
    if start is not None:
        where.append(f"{C.ts} >= $s")
    if end is not None:
        where.append(f"{C.ts} < $e")
    cond = f"WHERE {' AND '.join(where)}" if where else ""
    args = {k: v for k, v in (("s", start), ("e", end)) if v is not None}
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        lo, hi, n = con.execute(
            f"SELECT min({C.ts}), max({C.ts}), count(DISTINCT {key}) "
            f"FROM read_parquet('{path}') {cond}", args).fetchall()[0]
    except duckdb.Error as e:
        raise DataError(f"{path}: cannot be read ({str(e).splitlines()[0]}). "
                        "Run 'recflow features' again.") from None
    finally:
        con.close()
    return lo, hi, int(n)


def _files(paths: Paths) -> dict[str, Path]:
    out = {}
    for view, (name, _) in VIEWS.items():
        f = paths.feature_data / name
        if not f.exists():
            raise DataError(f"{f}: missing. Run 'recflow features' first.")
        out[view] = f
    return out


def load_watermarks(paths: Paths, sid: str) -> dict[str, datetime]:
    f = paths.watermarks
    if not f.exists():
        return {}
    if sid == "sqlite" and not paths.online_db.exists():
        return {}  # the online store is gone: everything must be written again
    marks = read_json(f).get(sid, {})
    return {v: datetime.fromisoformat(t) for v, t in marks.items()}


def save_watermarks(paths: Paths, sid: str, marks: dict[str, datetime]) -> None:
    f = paths.watermarks
    data = read_json(f) if f.exists() else {}
    data[sid] = {v: t.isoformat() for v, t in sorted(marks.items())}
    write_json(f, data)


def plan(paths: Paths, marks: dict[str, datetime]) -> list[Window]:
    """The windows still to write: (watermark, newest row] per view; all rows on a first run."""
    out = []
    for view, f in _files(paths).items():
        key = VIEWS[view][1]
        lo, hi, _ = _span(f, key)
        if hi is None:
            continue
        end = hi + _EPS  # Feast's window is [start, end): include the newest row
        start = marks.get(view) or lo
        if start >= end:
            continue
        n = _span(f, key, start, end)[2]
        out.append(Window(view, start, end, n))
    return out


def _write(fs, windows: list[Window]) -> tuple[float, dict[str, str]]:
    """Write each window with the batched writer (Feast's own materialize where it cannot);
    returns the seconds and which writer each view used."""
    t0 = time.perf_counter()
    used = {}
    for w in windows:
        why = writer.unsupported(fs, w.view)
        if why is None:
            writer.write_view(fs, w.view, w.start, w.end)
            used[w.view] = "recflow"
        else:
            log.info("materialize %s through Feast: %s", w.view, why)
            store.materialize(fs, w.start, w.end, [w.view])
            used[w.view] = f"feast ({why})"
    return time.perf_counter() - t0, used


def _report(paths: Paths, fs, mode: str, names: list[str], windows: list[Window],
            secs: float, used: dict[str, str]) -> dict:
    rows = sum(w.entities for w in windows)
    report = {
        "mode": mode,
        "online_store": store.store_id(fs),
        "objects": names,
        "windows": [{"view": w.view, "start": w.start.isoformat(), "end": w.end.isoformat(),
                     "entity_rows": w.entities, "writer": used.get(w.view)} for w in windows],
        "entity_rows": rows,
        "seconds": round(secs, 3),
        "entity_rows_per_second": round(rows / secs, 1) if secs and rows else None,
    }
    write_json(paths.materialize_report, report)
    return report


def _open(paths: Paths, online: str | None):
    """(feature files, store, store id, applied object names, watermarks) for a write."""
    files = _files(paths)
    fs = store.open_store(paths, online)
    sid = store.store_id(fs)
    writer.create_sqlite(fs)  # before apply: apply creates the file otherwise
    names = store.apply(fs, paths.feature_repo)
    return files, fs, sid, names, load_watermarks(paths, sid)


def materialize(paths: Paths, online: str | None = None) -> dict:
    """Incremental materialization (the stage): only windows after each view's watermark."""
    files, fs, sid, names, marks = _open(paths, online)
    mode = "incremental" if all(v in marks for v in files) else "first"
    windows = plan(paths, marks)
    secs, used = _write(fs, windows)
    save_watermarks(paths, sid, {**marks, **{w.view: w.end for w in windows}})
    return _report(paths, fs, mode, names, windows, secs, used)


def backfill(paths: Paths, start: datetime | None = None, end: datetime | None = None,
             online: str | None = None) -> dict:
    """Rewrite an explicit window [start, end) (default: every row) of every view."""
    if start and end and start >= end:
        raise ConfigError(f"--start {start.isoformat()} must be before --end {end.isoformat()}.")
    files, fs, sid, names, marks = _open(paths, online)
    windows = []
    for view, f in files.items():
        key = VIEWS[view][1]
        lo, hi, _ = _span(f, key)
        if hi is None:
            continue
        s, e = start or lo, end or hi + _EPS
        n = _span(f, key, s, e)[2]
        if n:
            windows.append(Window(view, s, e, n))
    secs, used = _write(fs, windows)
    # a backfill only moves a watermark forward (an old window does not undo newer writes)
    for w in windows:
        marks[w.view] = max(marks.get(w.view, w.end), w.end)
    save_watermarks(paths, sid, marks)
    return _report(paths, fs, "backfill", names, windows, secs, used)


def summary(report: dict) -> dict:
    """What the run wrote: users / items are the entity rows written this time."""
    per = {v: sum(w["entity_rows"] for w in report["windows"] if w["view"] == v) for v in VIEWS}
    return {"mode": report["mode"], "online": report["online_store"],
            "users": per[Feast.user_view], "items": per[Feast.item_view],
            "seconds": report["seconds"]}


def parse_time(text: str | None, flag: str) -> datetime | None:
    """An ISO date/time from the command line, as UTC."""
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: expected an ISO date or time, e.g. 2026-10-01.") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def run_backfill(paths: Paths, start: str | None, end: str | None) -> dict:
    return summary(backfill(paths, parse_time(start, "--start"), parse_time(end, "--end")))
