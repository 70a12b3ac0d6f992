"""Where raw events come from: the synthetic generator, one file or MovieLens folder
(``ingest.path``), or landing mode, where every file dropped into ``data/incoming/`` is
ingested exactly once.

Landing keeps ``data/events/manifest.json`` (content sha256 → batch) next to the events it
describes, so the ingest stage replaces both in one atomic step: a crash can never record a
file as ingested without its rows, or the reverse. Re-running adds nothing twice; a renamed
copy of a known file is recognised by its hash. A file that cannot be parsed or lacks a
required column stops the stage (DataError naming the file) and nothing is written, so the
fixed file is picked up on the next run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from pipeline.columns import Columns as C
from pipeline.config import Params, Paths
from pipeline.data.loaders import (
    batch_name,
    canonical,
    items_of,
    load_file,
    movielens_file,
    movielens_items,
    resolve,
)
from pipeline.data.synthetic import generate
from pipeline.errors import ConfigError, DataError
from pipeline.io import file_sha256, read_json

LANDING_SUFFIXES = (".csv", ".tsv", ".parquet", ".data", ".csv.gz", ".tsv.gz", ".data.gz")


@dataclass
class Ingested:
    """What the ingest stage writes: the event table, the item table, the manifest (content
    sha256 → batch entry), and a summary for people. ``events`` is None when nothing new
    arrived and the existing events stay as they are."""

    events: pd.DataFrame | None
    items: pd.DataFrame | None
    manifest: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)


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


def _counts(events: pd.DataFrame) -> dict:
    return {"events": len(events), "users": int(events[C.user].nunique()),
            "items": int(events[C.item].nunique())}


def load_source(params: Params, paths: Paths) -> Ingested:
    """The whole event table of a synthetic / movielens / file source."""
    src = params.ingest
    if src.source == "synthetic":
        events, items = generate(params.synthetic)
        events = canonical(_with_batch(events, "synthetic"))
        return Ingested(events, items, {}, {"source": src.source, **_counts(events)})
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
    manifest = {sha: {"file": str(f), "batch": batch, "rows": len(events)}}
    return Ingested(events, items, manifest, {"source": src.source, **_counts(events)})


def collect_landing(params: Params, paths: Paths) -> Ingested:
    """Known events + every landing file not ingested yet (by content hash)."""
    manifest = read_json(paths.manifest)["files"] if paths.manifest.exists() else {}
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
    summary = {"source": "landing", "new_files": len(new_entries), "already_ingested": skipped}
    if not new_frames and paths.events_file.exists():
        old = pd.read_parquet(paths.events_file, columns=[C.user])
        return Ingested(None, None, manifest, {**summary, "new_events": 0, "events": len(old)})
    old_events = (pd.read_parquet(paths.events_file)
                  if manifest and paths.events_file.exists() else None)
    frames = ([old_events] if old_events is not None else []) + new_frames
    events = canonical(concat(frames))
    n_new = sum(e["rows"] for e in new_entries.values())
    return Ingested(events, items_of(events), {**manifest, **new_entries},
                    {**summary, "new_events": n_new, **_counts(events)})


def concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
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


def ingest(params: Params, paths: Paths) -> Ingested:
    """What the configured source yields (landing: only what is new)."""
    if params.ingest.source == "landing":
        return collect_landing(params, paths)
    return load_source(params, paths)
