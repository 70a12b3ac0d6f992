"""``recflow export``: everyone's (or the listed users') top-k from the champion, to parquet
and/or into the online store (``--to-online-store``, for ``serving.cache_first``).

The same path as the API (:meth:`Recommender.rank`: online features, seen items, the model's
scores, the shared exact top-k), ``serving.export_batch`` users at a time, so an export row
equals what ``/recommendations`` answers for that user at that moment. Parquet rows: user_id,
rank, item_id, score, model_version; written atomically.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.columns import Columns as C
from pipeline.config import Params, Paths
from pipeline.errors import ConfigError, DataError
from pipeline.features.push import read_events
from pipeline.io import write_parquet
from pipeline.serving import cache
from pipeline.serving.recommender import Ranked, Recommender


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


def export(params: Params, paths: Paths, k: int, out: Path | None, users: list[str] | None = None,
           rec: Recommender | None = None, to_online_store: bool = False) -> dict:
    """Write the top-k of ``users`` (default: all) to ``out`` and/or, with ``to_online_store``,
    into the exported top-k view of the online store (cache-first serving)."""
    if not 1 <= k <= params.serving.max_k:
        raise ConfigError(f"--k {k}: must be between 1 and {params.serving.max_k}.")
    if out is None and not to_online_store:
        raise ConfigError("export: give --out, --to-online-store or both.")
    rec = rec or Recommender(params, paths)
    users = users if users is not None else all_users(paths)
    from threadpoolctl import threadpool_limits

    t0 = time.perf_counter()
    parts: list[Ranked] = []
    sources: dict[str, int] = {}
    b = params.serving.export_batch
    batches = [users[s:s + b] for s in range(0, len(users), b)]
    threads = params.serving.export_threads
    with threadpool_limits(limits=params.serving.export_blas_threads), \
            ThreadPoolExecutor(threads) as pool:
        # batches in parallel threads: the products, masks and top-k release the GIL
        ranked = (pool.map if threads > 1 else map)(
            lambda batch: rec.rank(batch, k, digests=to_online_store), batches)
        for r in ranked:
            parts.append(r)
            sources[r.source] = sources.get(r.source, 0) + len(r.users)
    secs = time.perf_counter() - t0
    version = parts[0].version if parts else rec.version
    ids = rec.model.item_ids if rec.model is not None else np.array([], dtype=object)
    report: dict = {"users": len(users), "model_version": version,
                    "users_per_s": round(len(users) / secs) if secs > 0 else None,
                    "seconds": round(secs, 2), "features": sources}
    if out is not None:
        df = _rows(parts, ids)
        df["model_version"] = version
        write_parquet(df, out)
        report.update(rows=len(df), out=str(out))
    if to_online_store:
        report["online_store"] = cache.write(rec.store, paths, parts, ids, k)
    return report


def _rows(parts: list[Ranked], ids: np.ndarray) -> pd.DataFrame:
    """Long rows (user_id, rank, item_id, score) of the finite cells, best first."""
    if not parts:
        return pd.DataFrame({C.user: np.array([], dtype=object), C.rank: np.array([], dtype=np.int16),
                             C.item: np.array([], dtype=object), C.score: np.array([], dtype=np.float32)})
    sc = np.concatenate([p.scores for p in parts])
    idx = np.concatenate([p.idx for p in parts])
    users = np.asarray([u for p in parts for u in p.users], dtype=object)
    ok = np.isfinite(sc)
    r, j = np.nonzero(ok)
    return pd.DataFrame({C.user: users[r], C.rank: (np.cumsum(ok, axis=1)[r, j]).astype(np.int16),
                         C.item: ids[idx[r, j]], C.score: sc[r, j]})
