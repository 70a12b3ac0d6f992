"""Map outside files onto the canonical event table (see DESIGN.md), by configuration.

A loader reads one file (CSV / TSV / parquet, gzip ok) and returns canonical events plus two
bookkeeping columns: ``batch`` (which file the row came from) and ``parse_error`` (why a
row could not be read: a malformed line, invalid UTF-8, an unparseable timestamp or value).
Row problems never raise here: they travel as data so that validation can quarantine them
and accepted + quarantined = input rows. Only file-level problems (cannot be parsed at all,
a required column missing, nothing mapped) raise :class:`DataError` naming the file.

The input contract (README "Input contract"): a CSV/TSV field is null only when it is empty or
blank; ``NA``, ``null``, ``NaN`` … are ordinary strings (an id ``"NA"`` is an id, a value
``"NaN"`` is not a number). Line endings may be LF, CRLF or CR; a quoted field may hold a
delimiter, a quote (doubled) or a line break.

Presets bring their own column mapping, event names and time unit:

* ``movielens``: ``ratings.csv`` (userId, movieId, rating, timestamp) or the tab-separated,
  headerless ``u.data``; every rating is an implicit ``rating`` event, value = stars.
* ``ecommerce``: behaviour logs (user_id, item_id, category_id, behavior_type, timestamp;
  header optional) whose events ``pv``/``cart``/``fav``/``buy`` become
  ``view``/``add_to_cart``/``favorite``/``purchase``.
* ``generic``: whatever ``ingest.loader`` says (identity mapping by default).

Aggregated files (last.fm's ``user_artists.dat``: user, artist, total plays) load by
configuration too: ``event_type`` gives every row one event type, ``time_unit: none`` says the
file has no time (every row gets :data:`TIMELESS`, and only a leave-N-out split may use it),
and the count goes into ``value`` (``signals.value_kind.<type>: count``), one row per pair.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
from dataclasses import asdict, dataclass, field
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

#: canonical columns a source must provide (event_type may instead be a constant, the
#: timestamp left out with ``time_unit: none``)
REQUIRED = (C.user, C.item, C.event, C.ts)
#: the event time of every row of a file without time (``time_unit: none``): fixed, so the same
#: bytes give the same rows; a time split refuses such data (config and split both check)
TIMELESS = pd.Timestamp("2000-01-01", tz="UTC")
OPTIONAL = (C.value, C.category)

#: bump when the loaders read the same bytes differently (a parser fix): files still in the
#: landing folder are then re-ingested, like after a change of ``ingest.loader``
PARSER_VERSION = 2

#: accepted file suffixes → format (text formats may also end in ``.gz``); any other file in
#: the landing folder is skipped with a warning
TEXT_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".data": "tsv"}
SUFFIXES = (*TEXT_SUFFIXES, ".parquet", *(f"{s}.gz" for s in TEXT_SUFFIXES))

#: the only field text a CSV/TSV loader reads as null (after trimming blanks)
NULL_STRINGS = ("",)
#: bytes pyarrow parses per block (and per thread); a row never straddles two blocks
BLOCK_SIZE = 64 << 20


@dataclass(frozen=True)
class LoaderSpec:
    """A resolved loader: preset defaults with the user's ``ingest.loader`` keys on top."""

    columns: dict[str, str]  # canonical name -> source column
    events: dict[str, str] = field(default_factory=dict)  # source event name -> canonical
    time_unit: str = "iso"  # s | ms | iso | none (no time column: every row is TIMELESS)
    format: str = "auto"  # auto | csv | tsv | parquet
    constant_event: str | None = None  # every row is this event (MovieLens: rating)
    names: tuple[str, ...] | None = None  # column names for a headerless file

    def fingerprint(self) -> str:
        """What the rows of a file depend on besides its bytes: this spec and the parser
        version. The landing manifest keys a file by (content hash, fingerprint)."""
        blob = json.dumps({**asdict(self), "parser": PARSER_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def source_column(self, canonical: str) -> str:
        """The column name the file gives for ``canonical`` (for messages people act on)."""
        return self.columns.get(canonical, canonical)


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


#: what ``recflow push-events`` / ``POST /events`` keep in data/pushed/: canonical parquet
CANONICAL = LoaderSpec(columns={**_IDENTITY, C.category: C.category}, format="parquet")


def resolve(lp: LoaderParams, preset: str | None = None) -> LoaderSpec:
    """The spec for ``preset`` (default ``lp.preset``) with explicit params keys on top."""
    base = PRESETS[preset or lp.preset]
    return LoaderSpec(
        columns={**base.columns, **lp.columns},
        events={**base.events, **lp.events},
        time_unit=lp.time_unit or base.time_unit,
        format=lp.format if lp.format != "auto" else base.format,
        constant_event=lp.event_type or base.constant_event,
        names=base.names,
    )


def batch_name(path: Path, sha: str) -> str:
    """``<file stem>-<8 hex of content>``: readable and unique per content."""
    stem = path.name.split(".")[0] or "batch"
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in stem)
    return f"{safe}-{sha[:8]}"


def suffix_format(path: Path) -> str | None:
    """The format a file's suffix names (``SUFFIXES``), or None for an unknown suffix."""
    name = path.name.lower()
    if name.endswith(".parquet"):
        return "parquet"
    name = name.removesuffix(".gz")
    return next((f for s, f in TEXT_SUFFIXES.items() if name.endswith(s)), None)


def _format(path: Path, spec: LoaderSpec) -> str:
    if spec.format != "auto":
        return spec.format
    return suffix_format(path) or "csv"


def _open(path: Path):
    import gzip

    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else path.open("rb")


def _head(path: Path, n: int = 1 << 16) -> bytes:
    try:
        with _open(path) as f:
            return f.read(n)
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e}).") from None


