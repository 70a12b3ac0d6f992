"""Stage ``ingest``: the configured source → ``data/events/`` (events, items, manifest),
replaced in one atomic step (see :mod:`pipeline.data.landing`)."""

from __future__ import annotations

from pipeline.config import Params, Paths
from pipeline.data.landing import ingest
from pipeline.io import atomic_dir, write_json


def run(params: Params, paths: Paths) -> dict:
    got = ingest(params, paths)
    if got.events is None:  # landing mode, nothing new: the events stay as they are
        return got.summary
    with atomic_dir(paths.events) as tmp:
        got.events.to_parquet(tmp / paths.events_file.name, index=False)
        got.items.to_parquet(tmp / paths.events_items.name, index=False)
        if got.manifest:
            write_json(tmp / paths.manifest.name, {"files": got.manifest})
    return got.summary
