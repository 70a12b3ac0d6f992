"""Where raw events come from, and which batches ``data/events/`` holds.

Sources (``ingest.source``): the synthetic generator, one file or MovieLens folder
(``ingest.path``), or landing mode, where every file in the landing folder (``ingest.path``,
default ``data/incoming/``) is ingested once. In every mode the events kept by
``recflow push-events`` / ``POST /events`` in ``data/pushed/`` join too, one batch per file,
so pushed events become training data (once: validation drops exact duplicates).

``data/events/manifest.json`` lists the batches the events hold, keyed by **(content sha256,
loader fingerprint)**: a file is read once per loader configuration, so a changed
``ingest.loader`` mapping (or a parser fix, ``PARSER_VERSION``) re-reads every file still in
the landing folder and replaces its batch, while a renamed or copied file is recognised by
its bytes. The manifest is replaced in the same atomic step as the events, so a crash can
never record a file without its rows, or the reverse.

Batches leave in two ways, both recorded in the manifest's ``history``:

* ``recflow ingest --forget FILE|BATCH`` drops a batch (refused or unwanted). While the file
  stays in the landing folder it is skipped (``forgotten``); once it is gone, a new delivery
  of the same bytes is ingested again.
* A batch that the last validation **refused** (``reports/validation_failed.json``) is
  withdrawn when its file leaves the landing folder (deleted, or replaced by a fixed file
  under the same name): it never became validated data, so nothing is lost. A batch that
  passed validation stays when its file is cleared away: the landing folder is an inbox, the
  manifest and the events are the history.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from pipeline.columns import Columns as C
from pipeline.config import Params, Paths
from pipeline.data.loaders import (
    CANONICAL,
    SUFFIXES,
    LoaderSpec,
    as_category,
    batch_name,
    canonical,
    items_of,
    load_file,
    movielens_file,
    movielens_items,
    resolve,
    suffix_format,
)
from pipeline.data.synthetic import generate
from pipeline.errors import ConfigError, DataError
from pipeline.io import file_sha256, read_json

log = logging.getLogger("recflow.ingest")

#: batch kinds: the configured source (rebuilt every run), a landing file, a pushed file
SOURCE, LANDING, PUSHED = "source", "landing", "pushed"


@dataclass
class Manifest:
    """``files``: key → entry of every batch in the events (key = sha256 + ':' + loader
    fingerprint; entry: file, batch, kind, rows, sha256, loader, columns, ingested_at);
    ``forgotten``: key → entry of files skipped while they stay where they are;
    ``history``: batches that left the events, with why and when."""

    files: dict[str, dict] = field(default_factory=dict)
    forgotten: dict[str, dict] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"files": self.files, "forgotten": self.forgotten, "history": self.history}

    def by_batch(self) -> dict[str, dict]:
        return {e["batch"]: e for e in self.files.values()}


def read_manifest(paths: Paths) -> Manifest:
    if not paths.manifest.exists():
        return Manifest()
    try:
        raw = read_json(paths.manifest)
    except ValueError as e:
        raise DataError(f"{paths.manifest}: not valid JSON ({e}); restore it from DVC "
                        "('dvc checkout data/events') or remove data/events to start over.") from None
    files = {}
    for key, e in raw.get("files", {}).items():  # manifests before (sha, loader) keys: key = sha
        e = {"kind": LANDING, "sha256": key.split(":")[0], "loader": None, **e}
        files[key] = e
    return Manifest(files, raw.get("forgotten", {}), raw.get("history", []))


@dataclass
class Ingested:
    """What the ingest stage writes: the event table, the item table, the manifest and a
    summary for people. ``events`` is None when the events stay as they are; ``reuse_events``
    says only the manifest changed (the event files are carried over as they are)."""

    events: pd.DataFrame | None
    items: pd.DataFrame | None
    manifest: Manifest = field(default_factory=Manifest)
    summary: dict = field(default_factory=dict)
    reuse_events: bool = False


@dataclass(frozen=True)
class _Input:
    path: Path
    kind: str
    spec: LoaderSpec
    sha: str

    @property
    def key(self) -> str:
        return content_key(self.sha, self.spec)


def content_key(sha: str, spec: LoaderSpec) -> str:
    return f"{sha}:{spec.fingerprint()}"


def _rel(f: Path, root: Path) -> str:
    try:
        return f.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(f)


def source_path(params: Params, paths: Paths) -> Path:
    """``ingest.path`` resolved against the project root."""
    p = Path(params.ingest.path)
    return p if p.is_absolute() else paths.root / p


def _path(params: Params, paths: Paths) -> Path:
    p = source_path(params, paths)
    if p.resolve() == paths.incoming.resolve():
        raise ConfigError(f"params.yaml: key 'ingest.path' must name a file or folder for "
                          f"ingest.source={params.ingest.source} (it is the landing folder "
                          f"{_rel(p, paths.root)}).")
    if not p.exists():
        raise DataError(f"{p}: not found (ingest.path, ingest.source={params.ingest.source}).")
    return p


def _data_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """(files with an accepted suffix, other files) in ``folder``, by name; dotfiles
    (.gitkeep, temp files) are not data."""
    if not folder.is_dir():
        return [], []
    files = sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))
    ok = [f for f in files if suffix_format(f)]
    return ok, [f for f in files if not suffix_format(f)]


def landing_files(incoming: Path) -> list[Path]:
    """Data files in the landing folder, oldest name first; dotfiles (.gitkeep) ignored."""
    return _data_files(incoming)[0]


def pushed_files(paths: Paths) -> list[Path]:
    return [f for f in _data_files(paths.pushed)[0] if suffix_format(f) == "parquet"]


def refused_batches(paths: Paths) -> set[str]:
    """Batches the last validation refused (``reports/validation_failed.json``, written on a
    refusal and removed on success)."""
    try:
        rep = read_json(paths.validation_failed)
    except (OSError, ValueError):
        return set()
    return {b["batch"] for b in rep.get("batches", []) if not b.get("success", True)}


def _counts(events: pd.DataFrame) -> dict:
    return {"events": len(events), "users": int(events[C.user].nunique()),
            "items": int(events[C.item].nunique())}


def _entry(inp: _Input, batch: str, rows: int, root: Path) -> dict:
    return {"file": _rel(inp.path, root), "batch": batch, "kind": inp.kind, "rows": rows,
            "sha256": inp.sha, "loader": inp.spec.fingerprint(), "columns": inp.spec.columns,
            "ingested_at": datetime.now(UTC).isoformat(timespec="seconds")}


def _gone(e: dict, why: str) -> dict:
    return {"file": e["file"], "batch": e["batch"], "rows": e.get("rows"), "why": why,
            "at": datetime.now(UTC).isoformat(timespec="seconds")}


def _source(params: Params, paths: Paths) -> tuple[pd.DataFrame, pd.DataFrame | None, dict]:
    """The configured (non-landing) source, read whole: (events, items or None, entry)."""
    src = params.ingest
    if src.source == "synthetic":
        events, items = generate(params.synthetic)
        events = canonical(events.assign(**{C.batch: "synthetic", C.parse_error: None}))
        entry = {"file": "synthetic", "batch": "synthetic", "kind": SOURCE, "rows": len(events),
                 "sha256": None, "loader": None, "columns": {}}
        return events, items, entry
    p = _path(params, paths)
    preset = "movielens" if src.source == "movielens" else None
    f = movielens_file(p) if preset else p
    if f.is_dir():
        raise ConfigError(f"params.yaml: key 'ingest.path' ({f}) must be a file for ingest.source=file.")
    inp = _Input(f, SOURCE, resolve(src.loader, preset), file_sha256(f))
    batch = batch_name(f, inp.sha)
    events = load_file(f, inp.spec, batch)
    return events, (movielens_items(f) if preset else None), _entry(inp, batch, len(events), paths.root)


def ingest(params: Params, paths: Paths) -> Ingested:
    """Plan and read what the events must hold now (see the module docstring)."""
    landing = params.ingest.source == "landing"
    man = read_manifest(paths)
    inputs: list[_Input] = []
    summary: dict = {"source": params.ingest.source}
    if landing:
        folder = source_path(params, paths)
        files, unknown = _data_files(folder)
        if unknown:
            names = ", ".join(_rel(f, paths.root) for f in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            log.warning("ingest: skipped %d file(s) with an unknown suffix: %s%s (accepted: %s)",
                        len(unknown), names, more, " ".join(SUFFIXES))
            summary["skipped_unknown_suffix"] = len(unknown)
        if not files and not man.files and not pushed_files(paths):
            found = f"; found only {', '.join(f.name for f in unknown[:5])}" if unknown else ""
            raise DataError(f"{folder}: no .csv, .tsv, .data or .parquet file (optionally .gz) "
                            f"to ingest{found}.")
        spec = resolve(params.ingest.loader)
        inputs += [_Input(f, LANDING, spec, file_sha256(f)) for f in files]
    inputs += [_Input(f, PUSHED, CANONICAL, file_sha256(f)) for f in pushed_files(paths)]

    present: dict[str, _Input] = {}
    for inp in inputs:  # a copy of a known file (same bytes) is the same batch
        present.setdefault(inp.key, inp)
    present_sha = {(i.kind, i.sha) for i in present.values()}
    refused = refused_batches(paths)

    keep, drop, history = {}, [], list(man.history)
    old_loader = 0
    fp = resolve(params.ingest.loader).fingerprint()
    for key, e in man.files.items():
        kind = e.get("kind", LANDING)
        if kind == SOURCE and not landing:  # rebuilt below, every run
            drop.append(e)
        elif kind == SOURCE or (kind == LANDING and not landing):
            drop.append(e)
            history.append(_gone(e, f"ingest.source changed to {params.ingest.source}"))
        elif key in present:
            keep[key] = e
        elif (kind, e.get("sha256")) in present_sha:  # same bytes, another loader: read again
            drop.append(e)
            history.append(_gone(e, "re-ingested with the current ingest.loader"))
        elif e["batch"] in refused:
            drop.append(e)
            history.append(_gone(e, "withdrawn: refused by validation, then its file left "
                                    "the landing folder"))
        else:
            keep[key] = e
            old_loader += kind == LANDING and e.get("loader") != fp
    forgotten = {}
    for key, e in man.forgotten.items():
        if key in present:
            forgotten[key] = e
        else:
            history.append({**_gone(e, "forgotten; the file has left, a new delivery is read again"),
                            "at": e.get("forgotten_at")})
    new = [i for k, i in present.items() if k not in keep and k not in forgotten]
    if old_loader:
        log.warning("ingest: %d batch(es) whose file is no longer in the landing folder were read "
                    "with another ingest.loader and stay as they were (see data/events/"
                    "manifest.json; 'recflow ingest --forget BATCH' drops one)", old_loader)

    fresh = history[len(man.history):]
    summary.update({
        "new_files": sum(i.kind == LANDING for i in new),
        "already_ingested": sum(i.kind == LANDING and (i.key in keep or present[i.key] is not i)
                                for i in inputs)})
    optional = {"new_pushed": sum(i.kind == PUSHED for i in new),
                "reingested": sum(h["why"].startswith("re-ingested") for h in fresh),
                "withdrawn": sum(h["why"].startswith("withdrawn") for h in fresh),
                "forgotten_skipped": len(forgotten)}
    summary.update({k: v for k, v in optional.items() if v})
    if old_loader:
        summary["kept_from_another_loader"] = old_loader
    new_man = Manifest(dict(keep), forgotten, history)

    frames: list[pd.DataFrame] = []
    items: pd.DataFrame | None = None
    if not landing:
        src_events, items, entry = _source(params, paths)
        frames.append(src_events)
        new_man.files = {f"{entry['sha256'] or 'synthetic'}:{entry['loader'] or ''}": entry,
                         **new_man.files}
    elif not new and not drop and paths.events_file.exists():
        old = pd.read_parquet(paths.events_file, columns=[C.user, C.item])
        changed = new_man.to_json() != man.to_json()
        return Ingested(None, None, new_man, {**summary, "new_events": 0, **_counts(old)},
                        reuse_events=changed)
    keep_batches = {e["batch"] for e in keep.values()}
    if keep_batches and paths.events_file.exists():
        old = pd.read_parquet(paths.events_file)
        if drop or not landing:
            old = old[old[C.batch].isin(keep_batches)]
        frames.append(old)
    taken = {e["batch"] for e in new_man.files.values()}
    for inp in new:
        batch = _unique(batch_name(inp.path, inp.sha), taken)
        df = load_file(inp.path, inp.spec, batch)
        frames.append(df)
        new_man.files[inp.key] = _entry(inp, batch, len(df), paths.root)
    if not frames:
        raise DataError(f"{source_path(params, paths)}: nothing to ingest: every file there was "
                        "forgotten or withdrawn; add a data file.")
    events = canonical(concat(frames))
    items = _merge_items(items, events)
    n_new = sum(new_man.files[i.key]["rows"] for i in new)
    return Ingested(events, items, new_man, {**summary, "new_events": n_new, **_counts(events)})


def _unique(name: str, taken: set[str]) -> str:
    """``name``, or ``name-2``, ``name-3`` … if another batch has it (a pushed file copied
    into the landing folder has the same stem and bytes)."""
    out, i = name, 1
    while out in taken:
        i += 1
        out = f"{name}-{i}"
    taken.add(out)
    return out


def _merge_items(source_items: pd.DataFrame | None, events: pd.DataFrame) -> pd.DataFrame:
    """The source's item table (MovieLens movies, synthetic catalogue) with the items only
    the events know (pushed events) added as ``unknown``; else the items of the events."""
    if source_items is None:
        return items_of(events)
    seen = set(source_items[C.item].astype(str))
    extra = items_of(events)
    extra = extra[~extra[C.item].isin(seen)]
    return pd.concat([source_items, extra], ignore_index=True) if len(extra) else source_items


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
            out[c] = pd.Series(union_categoricals([as_category(p).array for p in parts]))
        else:
            out[c] = pd.concat([p.reset_index(drop=True) for p in parts], ignore_index=True)
    return pd.DataFrame(out)


# ---- recflow ingest --forget ------------------------------------------------------------

def _match(target: str, man: Manifest, paths: Paths) -> list[tuple[str, dict]]:
    """Manifest entries named by ``target``: a batch name, a file path (as given, or relative
    to the project root), a file name, or a file whose bytes are a known batch's."""
    hits = [(k, e) for k, e in man.files.items() if e["batch"] == target]
    if hits:
        return hits
    cands = {Path(target).resolve(), (paths.root / target).resolve()}
    hits = [(k, e) for k, e in man.files.items()
            if (paths.root / e["file"]).resolve() in cands or Path(e["file"]).resolve() in cands]
    if hits:
        return hits
    hits = [(k, e) for k, e in man.files.items() if Path(e["file"]).name == target]
    if len(hits) > 1:
        raise DataError(f"ingest --forget {target}: names {len(hits)} batches "
                        f"({', '.join(e['batch'] for _, e in hits)}); name the batch instead.")
    if hits:
        return hits
    f = next((c for c in cands if c.is_file()), None)
    if f is not None:
        sha = file_sha256(f)
        return [(k, e) for k, e in man.files.items() if e.get("sha256") == sha]
    return []