def _header(head: bytes, delimiter: str) -> list[str]:
    """The first row's fields, read the way the parser will: quotes respected, and a row ends
    at LF, CRLF or a lone CR (``newline=""`` keeps Python's csv reader from splitting only
    at LF, which made a CR-only file one long header and silently dropped columns)."""
    text = head.decode("utf-8", errors="replace")
    try:
        return next(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    except (StopIteration, csv.Error):
        return []


def _may_hold_line_breaks(path: Path) -> bool:
    """True unless the file has no quote character at all. Only a quoted field can hold a line
    break; pyarrow must then be told so (``newlines_in_values``), else a row split at a block
    boundary is silently cut in two. Scanning costs ~0.05 s per 100 MB; the quote-aware
    parser costs ~25% of the read, so it is only used when needed. A compressed file is
    assumed to have quotes (scanning it would mean decompressing it twice)."""
    if path.name.lower().endswith(".gz"):
        return True
    with path.open("rb") as f:
        return any(b'"' in chunk for chunk in iter(lambda: f.read(1 << 20), b""))


def _read_csv(path: Path, spec: LoaderSpec, delimiter: str) -> tuple[pa.Table, list[str]]:
    """All columns as strings (types are ours to parse, row by row); malformed lines are
    collected instead of failing the file and come back as all-null rows at the end of the
    table, so every line of the file is one row (accepted + quarantined = input)."""
    head = _head(path)
    if b"\x00" in head[:8192]:
        raise DataError(f"{path}: not a text file (NUL bytes); cannot be parsed as CSV.")
    if not head.strip():
        raise DataError(f"{path}: empty file (no header, no rows); expect_table_row_count_to_be_between(min_value=1) failed.")
    wanted = set(spec.columns.values())
    raw_header = _header(head, delimiter)
    header_cols = [h.strip() for h in raw_header]
    headerless = spec.names is not None and not (wanted & set(header_cols))
    bad: list[str] = []

    def on_invalid(row) -> str:  # pyarrow.csv.InvalidRow
        where = f"line {row.number}: " if row.number is not None else ""
        bad.append(f"malformed line ({row.actual_columns} fields, expected "
                   f"{row.expected_columns}): {where}{row.text[:80]!r}")
        return "skip"

    ropts = pacsv.ReadOptions(column_names=list(spec.names) if headerless else None,
                              block_size=BLOCK_SIZE)
    popts = pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid,
                               newlines_in_values=_may_hold_line_breaks(path))
    # pyarrow names columns by the header text as written; ours are trimmed
    names = list(spec.names) if headerless else raw_header
    include = [n for n in names if n.strip() in wanted]

    def read(kind: pa.DataType) -> pa.Table:
        copts = pacsv.ConvertOptions(column_types={n: kind for n in include},
                                     include_columns=include or None, strings_can_be_null=True,
                                     quoted_strings_can_be_null=True,
                                     null_values=list(NULL_STRINGS))
        return pacsv.read_csv(path, read_options=ropts, parse_options=popts, convert_options=copts)

    hook = sys.unraisablehook  # pyarrow reports a non-UTF-8 malformed line via this hook
    sys.unraisablehook = lambda u: bad.append(f"malformed line with invalid UTF-8: {u.exc_value}")
    try:
        try:
            table = read(pa.string())
        except pa.ArrowInvalid as e:
            if "UTF8" not in str(e):
                raise
            bad.clear()
            table = read(pa.binary())  # decoded value by value in _to_str
    except (pa.ArrowInvalid, UnicodeDecodeError, OSError) as e:
        raise DataError(f"{path}: cannot be parsed as {'TSV' if delimiter == chr(9) else 'CSV'} "
                        f"({str(e).splitlines()[0][:160]}).") from None
    finally:
        sys.unraisablehook = hook
    table = table.rename_columns([n.strip() for n in table.column_names])
    if bad:  # one all-null row per malformed line, in the same Arrow types (one code path)
        pad = pa.table({f.name: pa.nulls(len(bad), f.type) for f in table.schema})
        table = pa.concat_tables([table, pad])
    return table, bad


