"""Map outside files onto the canonical event table (see DESIGN.md), by configuration.

A loader reads one file (CSV / TSV / parquet, gzip ok) and returns canonical events plus two
bookkeeping columns: ``batch`` (which file the row came from) and ``parse_error`` (why a
row could not be read: a malformed line, invalid UTF-8, an unparseable timestamp or value).
Row problems never raise here: they travel as data so that validation can quarantine them
and accepted + quarantined = input rows. Only file-level problems (cannot be parsed at all,
a required column missing, nothing mapped) raise :class:`DataError` naming the file.

Presets bring their own column mapping, event names and time unit:

* ``movielens``: ``ratings.csv`` (userId, movieId, rating, timestamp) or the tab-separated,
  headerless ``u.data``; every rating is an implicit ``rating`` event, value = stars.
* ``ecommerce``: behaviour logs (user_id, item_id, category_id, behavior_type, timestamp;
  header optional) whose events ``pv``/``cart``/``fav``/``buy`` become
  ``view``/``add_to_cart``/``favorite``/``purchase``.
* ``generic``: whatever ``ingest.loader`` says (identity mapping by default).
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.columns import Columns as C
from pipeline.config import LoaderParams
from pipeline.errors import DataError

#: canonical columns a source must provide (event_type may instead be a preset constant)
REQUIRED = (C.user, C.item, C.event, C.ts)
OPTIONAL = (C.value, C.category)


@dataclass(frozen=True)
class LoaderSpec:
    """A resolved loader: preset defaults with the user's ``ingest.loader`` keys on top."""

    columns: dict[str, str]  # canonical name -> source column
    events: dict[str, str] = field(default_factory=dict)  # source event name -> canonical
    time_unit: str = "iso"  # s | ms | iso
    format: str = "auto"  # auto | csv | tsv | parquet
    constant_event: str | None = None  # every row is this event (MovieLens: rating)
    names: tuple[str, ...] | None = None  # column names for a headerless file


_IDENTITY = {c: c for c in (*REQUIRED, C.value)}
PRESETS: dict[str, LoaderSpec] = {
    "generic": LoaderSpec(columns=_IDENTITY),
    "movielens": LoaderSpec(
        columns={C.user: "userId", C.item: "movieId", C.ts: "timestamp", C.value: "rating"},
        time_unit="s",
        constant_event="rating",
        names=("userId", "movieId", "rating", "timestamp"),
    ),
    "ecommerce": LoaderSpec(
        columns={C.user: "user_id", C.item: "item_id", C.event: "behavior_type",
                 C.ts: "timestamp", C.category: "category_id"},
        events={"pv": "view", "cart": "add_to_cart", "fav": "favorite", "buy": "purchase"},
        time_unit="s",
        names=("user_id", "item_id", "category_id", "behavior_type", "timestamp"),
    ),
}


def resolve(lp: LoaderParams, preset: str | None = None) -> LoaderSpec:
    """The spec for ``preset`` (default ``lp.preset``) with explicit params keys on top."""
    base = PRESETS[preset or lp.preset]
    return LoaderSpec(
        columns={**base.columns, **lp.columns},
        events={**base.events, **lp.events},
        time_unit=lp.time_unit or base.time_unit,
        format=lp.format if lp.format != "auto" else base.format,
        constant_event=base.constant_event,
        names=base.names,
    )


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def batch_name(path: Path, sha: str) -> str:
    """``<file stem>-<8 hex of content>``: readable and unique per content."""
    stem = path.name.split(".")[0] or "batch"
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in stem)
    return f"{safe}-{sha[:8]}"


def _format(path: Path, spec: LoaderSpec) -> str:
    if spec.format != "auto":
        return spec.format
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".tsv", ".data", ".tab")):
        return "tsv"
    return "csv"


def _open(path: Path):
    import gzip

    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else path.open("rb")


def _first_line(path: Path) -> str:
    try:
        with _open(path) as f:
            return f.readline(1 << 16).decode("utf-8", errors="replace")
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e}).") from None


def _sniff(path: Path) -> str:
    with _open(path) as f:
        return f.read(8192).decode("latin-1")


