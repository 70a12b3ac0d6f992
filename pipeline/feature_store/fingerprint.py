"""What materialization wrote to one online store, per view: the fingerprint that keys
materialization on content instead of a time watermark.

A watermark ("written up to time T") cannot see a rebuild that keeps the snapshot times: a
late file whose events predate the newest one, another ``features.*`` setting, a re-ingest with
another event mapping all change values at the same timestamps, and a watermark writes 0 rows.
So for each online store and view this module keeps, beside the store
(``feature_repo/data/online_state/<store>/``):

* ``<view>.parquet``: one row per entity materialization wrote — join key, ``__row_hash``
  (DuckDB ``hash`` of every feature value of the row) and its event timestamp;
* ``state.json``: per view a schema digest (feature names and types, join key, DuckDB version:
  what the hash depends on), the store's token (below), the entity count and the newest time.

A run takes the newest offline row per entity (Feast's ``pull_latest_features`` rule) and
compares it with the fingerprint in DuckDB, one hash join over entities (~250k at 10M events,
well under a second): **new** (no fingerprint row), **changed** (another hash or timestamp),
**unchanged**, **removed** (fingerprinted, gone from the features). Only new and changed rows
are written, whatever their timestamp; removed entities are deleted online.

Why not read the online rows back instead: at 10M events that is ~7M SQLite rows or 250k
Redis hashes to decode on every run, and the store cannot tell a row materialization wrote from
one pushed for a brand-new user, which must not be deleted. The fingerprint is small (a few MB
at 10M), read by DuckDB in milliseconds, and names exactly what materialization is responsible
for.

**Trust.** A fingerprint describes the store only if that store is the one it was written
against: each full write stores a fresh random token in the store itself (a SQLite table in
the same transaction, a Redis hash after the write) and in ``state.json``. A missing or other
token (the store was deleted, flushed or restored from a copy), another schema digest or no
fingerprint means every row is written again ("first" mode). The never-older rule lives in
the writer: a row is never replaced by one with an older event timestamp, and a removal
deletes a row only when it is not newer than the fingerprinted one (a pushed row stays).

**The record.** ``feature_repo/data/materialized.json`` (the materialize stage's DVC out) is
per view the entity count, the newest time and an order-independent digest of (entity, hash,
time): a pure function of the offline content materialized, the same bytes for SQLite and
Redis, for a rerun or a backfill. It changes only when the served content does, so
training does not depend on the mutable store files (pushes and backfills change those).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from pipeline.config import Paths
from pipeline.errors import DataError
from pipeline.io import read_json, sql_path, write_json

#: bump when the fingerprint's meaning changes: every store is then rewritten once
VERSION = 1
HASH = "__row_hash"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _slug(sid: str) -> str:
    return re.sub(r"[^0-9A-Za-z._-]+", "-", sid).strip("-") or "store"


def schema_digest(sp) -> str:
    """What the row hash and the online layout depend on (a ``writer.Spec``)."""
    desc = {"version": VERSION, "duckdb": duckdb.__version__, "key": sp.join_key,
            "key_type": str(sp.key_type), "ts": sp.ts_field, "created": sp.created_field,
            "features": [[n, str(t)] for n, t in sp.features]}
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Plan:
    """One view's comparison of the newest offline rows with its fingerprint."""

    view: str
    rows: Any  # pyarrow Table: rows to write (join key, features, ts[, created])
    removed: Any  # pyarrow Table: (join key, ts) of fingerprinted entities gone offline
    entities: int  # entities with an offline row (in the window, for a windowed backfill)
    new: int
    changed: int
    unchanged: int
    schema: str
    newest: datetime | None
    record: dict | None  # this view's entry of the materialization record (full runs)
    tmp: Path | None  # the new fingerprint, renamed into place by :meth:`Fingerprints.commit`


