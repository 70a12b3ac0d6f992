"""``recflow export``: everyone's (or the listed users') top-k from the champion, to parquet.

The same path as the API (:meth:`Recommender.recommend_many`: online features, seen items,
the model's scores), ``serving.export_batch`` users at a time, so an export row equals what
``/recommendations`` answers for that user at that moment. Rows: user_id, rank, item_id,
score, model_version; written atomically.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.columns import Columns as C
from pipeline.config import Params, Paths
from pipeline.errors import ConfigError, DataError
from pipeline.features.push import read_events
from pipeline.io import write_parquet
from pipeline.serving.recommender import Recommender


def read_users(path: Path) -> list[str]:
    """User ids from a text file (one per line), or a csv / parquet with a user_id column."""
    if not path.exists():
        raise DataError(f"{path}: not found.")
    if path.suffix.lower() in (".csv", ".parquet", ".pq"):
        df = read_events(path)
        if C.user not in df.columns:
            raise DataError(f"{path}: no {C.user} column.")
        ids = df[C.user].dropna().astype(str)
    else:
        ids = pd.Series([s.strip() for s in path.read_text().splitlines()])
    ids = ids[ids.str.len() > 0]
    if ids.empty:
        raise DataError(f"{path}: no user ids.")
    return list(dict.fromkeys(ids))  # first occurrence order, no duplicates


def all_users(paths: Paths) -> list[str]:
    """Every user the feature store knows (the user features' ids), sorted."""
    f = paths.user_features
    if not f.exists():
        raise DataError(f"{f}: missing. Run 'dvc repro' (or 'recflow features') first.")
    return sorted(pd.read_parquet(f, columns=[C.user])[C.user].astype(str).unique())


def export(params: Params, paths: Paths, k: int, out: Path, users: list[str] | None = None,
           rec: Recommender | None = None) -> dict:
    if not 1 <= k <= params.serving.max_k:
        raise ConfigError(f"--k {k}: must be between 1 and {params.serving.max_k}.")
    rec = rec or Recommender(params, paths)
    users = users if users is not None else all_users(paths)
    t0 = time.perf_counter()
    cols: dict[str, list] = {C.user: [], C.rank: [], C.item: [], C.score: []}
    sources: dict[str, int] = {}
    version = None
    b = params.serving.export_batch
    for s in range(0, len(users), b):
        for r in rec.recommend_many(users[s:s + b], k):
            n = len(r.items)
            cols[C.user].append(np.full(n, r.user_id, dtype=object))
            cols[C.rank].append(np.arange(1, n + 1, dtype=np.int16))
            cols[C.item].append(np.asarray(r.items, dtype=object))
            cols[C.score].append(np.asarray(r.scores, dtype=np.float32))
            sources[r.features_source] = sources.get(r.features_source, 0) + 1
            version = r.model_version
    secs = time.perf_counter() - t0
    df = pd.DataFrame({c: (np.concatenate(v) if v else np.array([])) for c, v in cols.items()})
    df["model_version"] = version
    write_parquet(df, out)
    return {"users": len(users), "rows": len(df), "model_version": version,
            "users_per_s": round(len(users) / secs) if secs > 0 else None,
            "seconds": round(secs, 2), "features": sources, "out": str(out)}
