"""Stage ``materialize``: register the Feast objects and load the online store."""

from __future__ import annotations

import time
from datetime import timedelta

import pandas as pd

from pipeline import store
from pipeline.columns import Columns as C
from pipeline.config import Params, Paths
from pipeline.errors import DataError
from pipeline.features import ITEM_FILE, USER_FILE
from pipeline.io import write_json


def run(params: Params, paths: Paths) -> dict:
    files = [paths.feature_data / USER_FILE, paths.feature_data / ITEM_FILE]
    for f in files:
        if not f.exists():
            raise DataError(f"{f}: missing. Run 'recflow features' first.")
    stamps = pd.concat([pd.read_parquet(f, columns=[C.ts])[C.ts] for f in files])
    users = pd.read_parquet(files[0], columns=[C.user])[C.user].nunique()
    items = pd.read_parquet(files[1], columns=[C.item])[C.item].nunique()
    # an explicit window, not materialize_incremental: its first run starts at now − ttl
    start = stamps.min().to_pydatetime() - timedelta(seconds=1)
    end = stamps.max().to_pydatetime() + timedelta(seconds=1)
    fs = store.open_store(paths)
    names = store.apply(fs, paths.feature_repo)
    t0 = time.perf_counter()
    store.materialize(fs, start, end)
    secs = time.perf_counter() - t0
    report = {
        "objects": names,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "users": int(users),
        "items": int(items),
        "seconds": round(secs, 3),
        "entity_rows_per_second": round((users + items) / secs, 1) if secs else None,
    }
    write_json(paths.reports / "materialize.json", report)
    return {"users": int(users), "items": int(items), "seconds": round(secs, 2)}
