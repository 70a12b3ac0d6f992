"""Batched online-store writer: Feast's exact online layout without Feast's per-value work.

Feast's materialization turns every value into a ``ValueProto`` object and, on SQLite, runs one
``execute`` per entity × feature (~500 entity rows/s here). This module writes the same bytes:

* rows: the caller passes the rows to write, the newest per entity
  (:mod:`pipeline.feature_store.fingerprint` selects them by content);
* values: doubles / floats are encoded with numpy (tag byte + IEEE bytes), strings by hand,
  every other scalar type by passing each column's *distinct* values through Feast's own
  ``python_values_to_proto_values`` and mapping them back. Nulls (and NaN, as in Feast) become
  the empty ``ValueProto`` (``b""``), ``value_text`` NULL;
* entity keys: ``serialize_entity_key`` version 3 (hand-built for one string join key);
* SQLite: Feast's upsert SQL into the table ``apply`` created, sorted by primary key, ``executemany``
  in ONE transaction with the removals and the store's token: a failure rolls back and leaves
  the previous online rows;
* Redis: per entity one ``HSET`` (``_ts:<view>`` + mmh3 field names), pipelined as raw RESP in
  chunks. The fields' previous values are read first, so a failure mid-write restores them
  (an undo log).

**Never older over newer**, on both stores: a row is not written when the stored one has a
newer event timestamp (a row pushed since the snapshot), and a removal deletes a row only when
it is not newer than the one materialization wrote. Feast's SQLite store replaces rows whatever
their timestamp, so a backfill erased pushed values; its Redis store skips rows *as new or
newer*, which would also skip a changed row at the same snapshot time — here an equal time is
written (the content changed). SQLite keeps Feast's ``event_ts`` in whole epoch seconds, so
"newer" there means a later second.

Anything this writer does not reproduce exactly (other stores, vector / value_num columns,
field mappings, remote sources, Redis cluster/sentinel, key TTLs) goes through Feast's own
``materialize`` instead: :func:`unsupported` says why.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.errors import DataError
from pipeline.feature_store.layout import encode_column, encode_keys, store_kind

if TYPE_CHECKING:
    from feast import FeatureStore

#: entities per encode / write chunk (bounds memory; one SQLite transaction over all chunks)
CHUNK = 20_000
#: SQLite page size for a new online store: a row is ~200 bytes (key, name, value, value_text);
#: 8 KB pages make the 10M-event first write ~25% faster than SQLite's 4 KB default
SQLITE_PAGE_SIZE = 8192
_EPOCH = datetime(1970, 1, 1)
#: the SQLite table (in the online store file) and the Redis hash (per project) holding each
#: view's materialization token (see :mod:`pipeline.feature_store.fingerprint`)
TOKEN_TABLE = "__recflow_materialized"
TOKEN_KEY = b"__recflow_materialized:"


@dataclass(frozen=True)
class Written:
    """What one view's write did, in entities."""

    written: int  # rows (re)written
    kept_newer: int  # rows left as they were: the stored row is newer
    removed: int  # entities deleted


@dataclass(frozen=True)
class Spec:
    """What the writer needs to know about one feature view."""

    view: Any  # feast FeatureView (from the registry)
    path: Path
    join_key: str
    key_type: Any  # feast ValueType of the join key
    features: list[tuple[str, Any]]  # (name, feast ValueType), in the view's order
    ts_field: str
    created_field: str | None


def unsupported(fs: FeatureStore, view: str) -> str | None:
    """Why ``view`` must go through Feast's own materialize, or None when this writer can do it."""
    from feast.infra.offline_stores.file_source import FileSource

    cfg = fs.config.online_store
    kind = store_kind(fs)
    if kind == "sqlite":
        if getattr(cfg, "vector_enabled", False) or getattr(cfg, "enable_openai_compatible_store",
                                                            False):
            return "sqlite vector / value_num columns"
    elif kind == "redis":
        if str(getattr(cfg.redis_type, "value", cfg.redis_type)) != "redis":
            return f"redis_type {cfg.redis_type}"
        if cfg.key_ttl_seconds:
            return "redis key_ttl_seconds"
    else:
        return f"online store {kind}"
    if fs.config.entity_key_serialization_version != 3:
        return "entity_key_serialization_version is not 3"
    if not fs.config.materialization_config.pull_latest_features:
        return "materialization.pull_latest_features is false"
    fv = fs.get_feature_view(view)
    src = fv.batch_source
    if not isinstance(src, FileSource) or src.field_mapping or "://" in src.path:
        return "source is not a local parquet file without field mapping"
    if len(fv.entity_columns) != 1:
        return "more than one join key"
    return None


