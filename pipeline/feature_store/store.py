"""A thin wrapper over the Feast SDK: open (SQLite or Redis online), apply, materialize,
push, and the two lookups.

``feature_repo/feature_store.yaml`` is the declarative default (DuckDB offline, SQLite online).
One setting switches the online store to Redis, nothing else changes: ``RECFLOW_ONLINE_STORE=
redis://HOST:PORT[/DB]`` (read by :mod:`pipeline.settings`; or the ``online`` argument of
:func:`open_store`). Feast's yaml substitution has no defaults, so the override is applied to
the loaded config in code rather than with ``${VAR}`` in the yaml.
"""

from __future__ import annotations

import importlib.util
import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from pipeline.columns import Feast
from pipeline.config import Paths
from pipeline.errors import RecflowError
from pipeline.feature_store.layout import store_kind
from pipeline.settings import ONLINE_ENV, settings

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger("recflow.store")


class StoreUnavailable(RecflowError):
    """The configured online store cannot be reached."""


def online_setting(online: str | None = None) -> str:
    """``sqlite`` (the yaml default) or a ``redis://`` URL: argument, else $RECFLOW_ONLINE_STORE."""
    value = (online or settings().online_store or "sqlite").strip()
    if value != "sqlite" and not value.startswith("redis://"):
        raise StoreUnavailable(f"{ONLINE_ENV}={value!r}: expected 'sqlite' or redis://HOST:PORT[/DB].")
    return value


def redis_config(url: str, timeout: float = 0.5) -> dict:
    """Feast's redis online-store config for ``url``, after a fast ping.

    A dead Redis makes Feast retry for ~10 s per call; a 0.5 s ping fails fast instead.
    """
    from urllib.parse import urlparse

    import redis

    u = urlparse(url)
    host, port = u.hostname or "127.0.0.1", u.port or 6379
    db = int(u.path.strip("/") or 0)
    try:
        redis.Redis(host=host, port=port, db=db, socket_connect_timeout=timeout,
                    socket_timeout=timeout).ping()
    except redis.RedisError as e:
        raise StoreUnavailable(f"online store {url}: not reachable ({e}). Start Redis or unset "
                               f"{ONLINE_ENV} to use SQLite.") from None
    return {"type": "redis", "connection_string": f"{host}:{port},db={db}"}


def open_store(paths: Paths, online: str | None = None) -> FeatureStore:
    """The Feast store of the repo; the online store follows :func:`online_setting`."""
    import yaml
    from feast import FeatureStore, RepoConfig

    setting = online_setting(online)
    if setting == "sqlite":
        return FeatureStore(repo_path=str(paths.feature_repo))
    raw = yaml.safe_load(paths.feature_store_yaml.read_text())
    raw["online_store"] = redis_config(setting)
    cfg = RepoConfig(repo_path=paths.feature_repo, **raw)
    return FeatureStore(repo_path=str(paths.feature_repo), config=cfg)


def store_id(fs: FeatureStore) -> str:
    """Which online store ``fs`` writes to (keys the materialization fingerprints)."""
    kind = store_kind(fs)
    return f"redis:{fs.config.online_store.connection_string}" if kind == "redis" else kind


def definitions(repo: Path) -> list:
    """Every Feast object declared in ``<repo>/definitions.py``."""
    from feast import Entity, FeatureService, FeatureView
    from feast.data_source import DataSource

    spec = importlib.util.spec_from_file_location("recflow_feature_defs", repo / "definitions.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    kinds = (Entity, DataSource, FeatureView, FeatureService)
    return [v for v in vars(mod).values() if isinstance(v, kinds)]


def apply(store: FeatureStore, repo: Path) -> list[str]:
    objs = definitions(repo)
    store.apply(objs)
    return sorted(o.name for o in objs)


def materialize(store: FeatureStore, start: datetime, end: datetime,
                views: list[str] | None = None) -> None:
    """Feast prints coloured progress to stdout; it goes to the log file instead."""
    with quiet():
        store.materialize(start_date=start, end_date=end, feature_views=views)


def push_users(store: FeatureStore, df: pd.DataFrame) -> None:
    """Write fresh user-feature rows straight to the online store (push source)."""
    from feast.data_source import PushMode

    with quiet():
        store.push(Feast.user_push, df, to=PushMode.ONLINE)


@contextmanager
def quiet() -> Iterator[None]:
    """Route a library's direct prints (stdout/stderr) into the log."""
    buf_out, buf_err = io.StringIO(), io.StringIO()
    try:
        with redirect_stdout(buf_out), redirect_stderr(buf_err):
            yield
    finally:
        for text in (buf_out.getvalue(), buf_err.getvalue()):
            if text.strip():
                log.debug("%s", text.strip())


def historical(store: FeatureStore, entity_df: pd.DataFrame, service: str = Feast.training_service) -> pd.DataFrame:
    """Point-in-time join: each entity row gets the latest snapshot at or before its timestamp."""
    fs = store.get_feature_service(service)
    return store.get_historical_features(entity_df=entity_df, features=fs).to_df()


def service_refs(store: FeatureStore, service: str, view: str) -> list[str]:
    """The ``view:feature`` refs that ``service`` takes from ``view``."""
    fs = store.get_feature_service(service)
    return [f"{p.name_to_use()}:{f.name}" for p in fs.feature_view_projections
            if p.name == view for f in p.features]


def historical_view(store: FeatureStore, entity_df: pd.DataFrame, view: str,
                    service: str = Feast.training_service) -> pd.DataFrame:
    """Point-in-time features of one entity kind, as ``service`` defines them for ``view``."""
    refs = service_refs(store, service, view)
    return store.get_historical_features(entity_df=entity_df, features=refs).to_df()
