"""Stage ``ingest``: the configured source (+ pushed events) → ``data/events/`` (events,
items, manifest), replaced in one atomic step (see :mod:`pipeline.data.landing`).
``recflow ingest --forget FILE|BATCH`` drops batches the same way."""

from __future__ import annotations

from pipeline.config import Params, Paths
from pipeline.data import attributes, landing
from pipeline.io import atomic_dir, link_or_copy, write_json


def _write(got: landing.Ingested, paths: Paths) -> None:
    with atomic_dir(paths.events) as tmp:
        if got.reuse_events:  # only the manifest changed: carry the event files over as they are
            for f in (paths.events_file, paths.events_items):
                link_or_copy(f, tmp / f.name)
        else:
            got.events.to_parquet(tmp / paths.events_file.name, index=False)
            got.items.to_parquet(tmp / paths.events_items.name, index=False)
        write_json(tmp / paths.manifest.name, got.manifest.to_json())


def _write_attributes(params: Params, paths: Paths) -> dict:
    """The attribute tables (read whole each run: they are small) → ``data/attributes/``."""
    tables = attributes.load(params, paths)
    with atomic_dir(paths.attributes) as tmp:
        attributes.write_raw(tables, tmp)
    return {f"{k}_attribute_rows": len(t.frame) for k, t in tables.items()}


def run(params: Params, paths: Paths) -> dict:
    got = landing.ingest(params, paths)
    if got.events is not None or got.reuse_events:  # else nothing changed: events stay as they are
        _write(got, paths)
    return {**got.summary, **_write_attributes(params, paths)}


def forget(params: Params, paths: Paths, targets: list[str]) -> dict:
    got = landing.forget(params, paths, targets)
    _write(got, paths)
    return got.summary
