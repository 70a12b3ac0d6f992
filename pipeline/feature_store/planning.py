"""Materialization planning: register the Feast objects, then bring the online store to the
newest offline row of every entity — keyed on content, not on a time watermark.

Per view and online store, :mod:`pipeline.feature_store.fingerprint` compares the newest offline
row per entity with what materialization last wrote there: new and changed rows are written
(whatever their timestamp: a rebuild with the same snapshot times is seen), unchanged ones are
skipped, entities gone from the features are removed online. The writer never puts a row over a
newer one (rows pushed since the snapshot survive). ``recflow backfill`` rewrites every row
(or an explicit window's newest rows) under the same never-older rule.

Rows are written by :mod:`pipeline.feature_store.writer` (Feast's exact online layout, one SQLite
transaction / a Redis undo log); a view or store it cannot reproduce exactly goes through
Feast's own ``materialize`` over every row, whenever anything changed (no removals there).
``materialize_incremental`` is never used: on a first run it starts at now − ttl and silently
skips older rows.

Outputs: ``reports/materialize.json`` (``reports/backfill.json`` for a backfill) with the
new / changed / unchanged / removed / kept-newer counts per view, and the materialization
record ``feature_repo/data/materialized.json`` (the stage's DVC out; see ``fingerprint``).
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pipeline.columns import Feast
from pipeline.config import Paths
from pipeline.errors import ConfigError, DataError
from pipeline.feature_store import store, writer
from pipeline.feature_store.fingerprint import Fingerprints, Plan, schema_digest, write_record
from pipeline.io import write_json

log = logging.getLogger("recflow.materialize")
#: view name → (feature file, join key)
VIEWS = Feast.VIEWS
_EPS = timedelta(microseconds=1)
COUNTS = ("new", "changed", "unchanged", "removed", "written", "kept_newer")


def _files(paths: Paths) -> dict[str, Path]:
    out = {}
    for view, (name, _) in VIEWS.items():
        f = paths.feature_data / name
        if not f.exists():
            raise DataError(f"{f}: missing. Run 'recflow features' first.")
        out[view] = f
    return out


def load_watermarks(paths: Paths, sid: str) -> dict[str, datetime]:
    """View → newest event time materialized into online store ``sid``; empty when nothing
    is (or the SQLite file is gone). The push path checks the user view is there."""
    if sid == "sqlite" and not paths.online_db.exists():
        return {}
    return Fingerprints(paths, sid).newest()


def _feast_write(fs, plan: Plan, force: bool) -> writer.Written:
    """Feast's own materialize over the window of the plan's rows (every newest row, or a
    backfill's window), when something changed or a backfill asks."""
    ts = plan.rows.column(writer.spec(fs, plan.view).ts_field).to_pylist()
    if not ts or not (force or plan.new or plan.changed):
        return writer.Written(0, 0, 0)
    store.materialize(fs, min(ts), max(ts) + _EPS, [plan.view])
    return writer.Written(len(ts), 0, 0)


def _run(paths: Paths, online: str | None, *, force: bool, start: datetime | None = None,
         end: datetime | None = None) -> dict:
    """Plan and write every view; returns the report (not yet saved)."""
    files = _files(paths)
    fs = store.open_store(paths, online)
    sid = store.store_id(fs)
    writer.create_sqlite(fs)  # before apply: apply creates the file otherwise
    names = store.apply(fs, paths.feature_repo)
    fps = Fingerprints(paths, sid)
    windowed = start is not None or end is not None
    views, records, trusted_all, secs = [], {}, True, 0.0
    for view, f in files.items():
        sp = writer.spec(fs, view)
        why = writer.unsupported(fs, view)
        trusted = fps.trusted(view, schema_digest(sp), None if why else writer.read_token(fs, view),
                              check_token=why is None)
        trusted_all &= trusted
        t0 = time.perf_counter()  # "seconds": selecting (compare) + writing, as before
        # Feast's materialize (the fallback) writes windows: it gets every newest row
        plan = fps.plan(sp, f, force=force or not trusted or why is not None, start=start,
                        end=end)
        if plan.entities == 0 and not windowed:
            fps.discard(plan)
            log.warning("%s: no rows in %s; the online store keeps this view as it was", view, f)
            continue
        token = None if windowed or why else uuid.uuid4().hex
        try:
            if why is None:
                done = writer.write_view(fs, view, plan.rows, plan.removed, token)
                used = "recflow"
            else:
                log.info("materialize %s through Feast: %s", view, why)
                done = _feast_write(fs, plan, force)
                used = f"feast ({why})"
        except BaseException:
            fps.discard(plan)
            raise
        fps.commit(plan, token)
        secs += time.perf_counter() - t0
        if plan.record is not None:
            records[view] = plan.record
        views.append({"view": view, "writer": used, "trusted": trusted,
                      "entity_rows": plan.entities, "new": plan.new, "changed": plan.changed,
                      "unchanged": plan.unchanged, "removed": done.removed,
                      "written": done.written, "kept_newer": done.kept_newer,
                      **({"start": start.isoformat() if start else None,
                          "end": end.isoformat() if end else None} if windowed else {})})
    totals = {k: sum(v[k] for v in views) for k in COUNTS}
    report = {"mode": "backfill" if force else "incremental" if trusted_all else "first",
              "online_store": sid, "objects": names, "views": views, **totals,
              "entity_rows": totals["written"], "seconds": round(secs, 3),
              "entity_rows_per_second": (round(totals["written"] / secs, 1)
                                         if secs and totals["written"] else None)}
    return {"report": report, "records": records}


def materialize(paths: Paths, online: str | None = None) -> dict:
    """The stage: write what changed since the last run into the online store (everything on a
    first run or when the store is not the one the fingerprint describes); remove entities
    gone from the features. Writes ``reports/materialize.json`` and the record."""
    out = _run(paths, online, force=False)
    write_record(paths, out["records"])
    write_json(paths.materialize_report, out["report"])
    return out["report"]


def backfill(paths: Paths, start: datetime | None = None, end: datetime | None = None,
             online: str | None = None) -> dict:
    """Rewrite every row (default), or the newest row per entity in ``[start, end)``, whatever
    the fingerprint says — never over a newer online row. Without a window it also removes
    entities gone from the features. Writes ``reports/backfill.json``; the stage's report,
    the record and so DVC's view of the pipeline are left as they were."""
    if start and end and start >= end:
        raise ConfigError(f"--start {start.isoformat()} must be before --end {end.isoformat()}.")
    report = _run(paths, online, force=True, start=start, end=end)["report"]
    write_json(paths.backfill_report, report)
    return report


def summary(report: dict) -> dict:
    """The stage's line: entities new / changed / unchanged / removed / kept because the online
    row is newer, and users / items written this time."""
    per = {v: sum(w["written"] for w in report["views"] if w["view"] == v) for v in VIEWS}
    return {"mode": report["mode"], "online": report["online_store"],
            **{k: report[k] for k in COUNTS if k != "written"},
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
