"""Stage ``ingest``: produce ``data/events/`` (events.parquet + items.parquet).

Sources (``ingest.source``): the synthetic generator, one file or MovieLens folder
(``ingest.path``), or landing mode: every file dropped into ``data/incoming/`` is ingested
exactly once. Landing keeps ``data/events/manifest.json`` (content sha256 → batch) next to
the events it describes, so both are replaced in one atomic step: a crash can never record a
file as ingested without its rows, or the reverse. Re-running adds nothing twice; a renamed
copy of a known file is recognised by its hash. A file that cannot be parsed or lacks a
required column stops the stage (DataError naming the file) and nothing is written, so the
fixed file is picked up on the next run.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from pipeline.columns import Columns as C
from pipeline.config import Params, Paths
from pipeline.errors import ConfigError, DataError
from pipeline.io import atomic_dir, read_json, write_json
from pipeline.loaders import (
    batch_name,
    canonical,
    file_sha256,
    items_of,
    load_file,
    movielens_file,
    movielens_items,
    resolve,
)
from pipeline.synthetic import generate

log = logging.getLogger("recflow.ingest")

MANIFEST = "manifest.json"
LANDING_SUFFIXES = (".csv", ".tsv", ".parquet", ".data", ".csv.gz", ".tsv.gz", ".data.gz")


def _path(params: Params, paths: Paths) -> Path:
    if not params.ingest.path:
        raise ConfigError(f"params.yaml: key 'ingest.path' must name a file or folder for "
                          f"ingest.source={params.ingest.source}.")
    p = Path(params.ingest.path)
    p = p if p.is_absolute() else paths.root / p
    if not p.exists():
        raise DataError(f"{p}: not found (ingest.path).")
    return p


def landing_files(incoming: Path) -> list[Path]:
    """Data files in the landing folder, oldest name first; dotfiles (.gitkeep) ignored."""
    if not incoming.is_dir():
        return []
    return sorted(f for f in incoming.iterdir()
                  if f.is_file() and not f.name.startswith(".")
                  and f.name.lower().endswith(LANDING_SUFFIXES))


def _with_batch(events: pd.DataFrame, batch: str) -> pd.DataFrame:
    return events.assign(**{C.batch: batch, C.parse_error: None})


def load(params: Params, paths: Paths) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(events, items, manifest) for synthetic / movielens / file sources; the manifest maps
    the content hash of each source file to its batch."""
    src = params.ingest
    if src.source == "synthetic":
        events, items = generate(params.synthetic)
        return canonical(_with_batch(events, "synthetic")), items, {}
    p = _path(params, paths)
    preset = "movielens" if src.source == "movielens" else None
    f = movielens_file(p) if preset else p
    if f.is_dir():
        raise ConfigError(f"params.yaml: key 'ingest.path' ({f}) must be a file for ingest.source=file.")
    sha = file_sha256(f)
    batch = batch_name(f, sha)
    events = load_file(f, resolve(src.loader, preset), batch)
    items = (movielens_items(f) if preset else None)
    if items is None:
        items = items_of(events)
    return events, items, {sha: {"file": str(f), "batch": batch, "rows": len(events)}}


def _ingest_landing(params: Params, paths: Paths) -> dict:
    manifest_path = paths.events / MANIFEST
    manifest = read_json(manifest_path)["files"] if manifest_path.exists() else {}
    files = landing_files(paths.incoming)
    if not files and not manifest:
        raise DataError(f"{paths.incoming}: no .csv/.tsv/.parquet (optionally .gz) files to ingest.")
    spec = resolve(params.ingest.loader)
    new_frames, new_entries, skipped = [], {}, 0
    for f in files:
        sha = file_sha256(f)
        if sha in manifest or sha in new_entries:
            skipped += 1
            continue
        batch = batch_name(f, sha)
        df = load_file(f, spec, batch)
        new_frames.append(df)
        new_entries[sha] = {"file": str(f.relative_to(paths.root)), "batch": batch, "rows": len(df),
                            "ingested_at": datetime.now(UTC).isoformat(timespec="seconds")}
    result = {"source": "landing", "new_files": len(new_entries), "already_ingested": skipped}
    if not new_frames and (paths.events / "events.parquet").exists():
        old = pd.read_parquet(paths.events / "events.parquet", columns=[C.user])
        return {**result, "new_events": 0, "events": len(old)}
    old_events = (pd.read_parquet(paths.events / "events.parquet")
                  if manifest and (paths.events / "events.parquet").exists() else None)
    frames = ([old_events] if old_events is not None else []) + new_frames
    events = canonical(_concat(frames))
    items = items_of(events)
    with atomic_dir(paths.events) as tmp:
        events.to_parquet(tmp / "events.parquet", index=False)
        items.to_parquet(tmp / "items.parquet", index=False)
        write_json(tmp / MANIFEST, {"files": {**manifest, **new_entries}})
    n_new = sum(e["rows"] for e in new_entries.values())
    return {**result, "new_events": n_new, "events": len(events),
            "users": int(events[C.user].nunique()), "items": int(events[C.item].nunique())}


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concat that keeps categorical columns categorical (pandas falls back to object when
    categories differ, which at millions of rows costs seconds and gigabytes)."""
    from pandas.api.types import union_categoricals

    if len(frames) == 1:
        return frames[0]
    cols = list(dict.fromkeys(c for f in frames for c in f.columns))
    out = {}
    for c in cols:
        parts = [f[c] if c in f.columns else pd.Series([None] * len(f), dtype=object) for f in frames]
        if all(isinstance(p.dtype, pd.CategoricalDtype) for p in parts):
            out[c] = pd.Series(union_categoricals([p.array for p in parts]))
        else:
            out[c] = pd.concat([p.reset_index(drop=True) for p in parts], ignore_index=True)
    return pd.DataFrame(out)


def run(params: Params, paths: Paths) -> dict:
    if params.ingest.source == "landing":
        return _ingest_landing(params, paths)
    events, items, manifest = load(params, paths)
    with atomic_dir(paths.events) as tmp:
        events.to_parquet(tmp / "events.parquet", index=False)
        items.to_parquet(tmp / "items.parquet", index=False)
        if manifest:
            write_json(tmp / MANIFEST, {"files": manifest})
    return {
        "source": params.ingest.source,
        "events": len(events),
        "users": int(events[C.user].nunique()),
        "items": int(events[C.item].nunique()),
    }
