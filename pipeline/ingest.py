"""Stage ``ingest``: produce ``data/events/`` (events.parquet + items.parquet)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.config import Params, Paths
from pipeline.errors import ConfigError, DataError
from pipeline.io import atomic_dir
from pipeline.loaders import canonical, load_movielens
from pipeline.synthetic import generate


def load(params: Params, paths: Paths) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Events and item metadata from the configured source."""
    src = params.ingest
    if src.source == "synthetic":
        return generate(params.synthetic)
    if src.source == "movielens":
        if not src.path:
            raise ConfigError("params.yaml: key 'ingest.path' must name a MovieLens folder or ratings.csv.")
        p = Path(src.path)
        return load_movielens(p if p.is_absolute() else paths.root / p)
    files = sorted(paths.incoming.glob("*.parquet")) + sorted(paths.incoming.glob("*.csv"))
    if not files:
        raise DataError(f"{paths.incoming}: no .csv or .parquet files to ingest.")
    frames = [pd.read_parquet(f) if f.suffix == ".parquet" else pd.read_csv(f) for f in files]
    events = canonical(pd.concat(frames, ignore_index=True))
    items = pd.DataFrame({"item_id": events["item_id"].unique(), "category": "unknown"})
    return events, items


def run(params: Params, paths: Paths) -> dict:
    events, items = load(params, paths)
    with atomic_dir(paths.events) as tmp:
        events.to_parquet(tmp / "events.parquet", index=False)
        items.to_parquet(tmp / "items.parquet", index=False)
    return {
        "source": params.ingest.source,
        "events": len(events),
        "users": int(events["user_id"].nunique()),
        "items": int(events["item_id"].nunique()),
    }