def _read_csv(path: Path, spec: LoaderSpec, delimiter: str) -> tuple[pa.Table, list[str]]:
    """All columns as strings (types are ours to parse, row by row); malformed lines are
    collected instead of failing the file."""
    head = _first_line(path)
    if "\x00" in _sniff(path):
        raise DataError(f"{path}: not a text file (NUL bytes); cannot be parsed as CSV.")
    if not head.strip():
        raise DataError(f"{path}: empty file (no header, no rows); expect_table_row_count_to_be_between(min_value=1) failed.")
    wanted = set(spec.columns.values())
    header_cols = [h.strip().strip('"') for h in head.rstrip("\r\n").split(delimiter)]
    headerless = spec.names is not None and not (wanted & set(header_cols))
    bad: list[str] = []

    def on_invalid(row) -> str:  # pyarrow.csv.InvalidRow
        where = f"line {row.number}: " if row.number is not None else ""
        bad.append(f"malformed line ({row.actual_columns} fields, expected "
                   f"{row.expected_columns}): {where}{row.text[:80]!r}")
        return "skip"

    ropts = pacsv.ReadOptions(column_names=list(spec.names) if headerless else None,
                              block_size=64 << 20)
    popts = pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid,
                               newlines_in_values=False)
    names = list(spec.names) if headerless else header_cols
    include = [n for n in names if n in wanted]

    def read(kind: pa.DataType) -> pa.Table:
        copts = pacsv.ConvertOptions(column_types={n: kind for n in include},
                                     include_columns=include or None, strings_can_be_null=True,
                                     quoted_strings_can_be_null=True)
        return pacsv.read_csv(path, read_options=ropts, parse_options=popts, convert_options=copts)

    hook = sys.unraisablehook  # pyarrow reports a non-UTF-8 malformed line via this hook
    sys.unraisablehook = lambda u: bad.append(f"malformed line with invalid UTF-8: {u.exc_value}")
    try:
        try:
            return read(pa.string()), bad
        except pa.ArrowInvalid as e:
            if "UTF8" not in str(e):
                raise
            bad.clear()
            return read(pa.binary()), bad  # decoded value by value in _to_str
    except (pa.ArrowInvalid, UnicodeDecodeError, OSError) as e:
        raise DataError(f"{path}: cannot be parsed as {'TSV' if delimiter == chr(9) else 'CSV'} "
                        f"({str(e).splitlines()[0][:160]}).") from None
    finally:
        sys.unraisablehook = hook


def _to_str(col: pa.ChunkedArray | pa.Array) -> tuple[pd.Series, np.ndarray]:
    """(strings with blank → null, mask of rows whose bytes were not valid UTF-8)."""
    if pa.types.is_binary(col.type):
        raw = col.to_pylist()
        bad = np.zeros(len(raw), dtype=bool)
        out: list[str | None] = []
        for i, b in enumerate(raw):
            if b is None:
                out.append(None)
                continue
            try:
                out.append(b.decode("utf-8"))
            except UnicodeDecodeError:
                bad[i] = True
                out.append(b.decode("utf-8", errors="replace"))
        s = pd.Series(out, dtype="string[pyarrow]")
    else:
        if not pa.types.is_string(col.type) and not pa.types.is_large_string(col.type):
            col = pc.cast(col, pa.string())
        s = pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array(col) if isinstance(col, pa.Array)
                                                 else col))
        bad = np.zeros(len(s), dtype=bool)
    s = s.str.strip()
    return s.mask(s == ""), bad


def _timestamps(raw: pa.ChunkedArray, unit: str) -> tuple[pd.Series, pd.Series]:
    """(UTC timestamps with NaT where unparseable, the raw text as strings)."""
    if pa.types.is_timestamp(raw.type):
        ts = pd.Series(raw.to_pandas())
        ts = ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts.dt.tz_convert("UTC")
        return ts.dt.as_unit("us"), pd.Series([None] * len(ts), dtype="string")
    text, _ = _to_str(raw)
    if unit in ("s", "ms"):
        num = pd.to_numeric(text, errors="coerce")
        ts = pd.to_datetime(num, unit=unit, utc=True, errors="coerce")
    else:
        ts = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
    return ts.dt.as_unit("us"), text


def _read(path: Path, spec: LoaderSpec) -> tuple[pa.Table, list[str]]:
    fmt = _format(path, spec)
    if fmt == "parquet":
        try:
            return pq.read_table(path), []
        except (pa.ArrowInvalid, OSError) as e:
            raise DataError(f"{path}: cannot be parsed as parquet ({str(e).splitlines()[0][:160]}).") from None
    return _read_csv(path, spec, "\t" if fmt == "tsv" else ",")