def spec(fs: FeatureStore, view: str) -> Spec:
    fv = fs.get_feature_view(view)
    src = fv.batch_source
    path = Path(src.path)
    if not path.is_absolute():
        path = Path(fs.config.repo_path or ".") / path
    key = fv.entity_columns[0]
    return Spec(fv, path, key.name, key.dtype.to_value_type(),
                [(f.name, f.dtype.to_value_type()) for f in fv.features],
                src.timestamp_field, src.created_timestamp_column or None)


# --- rows → encoded batches -----------------------------------------------------------------

def _naive_utc(micros: np.ndarray) -> list[datetime]:
    """Arrow timestamps (µs since epoch, UTC) as the naive UTC datetimes Feast hands writers."""
    cache: dict[int, datetime] = {}
    out = []
    for m in micros.tolist():
        d = cache.get(m)
        if d is None:
            d = cache[m] = _EPOCH + timedelta(microseconds=m)
        out.append(d)
    return out


def _micros(table, col: str) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = table.column(col)
    arr = pc.cast(arr, pa.timestamp("us", tz="UTC")) if arr.type.tz else pc.cast(
        arr, pa.timestamp("us"))
    return arr.combine_chunks().cast(pa.int64()).to_numpy(zero_copy_only=False)


@dataclass
class Batch:
    """One view's rows, sorted by serialized entity key, encoded column by column."""

    keys: list[bytes]
    names: list[str]
    values: list[list[bytes]]  # per feature, per entity
    texts: list[list[str | None]]
    ts: list[datetime]  # naive UTC
    created: list[datetime | None]

    def __len__(self) -> int:
        return len(self.keys)


def encode(sp: Spec, table) -> Iterator[Batch]:
    """Chunks of :data:`CHUNK` entities in primary-key order."""
    keys = encode_keys(table.column(sp.join_key).to_numpy(zero_copy_only=False),
                       sp.join_key, sp.key_type)
    order = sorted(range(len(keys)), key=keys.__getitem__)
    ts = _micros(table, sp.ts_field)
    created = _micros(table, sp.created_field) if sp.created_field else None
    for lo in range(0, len(order), CHUNK):
        idx = np.asarray(order[lo:lo + CHUNK], dtype=np.int64)
        part = table.take(idx)
        vals, texts = [], []
        for name, vtype in sp.features:
            vb, vt = encode_column(part.column(name).to_numpy(zero_copy_only=False), vtype)
            vals.append(vb)
            texts.append(vt)
        yield Batch([keys[i] for i in idx.tolist()], [n for n, _ in sp.features], vals, texts,
                    _naive_utc(ts[idx]),
                    _naive_utc(created[idx]) if created is not None else [None] * len(idx))


# --- SQLite ---------------------------------------------------------------------------------

def _feature_order(names: list[str]) -> list[int]:
    return sorted(range(len(names)), key=names.__getitem__)


def _sqlite_sql(table: str, names: list[str]) -> str:
    """Feast's upsert, one statement per entity: a multi-row VALUES of its features in name
    order. Binding one row per entity instead of one per value halves the write time (the
    per-row cost of ``executemany`` dominates); SQLite still gets primary-key order."""
    from feast.infra.online_stores.sqlite import _quote_id

    cols = ["entity_key", "feature_name", "value", "value_text", "event_ts", "created_ts"]
    update = ", ".join(f"{c} = excluded.{c}" for c in cols[2:])
    rows = ", ".join("(?1, '{}', ?{}, ?{}, ?2, ?3)".format(names[j].replace("'", "''"),
                                                           4 + 2 * i, 5 + 2 * i)
                     for i, j in enumerate(_feature_order(names)))
    # never older over newer: a stored row with a later event_ts (pushed since) stays
    return (f"INSERT INTO {_quote_id(table)} ({', '.join(cols)}) VALUES {rows} "
            f"ON CONFLICT(entity_key, feature_name) DO UPDATE SET {update} "
            f"WHERE excluded.event_ts >= {_quote_id(table)}.event_ts;")


