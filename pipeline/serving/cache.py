"""The exported top-k in the online store: ``recflow export --to-online-store`` writes each
user's list into the Feast view ``user_recs`` (``feature_repo/definitions.py``), and
``serving.cache_first`` answers ``/recommendations`` from it.

A row holds the list (items, scores, the k asked), the champion version that computed it and
the digest of the online features it was computed from (:func:`recommender.inputs_digest`).
Serving reads it in the same lookup as the features (the ``serving_cached_v1`` service) and
uses it only when the version is the champion's and the digest matches the features the user
has now, so a pushed event or a new champion means the list is computed again, never served
stale. The batch source (``feature_repo/data/user_recs.parquet``) gets the same rows, so the
offline view and the online store agree.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from pipeline.columns import Columns as C
from pipeline.columns import Feast, Recs
from pipeline.config import Paths
from pipeline.errors import DataError
from pipeline.feature_store import store, writer
from pipeline.io import write_parquet
from pipeline.serving.recommender import Ranked

log = logging.getLogger("recflow.serving")


def ensure_view(fs, paths: Paths) -> None:
    """Apply the feature repo when the exported view is not registered yet (a store
    materialized before the view existed)."""
    try:
        fs.get_feature_view(Feast.recs_view, allow_registry_cache=False)
    except Exception:  # noqa: BLE001 - FeatureViewNotFoundException and kin
        log.info("applying %s: the view %s is new", paths.feature_repo, Feast.recs_view)
        store.apply(fs, paths.feature_repo)


def rows(parts: list[Ranked], ids: np.ndarray, k: int, now: datetime) -> pa.Table:
    """One row per user: the finite part of their top-k as JSON arrays, best first."""
    users, items, scores, inputs = [], [], [], []
    for p in parts:
        if p.inputs is None:
            raise DataError("export: the online store could not be read, so no list has the "
                            "digest of its features; nothing written to the online store.")
        ok = np.isfinite(p.scores)
        for r, u in enumerate(p.users):
            users.append(u)
            items.append(json.dumps(ids[p.idx[r][ok[r]]].tolist(), ensure_ascii=False,
                                    separators=(",", ":")))
            scores.append(json.dumps(p.scores[r][ok[r]].tolist(), separators=(",", ":")))
            inputs.extend(p.inputs[r:r + 1])
    n = len(users)
    version = parts[0].version if parts else ""
    return pa.table({C.user: pa.array(users, pa.string()), Recs.items: pa.array(items, pa.string()),
                     Recs.scores: pa.array(scores, pa.string()),
                     Recs.k: pa.array(np.full(n, k, dtype=np.int64)),
                     Recs.version: pa.array([version] * n, pa.string()),
                     Recs.inputs: pa.array(inputs, pa.string()),
                     C.ts: pa.array(np.full(n, np.datetime64(now.replace(tzinfo=None), "us")),
                                    pa.timestamp("us", tz="UTC"))})


def write(fs, paths: Paths, parts: list[Ranked], ids: np.ndarray, k: int) -> dict:
    """Write the lists into the online store (and the view's batch source); returns counts."""
    ensure_view(fs, paths)
    table = rows(parts, ids, k, datetime.now(UTC))
    write_parquet(table.to_pandas(), paths.feature_repo / "data" / Feast.recs_file)
    why = writer.unsupported(fs, Feast.recs_view)
    if why is None:
        done = writer.write_view(fs, Feast.recs_view, table)
        written = done.written
    else:  # another store kind: Feast's own write
        log.info("export to the online store through Feast: %s", why)
        with store.quiet():
            fs.write_to_online_store(Feast.recs_view, table.to_pandas())
        written = table.num_rows
    return {"view": Feast.recs_view, "users": table.num_rows, "written": written,
            "store": store.store_id(fs)}
