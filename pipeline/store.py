"""A thin wrapper over the Feast SDK: apply, materialize, and the two lookups."""

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

from pipeline.config import Paths

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger("recflow.store")
TRAINING_SERVICE = "training_v1"
SERVING_SERVICE = "serving_v1"


def open_store(paths: Paths) -> FeatureStore:
    from feast import FeatureStore

    return FeatureStore(repo_path=str(paths.feature_repo))


def definitions(repo: Path) -> list:
    """Every Feast object declared in ``feature_repo/definitions.py``."""
    from feast import Entity, FeatureService, FeatureView

    spec = importlib.util.spec_from_file_location("recflow_feature_defs", repo / "definitions.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    kinds = (Entity, FeatureView, FeatureService)
    return [v for v in vars(mod).values() if isinstance(v, kinds)]


def apply(store: FeatureStore, repo: Path) -> list[str]:
    objs = definitions(repo)
    store.apply(objs)
    return sorted(o.name for o in objs)


def materialize(store: FeatureStore, start: datetime, end: datetime) -> None:
    """Feast prints coloured progress to stdout; it goes to the log file instead."""
    with quiet():
        store.materialize(start_date=start, end_date=end)


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


def historical(store: FeatureStore, entity_df: pd.DataFrame, service: str = TRAINING_SERVICE) -> pd.DataFrame:
    """Point-in-time join: each entity row gets the latest snapshot at or before its timestamp."""
    fs = store.get_feature_service(service)
    return store.get_historical_features(entity_df=entity_df, features=fs).to_df()


def online_users(store: FeatureStore, user_ids: list[str], service: str = SERVING_SERVICE) -> pd.DataFrame:
    """Latest online features per user; unknown users come back as rows of nulls."""
    fs = store.get_feature_service(service)
    out = store.get_online_features(features=fs, entity_rows=[{"user_id": u} for u in user_ids])
    return pd.DataFrame(out.to_dict())


def service_refs(store: FeatureStore, service: str, view: str) -> list[str]:
    """The ``view:feature`` refs that ``service`` takes from ``view``."""
    fs = store.get_feature_service(service)
    return [f"{p.name_to_use()}:{f.name}" for p in fs.feature_view_projections
            if p.name == view for f in p.features]


def historical_view(store: FeatureStore, entity_df: pd.DataFrame, view: str,
                    service: str = TRAINING_SERVICE) -> pd.DataFrame:
    """Point-in-time features of one entity kind, as ``service`` defines them for ``view``."""
    refs = service_refs(store, service, view)
    return store.get_historical_features(entity_df=entity_df, features=refs).to_df()