def load_file(path: Path, spec: LoaderSpec, batch: str) -> pd.DataFrame:
    """One file → canonical events + ``batch`` + ``parse_error`` (one row per input row,
    malformed lines included as rows with null fields)."""
    table, malformed = _read(path, spec)
    need = [c for c in REQUIRED if not (c == C.event and spec.constant_event)]
    missing = [spec.columns.get(c, "?") + ("" if spec.columns.get(c) == c else f" (for {c})")
               for c in need if spec.columns.get(c) not in table.column_names]
    if missing:
        found = ", ".join(table.column_names[:10]) or "none"
        raise DataError(f"{path}: expect_column_to_exist failed: required column(s) "
                        f"{', '.join(missing)} missing; found: {found}. Fix the file or "
                        "ingest.loader.columns.")
    n = table.num_rows
    err = pd.Series([None] * n, dtype="object")
    utf8_bad = np.zeros(n, dtype=bool)

    def text(c: str) -> pd.Series:
        s, bad = _to_str(table.column(spec.columns[c]))
        utf8_bad[:] |= bad
        return s

    user, item = text(C.user), text(C.item)
    if spec.constant_event:
        event = pd.Series(pd.Categorical([spec.constant_event] * n))
    else:
        ev = text(C.event)
        event = ev.map(lambda x: spec.events.get(x, x), na_action="ignore") if spec.events else ev
        event = event.astype("category")
    ts, ts_text = _timestamps(table.column(spec.columns[C.ts]), spec.time_unit)
    bad_ts = (ts.isna() & ts_text.notna()).to_numpy()
    err[bad_ts] = (f"event_timestamp is not a timestamp ({spec.time_unit}): "
                   + ts_text[bad_ts].astype(str).str.slice(0, 40)).to_numpy()
    if spec.columns.get(C.value) in table.column_names:
        vcol = table.column(spec.columns[C.value])
        if pa.types.is_integer(vcol.type) or pa.types.is_floating(vcol.type):
            value = pd.Series(vcol.to_numpy(zero_copy_only=False), dtype="float64")
        else:
            vtext = text(C.value)
            value = pd.to_numeric(vtext, errors="coerce").astype("float64")
            bad_v = (value.isna() & vtext.notna()).to_numpy() & err.isna().to_numpy()
            err[bad_v] = ("value is not a number: "
                          + vtext[bad_v].astype(str).str.slice(0, 40)).to_numpy()
    else:
        value = pd.Series(np.full(n, np.nan))
    err[utf8_bad] = "invalid UTF-8 bytes"
    out = pd.DataFrame({C.user: user, C.item: item, C.event: event, C.ts: ts, C.value: value,
                        C.batch: batch, C.parse_error: err})
    if spec.columns.get(C.category) in table.column_names:
        out[C.category] = text(C.category)
    if malformed:
        junk = pd.DataFrame({C.batch: [batch] * len(malformed), C.parse_error: malformed})
        junk[C.event] = pd.Categorical([None] * len(malformed), categories=out[C.event].cat.categories)
        out = pd.concat([out, junk], ignore_index=True)
    return canonical(out)


def canonical(df: pd.DataFrame) -> pd.DataFrame:
    """Cast a frame with the canonical columns (+ optional bookkeeping) to canonical dtypes:
    ids as Arrow strings, event_type categorical (cheap to check at 10M rows), UTC µs times."""
    out = pd.DataFrame(
        {
            C.user: df[C.user].astype("string[pyarrow]"),
            C.item: df[C.item].astype("string[pyarrow]"),
            C.event: df[C.event].astype("string[pyarrow]").astype("category"),
            C.ts: pd.to_datetime(df[C.ts], utc=True).dt.as_unit("us"),
            C.value: pd.to_numeric(df[C.value], errors="coerce").astype("float64"),
        }
    )
    for extra in (C.batch, C.parse_error, C.category):
        if extra in df.columns:
            out[extra] = df[extra].astype("string[pyarrow]") if extra != C.parse_error else df[extra]
    return out


def items_of(events: pd.DataFrame) -> pd.DataFrame:
    """Item metadata: the category column when the source had one, else ``unknown``."""
    if C.category in events.columns:
        cat = events[[C.item, C.category]].dropna(subset=[C.item])
        cat = cat.drop_duplicates(C.item, keep="last")
        return pd.DataFrame({C.item: cat[C.item].astype(str).to_numpy(),
                             C.category: cat[C.category].fillna("unknown").astype(str).to_numpy()})
    ids = events[C.item].dropna().unique()
    return pd.DataFrame({C.item: np.asarray(ids, dtype=object), C.category: "unknown"})


def movielens_file(path: Path) -> Path:
    """A MovieLens folder → its ratings file (``ratings.csv`` or ``u.data``)."""
    if path.is_file():
        return path
    for name in ("ratings.csv", "u.data"):
        if (path / name).exists():
            return path / name
    raise DataError(f"{path}: no ratings.csv or u.data here. Point ingest.path at a MovieLens folder.")


def movielens_items(ratings: Path) -> pd.DataFrame | None:
    """``movies.csv`` / ``u.item`` beside the ratings → item_id, first genre as category."""
    movies = ratings.with_name("movies.csv")
    if movies.exists():
        m = pd.read_csv(movies, dtype=str)
        return pd.DataFrame({C.item: m["movieId"], C.category: m["genres"].str.split("|").str[0]})
    return None
