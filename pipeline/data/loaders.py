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
    need = [c for c in REQUIRED if not (c == C.event and spec.constant_event)]
    missing = [spec.columns.get(c, "?") + ("" if spec.columns.get(c) == c else f" (for {c})")
               for c in need if spec.columns.get(c) not in table.column_names]
    if missing:
        found = ", ".join(table.column_names[:10]) or "none"
        raise DataError(f"{path}: expect_column_to_exist failed: required column(s) "
                        f"{', '.join(missing)} missing; found: {found}. Fix the file or "
                        "ingest.loader.columns.")
    n = table.num_rows
    err = np.full(n, None, dtype=object)
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
    err[utf8_bad] = "invalid UTF-8 bytes"
    out = pd.DataFrame({C.user: user, C.item: item, C.event: event, C.ts: ts, C.value: value,
                        C.batch: pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), [batch]),
                        C.parse_error: err})
    if spec.columns.get(C.category) in table.column_names:
        out[C.category] = _categorical(text(C.category))
    if malformed:
        junk = pd.DataFrame({C.batch: [batch] * len(malformed), C.parse_error: malformed})
        out = pd.concat([out, junk], ignore_index=True)
    return canonical(out)


def _cat(s: pd.Series) -> pd.Series:
    if isinstance(s.dtype, pd.CategoricalDtype):
        return s
    return s.astype("string[pyarrow]").astype("category")


def canonical(df: pd.DataFrame) -> pd.DataFrame:
    """Cast a frame with the canonical columns (+ optional bookkeeping) to canonical dtypes:
    ids, event type and batch categorical (string categories), UTC µs timestamps, float value.
    ``validate`` writes the validated table with plain string ids again."""
    out = pd.DataFrame(
        {
            C.user: _cat(df[C.user]),
            C.item: _cat(df[C.item]),
            C.event: _cat(df[C.event]),
            C.ts: pd.to_datetime(df[C.ts], utc=True).dt.as_unit("us"),
            C.value: pd.to_numeric(df[C.value], errors="coerce").astype("float64"),
        }
    )
    for extra in (C.batch, C.category):
        if extra in df.columns:
            out[extra] = _cat(df[extra])
    if C.parse_error in df.columns:
        out[C.parse_error] = df[C.parse_error].astype(object)
    return out


def items_of(events: pd.DataFrame) -> pd.DataFrame:
    """Item metadata: the category column when the source had one, else ``unknown``."""
    if C.category in events.columns:
        cat = events[[C.item, C.category]].dropna(subset=[C.item])
        cat = cat.drop_duplicates(C.item, keep="last")
        return pd.DataFrame({C.item: cat[C.item].astype(str).to_numpy(),
                             C.category: cat[C.category].astype(object).fillna("unknown")
                             .astype(str).to_numpy()})
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