class Fingerprints:
    """The fingerprint state of one online store (``sid`` from ``store.store_id``)."""

    def __init__(self, paths: Paths, sid: str) -> None:
        self.sid = sid
        self.dir = paths.online_state / _slug(sid)
        self.file = self.dir / "state.json"
        try:
            state = read_json(self.file) if self.file.exists() else {}
        except (OSError, ValueError):
            state = {}  # unreadable: nothing is trusted, the next run writes every row
        ok = isinstance(state, dict) and state.get("store") == sid
        self.views: dict[str, dict] = state.get("views", {}) if ok else {}

    def path(self, view: str) -> Path:
        return self.dir / f"{view}.parquet"

    def trusted(self, view: str, schema: str, token: str | None, check_token: bool = True) -> bool:
        """Does the fingerprint of ``view`` describe the store as it is?"""
        v = self.views.get(view)
        return (v is not None and v.get("schema") == schema and self.path(view).exists()
                and (not check_token or (token is not None and v.get("token") == token)))

    def newest(self) -> dict[str, datetime]:
        """View → newest event time materialized into this store."""
        return {v: datetime.fromisoformat(s["newest"]) for v, s in self.views.items()
                if s.get("newest")}

    def plan(self, sp, source: Path, *, force: bool, start: datetime | None = None,
             end: datetime | None = None) -> Plan:
        """Compare the newest row per entity of ``source`` (in ``[start, end)`` when given)
        with the fingerprint. ``force`` writes every row (an untrusted fingerprint, a
        backfill). A windowed plan (start or end) removes nothing and keeps the fingerprint."""
        key, ts = _q(sp.join_key), _q(sp.ts_field)
        feats = [n for n, _ in sp.features]
        cols = [sp.join_key, *feats, sp.ts_field] + ([sp.created_field] if sp.created_field else [])
        order = f"{ts} DESC" + (f", {_q(sp.created_field)} DESC" if sp.created_field else "")
        where = [c for c, v in ((f"{ts} >= $s", start), (f"{ts} < $e", end)) if v is not None]
        args = {k: v for k, v in (("s", start), ("e", end)) if v is not None}
        windowed = bool(args)
        fp = self.path(sp.view.name)
        tmp = fp.with_name(f".{fp.name}.tmp-{os.getpid()}")
        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")
            con.execute(
                f"CREATE TEMP TABLE latest AS SELECT {', '.join(map(_q, cols))}, "
                f"hash({', '.join(map(_q, feats))}) AS {HASH} FROM read_parquet({sql_path(source)}) "
                + (f"WHERE {' AND '.join(where)} " if where else "")
                + f"QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY {order}) = 1", args)
            if fp.exists():
                con.execute(f"CREATE TEMP VIEW fp AS SELECT {key}, {HASH}, {ts} "
                            f"FROM read_parquet({sql_path(fp)})")
            else:
                con.execute(f"CREATE TEMP TABLE fp AS SELECT {key}, {HASH}, {ts} FROM latest "
                            "WHERE false")
            same = f"l.{key} = f.{key} AND l.{HASH} = f.{HASH} AND l.{ts} = f.{ts}"
            n, new, changed, newest = con.execute(
                f"SELECT count(*), count(*) FILTER (WHERE f.{key} IS NULL), "
                f"count(*) FILTER (WHERE f.{key} IS NOT NULL AND NOT ({same})), max(l.{ts}) "
                f"FROM latest l LEFT JOIN fp f ON l.{key} = f.{key}").fetchall()[0]
            sel = ", ".join(f"l.{_q(c)}" for c in cols)
            rows = con.sql(f"SELECT {sel} FROM latest l" if force else
                           f"SELECT {sel} FROM latest l ANTI JOIN fp f ON {same}").to_arrow_table()
            removed = con.sql(f"SELECT f.{key}, f.{ts} FROM fp f ANTI JOIN latest l "
                              f"ON l.{key} = f.{key} ORDER BY f.{key}" + (" LIMIT 0" if windowed
                                                                          else "")).to_arrow_table()
            record = None
            if not windowed:
                tmp.parent.mkdir(parents=True, exist_ok=True)
                con.execute(f"COPY (SELECT {key}, {HASH}, {ts} FROM latest ORDER BY {key}) "
                            f"TO {sql_path(tmp)} (FORMAT parquet)")
                digest = con.execute(f"SELECT bit_xor(hash({key}, {HASH}, {ts})) FROM latest"
                                     ).fetchall()[0][0]
                record = {"entities": int(n), "newest": newest.isoformat() if newest else None,
                          "digest": f"{int(digest or 0):016x}"}
        except duckdb.Error as e:
            tmp.unlink(missing_ok=True)
            raise DataError(f"{source}: cannot be compared with the online fingerprint "
                            f"{fp} ({str(e).splitlines()[0]}). Run 'recflow features' again."
                            ) from None
        finally:
            con.close()
        return Plan(sp.view.name, rows, removed, int(n), int(new), int(changed),
                    int(n) - int(new) - int(changed), schema_digest(sp), newest, record,
                    None if windowed else tmp)

    def commit(self, plan: Plan, token: str | None) -> None:
        """The store holds ``plan``'s rows: its fingerprint and token become the state."""
        if plan.tmp is None:
            return
        os.replace(plan.tmp, self.path(plan.view))
        self.views[plan.view] = {"schema": plan.schema, "token": token,
                                 "entities": plan.entities,
                                 "newest": plan.newest.isoformat() if plan.newest else None}
        write_json(self.file, {"store": self.sid, "version": VERSION, "views": self.views})

    @staticmethod
    def discard(plan: Plan) -> None:
        if plan.tmp is not None:
            plan.tmp.unlink(missing_ok=True)


def write_record(paths: Paths, entries: dict[str, dict]) -> None:
    """The materialization record (DVC out), rewritten only when its content changed, so its
    bytes and mtime stay put on a rerun."""
    f = paths.materialized
    data = {"views": dict(sorted(entries.items()))}
    if f.exists():
        try:
            if read_json(f) == data:
                return
        except ValueError:
            pass
    write_json(f, data)