def _sqlite_params(batch: Batch, adapt: Callable[[datetime], Any]) -> Iterator[tuple]:
    """Per entity: key, event_ts, created_ts, then (value, value_text) per feature in name
    order; timestamps in the form Feast's registered sqlite adapter gives them."""
    stamp: dict[datetime, Any] = {}
    ts = [stamp[t] if t in stamp else stamp.setdefault(t, adapt(t)) for t in batch.ts]
    cts = [None if c is None else adapt(c) for c in batch.created]
    cols: list[list[Any]] = []
    for j in _feature_order(batch.names):
        cols.append(batch.values[j])
        cols.append(batch.texts[j])
    return zip(batch.keys, ts, cts, *cols, strict=True)


def create_sqlite(fs: FeatureStore) -> None:
    """Create the SQLite online store with :data:`SQLITE_PAGE_SIZE` pages before Feast's
    ``apply`` creates it with the default (the page size is fixed once a table exists)."""
    if store_kind(fs) != "sqlite":
        return
    from feast.infra.online_stores.sqlite import SqliteOnlineStore

    db = Path(SqliteOnlineStore._get_db_path(fs.config))
    if db.exists():
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(db)
    try:
        con.execute(f"PRAGMA page_size = {SQLITE_PAGE_SIZE}")
        con.execute("VACUUM")  # writes the header: the size sticks
    finally:
        con.close()


def _sqlite_table(fs: FeatureStore, sp: Spec) -> str:
    from feast.infra.online_stores.sqlite import _table_id

    return _table_id(fs.config.project, sp.view,
                     fs.config.registry.enable_online_feature_view_versioning)


def _sqlite_remove(con: sqlite3.Connection, table: str, keys: list[bytes], ts: list[Any]
                   ) -> tuple[int, int]:
    """Delete each entity's rows unless they are newer than ``ts``; (removed, kept newer)."""
    from feast.infra.online_stores.sqlite import _quote_id

    t = _quote_id(table)
    removed = kept = 0
    for key, stamp in zip(keys, ts, strict=True):
        before = con.total_changes
        con.execute(f"DELETE FROM {t} WHERE entity_key = ? AND event_ts <= ?", (key, stamp))
        if con.total_changes > before:
            removed += 1
        elif con.execute(f"SELECT 1 FROM {t} WHERE entity_key = ? LIMIT 1", (key,)).fetchone():
            kept += 1
    return removed, kept