def _to_str(col: pa.ChunkedArray) -> tuple[pa.ChunkedArray, np.ndarray]:
    """(trimmed strings with blank → null, mask of rows whose bytes were not valid UTF-8).
    Stays in Arrow: at 10M rows a round trip through Python strings costs seconds."""
    n = len(col)
    bad = np.zeros(n, dtype=bool)
    if pa.types.is_binary(col.type):  # only after a UTF-8 failure: decode value by value
        out: list[str | None] = []
        for i, b in enumerate(col.to_pylist()):
            try:
                out.append(None if b is None else b.decode("utf-8"))
            except UnicodeDecodeError:
                bad[i] = True
                out.append(b.decode("utf-8", errors="replace"))
        col = pa.chunked_array([pa.array(out, pa.string())])
    elif not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        col = pc.cast(col, pa.string())
    col = pc.utf8_trim_whitespace(col)
    return pc.if_else(pc.equal(col, ""), pa.scalar(None, col.type), col), bad


def _categorical(col: pa.ChunkedArray, rename: dict[str, str] | None = None) -> pd.Series:
    """Arrow strings → pandas categorical (ids and event types repeat a lot: int codes make
    null checks, set checks and duplicate detection cheap)."""
    enc = pc.dictionary_encode(col).combine_chunks()
    cats = enc.dictionary.to_pandas()
    codes = enc.indices.fill_null(-1).to_numpy(zero_copy_only=False)
    if rename:
        cats = cats.map(lambda x: rename.get(x, x))
        uniq, inv = np.unique(cats.to_numpy(dtype=object).astype(str), return_inverse=True)
        codes = np.where(codes >= 0, inv[np.maximum(codes, 0)], -1)
        cats = pd.Index(uniq)
    return pd.Series(pd.Categorical.from_codes(codes, categories=pd.Index(cats, dtype=object)))


