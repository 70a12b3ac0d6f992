"""The serving lookup: a feature service's user features read straight from Feast's online store.

``FeatureStore.get_online_features`` spends ~1 ms per call in generic machinery (resolving the
service, building response protos, ``to_dict``) around a ~0.1 ms read. The serving path makes
one lookup per request, so it reads the rows Feast wrote itself, with Feast's own key encoding
(``serialize_entity_key``, Redis' ``_redis_key`` / ``_mmh3`` fields): SQLite through one
read-only connection per thread, Redis with one ``HMGET`` per user in a pipeline. The result
has the shape of ``get_online_features(...).to_dict()``: a column dict with the join key, and
``None`` for unknown users or missing values. Integration tests check it equals the SDK's.

The view TTL is not checked: snapshot views live ten years (``feature_repo/definitions.py``).

The SQLite file is read with ``pread``, never memory-mapped: another process may truncate it
(``: > file``, a ``cp`` restore) at any moment, and a mapped page past the new end of the file
is a SIGBUS that kills the server, where a short read is an error SQLite reports. Each read
first ``stat``s the path (~1 µs): a thread's cached connection is reopened when the file is no
longer the one it opened (moved, replaced) or has changed since (truncated, rewritten,
corrupted, written), so every thread and worker reads the file now at the path, in its current
state; a file that is missing, empty or unreadable raises :class:`StoreUnavailable`.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from feast.infra.online_stores.helpers import _mmh3, compute_table_id
from feast.value_type import ValueType

from pipeline.columns import Columns as C
from pipeline.feature_store.layout import encode_keys, store_kind, value
from pipeline.feature_store.store import StoreUnavailable

if TYPE_CHECKING:
    from feast import FeatureStore


class OnlineReader:
    """Reads the user-keyed views of one feature service from the configured online store."""

    def __init__(self, fs: FeatureStore, service: str, only: Collection[str] | None = None) -> None:
        """``only``: read just these features of the service (serving needs a handful of its
        columns; decoding the rest was most of a batch lookup)."""
        cfg = fs.config
        self.project = cfg.project
        if cfg.entity_key_serialization_version != 3:  # what encode_keys writes and reads
            raise ValueError("entity_key_serialization_version must be 3")
        versioned = bool(getattr(cfg.registry, "enable_online_feature_view_versioning", False))
        self.views: list[tuple[str, str, list[str]]] = []  # (view, table id, features)
        for p in fs.get_feature_service(service).feature_view_projections:
            view = fs.get_feature_view(p.name)
            if list(view.join_keys) != [C.user]:
                raise ValueError(f"feature service {service!r}: view {p.name!r} is not keyed by "
                                 f"{C.user} alone")
            feats = [f.name for f in p.features if only is None or f.name in only]
            self.views.append((p.name, compute_table_id(self.project, view, versioned), feats))
        self.views = [v for v in self.views if v[2]]  # a view with nothing wanted is not read
        self.columns = [f for _, _, feats in self.views for f in feats]
        online = cfg.online_store
        self.kind = store_kind(fs)
        if self.kind not in ("sqlite", "redis"):
            raise ValueError(f"online store {self.kind}: the serving read supports sqlite and redis")
        if self.kind == "sqlite":
            from feast.infra.online_stores.sqlite import SqliteOnlineStore

            self.db = Path(SqliteOnlineStore._get_db_path(cfg))
            self._local = threading.local()
        else:
            self._redis = _redis_client(online.connection_string)
            self._fields = [[_mmh3(f"{v}:{f}") for f in feats] for v, _, feats in self.views]

    def read(self, users: list[str]) -> dict[str, list]:
        """{user_id: users, feature: [value per user]}; raises :class:`StoreUnavailable` (or the
        Redis client's error) if the store cannot be read."""
        out: dict[str, list] = {C.user: list(users), **{c: [None] * len(users) for c in self.columns}}
        keys = encode_keys(np.asarray(users, dtype=object), C.user, ValueType.STRING)
        if self.kind == "sqlite":
            self._read_sqlite(keys, out)
        else:
            self._read_redis(keys, out)
        return out

    # ---- SQLite: rows (entity_key, feature_name, value) --------------------------------------
    def _conn(self) -> sqlite3.Connection:
        """This thread's read-only connection to the file now at ``self.db``, in its state now."""
        try:
            st = os.stat(self.db)
        except OSError as e:
            self._close()
            raise StoreUnavailable(f"{self.db}: no online store file ({e.strerror})") from None
        # what a cached connection must still match: same file (not moved away or replaced by
        # a rename), same size and modification time (not truncated, rewritten or written)
        ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        con = getattr(self._local, "con", None)
        if con is not None and self._local.ident == ident:
            return con
        self._close()
        if not stat.S_ISREG(st.st_mode):
            raise StoreUnavailable(f"{self.db}: not a regular file")
        if st.st_size == 0:  # SQLite would take it for an empty database: "no such table"
            raise StoreUnavailable(f"{self.db}: empty file (truncated?)")
        try:
            con = sqlite3.connect(f"{self.db.resolve().as_uri()}?mode=ro", uri=True)
        except sqlite3.Error as e:
            raise StoreUnavailable(f"{self.db}: cannot open ({e})") from None
        self._local.con, self._local.ident = con, ident
        return con

    def _close(self) -> None:
        con = getattr(self._local, "con", None)
        self._local.con = None
        if con is not None:
            con.close()

    def _read_sqlite(self, keys: list[bytes], out: dict[str, list]) -> None:
        con = self._conn()
        row_of = {k: r for r, k in enumerate(keys)}
        marks = ",".join("?" * len(row_of))
        try:
            for _, table, feats in self.views:
                wanted = set(feats)
                names = ",".join("?" * len(feats))
                sql = (f'SELECT entity_key, feature_name, value FROM "{table}" '
                       f"WHERE entity_key IN ({marks}) AND feature_name IN ({names})")
                for key, name, blob in con.execute(sql, [*row_of, *feats]):
                    if name in wanted:
                        out[name][row_of[key]] = value(blob)
        except sqlite3.Error as e:  # not a database, malformed, short read, no such table ...
            self._close()  # the next read starts from a fresh connection
            raise StoreUnavailable(f"{self.db}: unreadable ({type(e).__name__}: {e})") from None
        if len(row_of) < len(keys):  # the same user twice: copy the first answer
            for r, k in enumerate(keys):
                first = row_of[k]
                if first != r:
                    for c in self.columns:
                        out[c][r] = out[c][first]

    # ---- Redis: one hash per entity, fields mmh3("view:feature") ------------------------------
    def _read_redis(self, keys: list[bytes], out: dict[str, list]) -> None:
        project = self.project.encode()
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            for fields in self._fields:
                pipe.hmget(key + project, fields)
        replies = iter(pipe.execute())
        for r in range(len(keys)):
            for (_, _, feats) in self.views:
                for name, blob in zip(feats, next(replies), strict=True):
                    out[name][r] = value(blob)


def _redis_client(connection_string: str):
    """Feast's client settings for its connection string, with short timeouts and no retries:
    a dead Redis must turn into a fallback answer quickly, not a hung request. (redis-py's
    default retries three times with 1-10 s backoff: ~9 s per request with Redis down.)"""
    import redis
    from feast.infra.online_stores.redis import RedisOnlineStore
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    nodes, kwargs = RedisOnlineStore._parse_connection_string(connection_string)
    kwargs.setdefault("socket_connect_timeout", 0.5)
    kwargs.setdefault("socket_timeout", 0.5)
    kwargs["retry"] = Retry(NoBackoff(), 0)  # one attempt; the next request tries again
    return redis.Redis(host=nodes[0]["host"], port=int(nodes[0]["port"]), **kwargs)