def write_sqlite(fs: FeatureStore, sp: Spec, batches: Iterator[Batch], entities: int,
                 removed: tuple[list[bytes], list[datetime]] = ([], []),
                 token: str | None = None) -> Written:
    """All chunks, the removals and the token in one transaction; any failure rolls back to
    the previous online rows.

    Feast's secondary index ``<table>_ek`` duplicates the primary key's prefix; when the write
    is at least as large as the table (a first run, a full backfill) it is dropped and rebuilt
    in the same transaction (one sort instead of an index insert per row), so a rollback
    restores it too. Rows kept because the stored one is newer are counted from SQLite's
    change counter (an upsert whose ``WHERE`` fails changes nothing).
    """
    from feast.infra.online_stores.sqlite import SqliteOnlineStore, _quote_id

    db = SqliteOnlineStore._get_db_path(fs.config)
    table = _sqlite_table(fs, sp)
    n_feat = len(sp.features)
    sql = _sqlite_sql(table, [n for n, _ in sp.features])
    # the adapter Feast's sqlite module registers for datetime (epoch seconds of a naive value)
    adapt = sqlite3.adapters[(datetime, sqlite3.PrepareProtocol)]
    if not Path(db).exists():
        raise DataError(f"{db}: online store missing. Run 'recflow materialize' (it applies).")
    con = sqlite3.connect(db, isolation_level=None, timeout=60)
    n = 0
    try:
        con.execute("PRAGMA cache_size = -262144")  # 256 MB of page cache for the index inserts
        con.execute("PRAGMA temp_store = MEMORY")  # the index rebuild sorts in memory ...
        con.execute("PRAGMA threads = 2")  # ... with a helper thread
        con.execute("BEGIN IMMEDIATE")
        try:
            index = con.execute("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?",
                                (f"{table}_ek",)).fetchone()
            size = con.execute(f"SELECT max(rowid) FROM {_quote_id(table)}").fetchone()[0] or 0
            rebuild = index is not None and entities * n_feat >= size
            if rebuild:
                con.execute(f"DROP INDEX {_quote_id(table + '_ek')}")
            before = con.total_changes
            for batch in batches:
                con.executemany(sql, _sqlite_params(batch, adapt))
                n += len(batch)
            rows_changed = con.total_changes - before
            gone, kept_gone = _sqlite_remove(con, table, removed[0],
                                             [adapt(t) for t in removed[1]])
            if rebuild:
                con.execute(index[0])
            if token is not None:
                con.execute(f"CREATE TABLE IF NOT EXISTS {_quote_id(TOKEN_TABLE)} "
                            "(view TEXT PRIMARY KEY, token TEXT NOT NULL)")
                con.execute(f"INSERT INTO {_quote_id(TOKEN_TABLE)} VALUES (?, ?) "
                            "ON CONFLICT(view) DO UPDATE SET token = excluded.token",
                            (sp.view.name, token))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    except sqlite3.OperationalError as e:
        raise DataError(f"{db}: online write failed ({e}); previous online values kept. "
                        "Run 'recflow materialize' again.") from None
    finally:
        con.close()
    kept = n - rows_changed // max(1, n_feat)
    return Written(n - kept, kept + kept_gone, gone)


def _sqlite_token(fs: FeatureStore, sp: Spec) -> str | None:
    from feast.infra.online_stores.sqlite import SqliteOnlineStore, _quote_id

    db = Path(SqliteOnlineStore._get_db_path(fs.config))
    if not db.is_file():
        return None
    try:
        con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        try:
            row = con.execute(f"SELECT token FROM {_quote_id(TOKEN_TABLE)} WHERE view = ?",
                              (sp.view.name,)).fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return None  # no token table: a store this writer has not fully written
    return row[0] if row else None


# --- Redis ----------------------------------------------------------------------------------