def forget(params: Params, paths: Paths, targets: list[str]) -> Ingested:
    """Drop the batches named by ``targets`` from the events (see the module docstring)."""
    man = read_manifest(paths)
    if not man.files or not paths.events_file.exists():
        raise DataError(f"{paths.events}: nothing ingested yet; nothing to forget.")
    chosen: dict[str, dict] = {}
    for t in targets:
        hits = _match(t, man, paths)
        if not hits and any(t in (e["batch"], e["file"], Path(e["file"]).name)
                            for e in man.forgotten.values()):
            raise DataError(f"ingest --forget {t}: already forgotten (skipped while its file "
                            "stays in the landing folder).")
        if not hits:
            known = ", ".join(f"{e['batch']} ({e['file']})" for e in list(man.files.values())[:8])
            raise DataError(f"ingest --forget {t}: no such batch or file in {_rel(paths.manifest, paths.root)}; "
                            f"known: {known}.")
        for k, e in hits:
            if e.get("kind") == SOURCE:
                raise DataError(f"ingest --forget {t}: batch {e['batch']} is the configured source "
                                f"(ingest.source={params.ingest.source}); change params.yaml instead.")
            chosen[k] = e
    events = pd.read_parquet(paths.events_file)
    gone = {e["batch"] for e in chosen.values()}
    is_gone = events[C.batch].isin(gone).to_numpy()
    events = events[~is_gone].reset_index(drop=True)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    files = {k: e for k, e in man.files.items() if k not in chosen}
    forgotten, history = dict(man.forgotten), list(man.history)
    for k, e in chosen.items():
        f = paths.root / e["file"]
        if f.is_file() and e.get("sha256") and file_sha256(f) == e["sha256"]:
            forgotten[k] = {**e, "forgotten_at": now}  # skipped while the file stays
        else:
            history.append(_gone(e, "forgotten (recflow ingest --forget)"))
    new_man = Manifest(files, forgotten, history)
    if params.ingest.source == "landing" or not paths.events_items.exists():
        items = items_of(events)
    else:
        items = pd.read_parquet(paths.events_items)
    summary = {"forgotten": ", ".join(sorted(gone)), "rows_dropped": int(is_gone.sum()),
               **_counts(events)}
    return Ingested(canonical(events), items, new_man, summary)