def _timestamps(raw: pa.ChunkedArray, unit: str) -> tuple[pd.Series, pa.ChunkedArray | None]:
    """(UTC timestamps with NaT where unparseable, the raw text or None when already typed).
    Fast path: one Arrow cast of the whole column; a batch with bad values takes the pandas
    route with ``errors='coerce'`` so only the bad rows are lost (to quarantine)."""
    if pa.types.is_timestamp(raw.type):
        ts = pd.Series(raw.to_pandas())
        ts = ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts.dt.tz_convert("UTC")
        return ts.dt.as_unit("us"), None
    if pa.types.is_integer(raw.type) or pa.types.is_floating(raw.type):
        num = pd.Series(raw.to_numpy(), dtype="float64")
        return pd.to_datetime(num, unit=unit if unit != "iso" else "s", utc=True,
                              errors="coerce").dt.as_unit("us"), None
    text, _ = _to_str(raw)
    try:
        if unit == "iso":
            try:
                arr = pc.cast(text, pa.timestamp("us", tz="UTC"))
            except pa.ArrowInvalid:  # no zone designator anywhere: naive times are UTC
                arr = pc.cast(text, pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC"))
        else:
            secs = pc.cast(text, pa.float64())
            mult = 1_000_000 if unit == "s" else 1_000
            arr = pc.cast(pc.round(pc.multiply(secs, mult)), pa.int64()).cast(
                pa.timestamp("us", tz="UTC"))
        return pd.Series(arr.to_pandas()).dt.tz_convert("UTC").dt.as_unit("us"), text
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    st = pd.Series(text.to_pandas())
    if unit in ("s", "ms"):
        ts = pd.to_datetime(pd.to_numeric(st, errors="coerce"), unit=unit, utc=True, errors="coerce")
    else:
        ts = pd.to_datetime(st, format="ISO8601", utc=True, errors="coerce")
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
    timeless = spec.time_unit == "none"
    need = [c for c in REQUIRED if not (c == C.event and spec.constant_event)
            and not (c == C.ts and timeless)]
    missing = [spec.columns.get(c, "?") + ("" if spec.columns.get(c) == c else f" (for {c})")
               for c in need if spec.columns.get(c) not in table.column_names]
    if missing:
        found = ", ".join(table.column_names[:10]) or "none"
        raise DataError(f"{path}: expect_column_to_exist failed: required column(s) "
                        f"{', '.join(missing)} missing; found: {found}. Fix the file or "
                        "ingest.loader.columns.")
    n = table.num_rows
    err = np.full(n, None, dtype=object)
    if malformed:  # _read_csv put them last, as all-null rows
        err[n - len(malformed):] = malformed
    utf8_bad = np.zeros(n, dtype=bool)

    def text(c: str) -> pa.ChunkedArray:
        s, bad = _to_str(table.column(spec.columns[c]))
        utf8_bad[:] |= bad
        return s

    def explain(mask: np.ndarray, raw: pa.ChunkedArray, what: str) -> None:
        mask &= pd.isna(err)
        if mask.any():
            vals = pd.Series(raw.filter(pa.array(mask)).to_pandas()).astype(str).str.slice(0, 40)
            err[mask] = (f"{what}: " + vals).to_numpy()

    user, item = _categorical(text(C.user)), _categorical(text(C.item))
    if spec.constant_event:
        event = pd.Series(pd.Categorical.from_codes(np.zeros(n, dtype=np.int8),
                                                    categories=[spec.constant_event]))
    else:
        event = _categorical(text(C.event), spec.events)
    if timeless:
        ts, ts_text = pd.Series(np.full(n, TIMELESS.as_unit("us"))).dt.as_unit("us"), None
    else:
        ts, ts_text = _timestamps(table.column(spec.columns[C.ts]), spec.time_unit)
    if ts_text is not None:
        explain(ts.isna().to_numpy() & ts_text.is_valid().to_numpy(zero_copy_only=False),
                ts_text, f"event_timestamp is not a timestamp ({spec.time_unit})")
    if spec.columns.get(C.value) in table.column_names:
        vcol = table.column(spec.columns[C.value])
        if pa.types.is_integer(vcol.type) or pa.types.is_floating(vcol.type):
            value = pd.Series(vcol.to_numpy(), dtype="float64")
        else:
            vtext = text(C.value)
            try:
                value = pd.Series(pc.cast(vtext, pa.float64()).to_numpy(zero_copy_only=False))
            except pa.ArrowInvalid:
                value = pd.to_numeric(pd.Series(vtext.to_pandas()), errors="coerce")
            value = value.astype("float64")
            explain(value.isna().to_numpy() & vtext.is_valid().to_numpy(zero_copy_only=False),
                    vtext, "value is not a number")
    else:
        value = pd.Series(np.full(n, np.nan))
    err[utf8_bad & pd.isna(err)] = "invalid UTF-8 bytes"
    out = pd.DataFrame({C.user: user, C.item: item, C.event: event, C.ts: ts, C.value: value,
                        C.batch: pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), [batch]),
                        C.parse_error: err})
    if spec.columns.get(C.category) in table.column_names:
        out[C.category] = _categorical(text(C.category))
    return canonical(out)


def as_category(s: pd.Series) -> pd.Series:
    """Categorical with plain ``object`` categories, whatever came in: frames of different
    origins (a loader, the synthetic generator, pushed events, parquet read back) must
    concatenate without pandas' "dtype of categories must be the same"."""
    if not isinstance(s.dtype, pd.CategoricalDtype):
        s = s.astype("string[pyarrow]").astype("category")
    if s.cat.categories.dtype != object:
        s = s.cat.rename_categories(pd.Index(s.cat.categories.astype(object), dtype=object))
    return s


def canonical(df: pd.DataFrame) -> pd.DataFrame:
    """Cast a frame with the canonical columns (+ optional bookkeeping) to canonical dtypes:
    ids, event type and batch categorical (string categories), UTC µs timestamps, float value.
    ``validate`` writes the validated table with plain string ids again."""
    out = pd.DataFrame(
        {
            C.user: as_category(df[C.user]),
            C.item: as_category(df[C.item]),
            C.event: as_category(df[C.event]),
            C.ts: pd.to_datetime(df[C.ts], utc=True).dt.as_unit("us"),
            C.value: pd.to_numeric(df[C.value], errors="coerce").astype("float64"),
        }
    )
    for extra in (C.batch, C.category):
        if extra in df.columns:
            out[extra] = as_category(df[extra])
    if C.parse_error in df.columns:
        out[C.parse_error] = df[C.parse_error].astype(object)
    return out


def items_of(events: pd.DataFrame) -> pd.DataFrame:
    """Item metadata: each item's last known category (a batch without a category column,
    e.g. pushed events, never erases one), else ``unknown``."""
    ids = pd.Index(pd.Series(events[C.item].dropna().unique()).astype(str), dtype=object)
    cats = pd.Series("unknown", index=ids, dtype=object)
    if C.category in events.columns:
        known = events[[C.item, C.category]].dropna()
        known = known.drop_duplicates(C.item, keep="last")
        cats.loc[known[C.item].astype(str).to_numpy()] = known[C.category].astype(str).to_numpy()
    return pd.DataFrame({C.item: ids.to_numpy(), C.category: cats.to_numpy()})


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