def _resp(args: list[bytes]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        parts.append(b"$%d\r\n" % len(a))
        parts.append(a)
        parts.append(b"\r\n")
    return b"".join(parts)


def _roundtrip(conn, commands: list[bytes]) -> list:
    """Send many packed commands at once (pipelining), then read every reply in order."""
    conn.send_packed_command([b"".join(commands)], check_health=False)
    return [conn.read_response() for _ in commands]


def _redis_ts(t: datetime) -> tuple[bytes, int]:
    """Feast's ``_ts:<view>`` value (a protobuf Timestamp) and its nanoseconds."""
    from google.protobuf.timestamp_pb2 import Timestamp

    p = Timestamp()
    p.FromDatetime(t.replace(tzinfo=UTC))
    return p.SerializeToString(), p.seconds * 1_000_000_000 + p.nanos


def _nanos(raw: bytes | None) -> int:
    from google.protobuf.timestamp_pb2 import Timestamp

    if not raw:
        return 0
    p = Timestamp()
    p.ParseFromString(raw)
    return p.seconds * 1_000_000_000 + p.nanos


def _checked(replies: list) -> None:
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply


def _send_chunk(conn, commands: list[bytes]) -> None:
    """One pipelined chunk of writes (the seam the failure-injection test wraps)."""
    _checked(_roundtrip(conn, commands))


def _undo(client, undo: list[tuple[bytes, list[bytes], list[bytes | None]]]) -> None:
    """Put back the fields' previous values (absent fields are deleted again)."""
    cmds = []
    for key, fields, old in undo:
        gone = [f for f, v in zip(fields, old, strict=True) if v is None]
        kept = [x for f, v in zip(fields, old, strict=True) if v is not None for x in (f, v)]
        if gone:
            cmds.append(_resp([b"HDEL", key, *gone]))
        if kept:
            cmds.append(_resp([b"HSET", key, *kept]))
    conn = client.connection_pool.get_connection()
    try:
        for lo in range(0, len(cmds), 2000):
            _checked(_roundtrip(conn, cmds[lo:lo + 2000]))
    finally:
        client.connection_pool.release(conn)


def _redis_client(fs: FeatureStore):
    from feast.infra.online_stores.redis import RedisOnlineStore

    return RedisOnlineStore()._get_client(fs.config.online_store)


def _redis_remove(conn, keys: list[bytes], fields: list[bytes], nanos: list[int],
                  undo: list) -> tuple[int, int]:
    """HDEL the view's fields of each entity unless its stored time is newer; (removed, kept)."""
    removed = kept = 0
    for lo in range(0, len(keys), CHUNK):
        part = keys[lo:lo + CHUNK]
        prev = _roundtrip(conn, [_resp([b"HMGET", k, *fields]) for k in part])
        cmds = []
        for key, old, limit in zip(part, prev, nanos[lo:lo + CHUNK], strict=True):
            if not old[0]:
                continue  # nothing stored for this view
            if _nanos(old[0]) > limit:
                kept += 1  # pushed since: newer than what materialization wrote
                continue
            cmds.append(_resp([b"HDEL", key, *fields]))
            undo.append((key, fields, old))
        _send_chunk(conn, cmds)
        removed += len(cmds)
    return removed, kept


def write_redis(fs: FeatureStore, sp: Spec, batches: Iterator[Batch],
                removed: tuple[list[bytes], list[datetime]] = ([], []),
                token: str | None = None) -> Written:
    """HSET per entity, skipping entities Redis holds with a newer timestamp; then the
    removals; then the token. A failure anywhere puts back every field written before it."""
    from feast.infra.online_stores.helpers import _mmh3
    from feast.infra.online_stores.redis import _versioned_fv_name

    client = _redis_client(fs)
    view = _versioned_fv_name(sp.view, fs.config)
    ts_field = f"_ts:{view}".encode()
    project = fs.config.project.encode("utf8")
    all_fields = [ts_field, *(_mmh3(f"{view}:{name}") for name, _ in sp.features)]
    undo: list[tuple[bytes, list[bytes], list[bytes | None]]] = []
    stamps: dict[datetime, tuple[bytes, int]] = {}  # ts → (RESP "_ts field, value", nanos)
    ts_cache: dict[bytes, int] = {}
    n = kept = 0
    conn = client.connection_pool.get_connection()
    try:
        for batch in batches:
            fields = [ts_field, *(_mmh3(f"{view}:{name}") for name in batch.names)]
            m = len(fields)
            keys = [k + project for k in batch.keys]
            kbulk = [b"$%d\r\n%s\r\n" % (len(k), k) for k in keys]
            # RESP built column-wise: "field, value" bulk strings per column, joined per entity
            get_tail = _resp(fields)[len(b"*%d\r\n" % m):]
            get_head = b"*%d\r\n$5\r\nHMGET\r\n" % (m + 2)
            prev = _roundtrip(conn, [get_head + kb + get_tail for kb in kbulk])
            cols = [[b"$4\r\n%s\r\n$%d\r\n%s\r\n" % (f, len(v), v) for v in col]
                    if len(f) == 4 else [_resp([f, v])[len(b"*2\r\n"):] for v in col]
                    for f, col in zip(fields[1:], batch.values, strict=True)]
            set_head = b"*%d\r\n$4\r\nHSET\r\n" % (2 * m + 2)
            cmds = []
            for i, parts in enumerate(zip(*cols, strict=True)):
                t = batch.ts[i]
                if t not in stamps:
                    raw, nanos = _redis_ts(t)
                    stamps[t] = _resp([ts_field, raw])[len(b"*2\r\n"):], nanos
                ts_bulk, nanos = stamps[t]
                old = prev[i]
                if old[0]:
                    seen = ts_cache.get(old[0])
                    if seen is None:
                        seen = ts_cache[old[0]] = _nanos(old[0])
                    if nanos < seen:
                        kept += 1
                        continue  # never older over newer (an equal time is a content change)
                cmds.append(b"".join((set_head, kbulk[i], ts_bulk, *parts)))
                undo.append((keys[i], fields, old))
            _send_chunk(conn, cmds)
            n += len(cmds)
        gone, kept_gone = _redis_remove(conn, [k + project for k in removed[0]], all_fields,
                                        [_redis_ts(t)[1] for t in removed[1]], undo)
        if token is not None:
            _send_chunk(conn, [_resp([b"HSET", TOKEN_KEY + project, sp.view.name.encode(),
                                      token.encode()])])
    except BaseException:
        conn.disconnect()  # unread replies may be pending: never reuse this connection
        client.connection_pool.release(conn)
        conn = None
        try:
            _undo(client, undo)
        except Exception as e:  # noqa: BLE001 - report both failures in one line
            raise DataError(f"redis online write failed and its undo too ({e}): up to "
                            f"{len(undo)} {sp.view.name} entities may hold new values. "
                            "Run 'recflow materialize' again.") from None
        raise
    finally:
        if conn is not None:
            client.connection_pool.release(conn)
    return Written(n, kept + kept_gone, gone)


def _redis_token(fs: FeatureStore, sp: Spec) -> str | None:
    raw = _redis_client(fs).hget(TOKEN_KEY + fs.config.project.encode("utf8"), sp.view.name)
    return raw.decode() if raw else None


# --- entry ----------------------------------------------------------------------------------

def _prefetch(it: Iterator[Batch]) -> Iterator[Batch]:
    """Encode the next chunk in a thread while the current one is written: SQLite's step and
    socket I/O release the GIL, so the two overlap. Errors surface in the consumer."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="recflow-encode") as ex:
        fut = ex.submit(next, it, None)
        while True:
            batch = fut.result()
            if batch is None:
                return
            fut = ex.submit(next, it, None)
            yield batch


def read_token(fs: FeatureStore, view: str) -> str | None:
    """The materialization token ``view``'s last full write left in the store (None: none)."""
    sp = spec(fs, view)
    return _redis_token(fs, sp) if store_kind(fs) == "redis" else _sqlite_token(fs, sp)


def write_view(fs: FeatureStore, view: str, rows, removed=None, token: str | None = None
               ) -> Written:
    """Write ``rows`` (a pyarrow Table: join key, the view's features, its timestamp
    [, created]; one row per entity) of ``view``, delete the ``removed`` entities (a Table of
    join key and the event timestamp materialization wrote for them), then store ``token``
    — all or nothing. Never older over newer (see the module doc).

    The caller checks :func:`unsupported` first. Records the written interval in the registry,
    as Feast's ``materialize`` does, once the write succeeded.
    """
    sp = spec(fs, view)
    gone: tuple[list[bytes], list[datetime]] = ([], [])
    if removed is not None and removed.num_rows:
        gone = (encode_keys(removed.column(sp.join_key).to_numpy(zero_copy_only=False),
                            sp.join_key, sp.key_type), _naive_utc(_micros(removed, sp.ts_field)))
    if rows.num_rows == 0 and not gone[0] and token is None:
        return Written(0, 0, 0)
    batches = _prefetch(encode(sp, rows)) if rows.num_rows else iter(())
    out = (write_redis(fs, sp, batches, gone, token) if store_kind(fs) == "redis"
           else write_sqlite(fs, sp, batches, rows.num_rows, gone, token))
    if rows.num_rows:
        ts = _micros(rows, sp.ts_field)
        start, end = _naive_utc(np.array([ts.min(), ts.max() + 1]))
        fs.registry.apply_materialization(sp.view, fs.project, start.replace(tzinfo=UTC),
                                          end.replace(tzinfo=UTC))
    return out
