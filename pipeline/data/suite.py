"""The Great Expectations suite: every batch checked, bad rows quarantined, nothing lost.

A batch is one landed or pushed file (or the one synthetic / MovieLens source), told apart by
the ``batch`` column ingest writes. Row-level failures (unreadable row, null ids, unknown event
type, timestamp in the future or before the floor, value out of its type's range, exact
duplicate of an event in this or any earlier batch) move the row to
``data/quarantine/<batch>.parquet`` with a ``reason``; accepted + quarantined = input, always.
Batch-level failures (a required column missing, an empty batch, more than
``max_quarantine_fraction`` bad rows — exact duplicates not counted: a re-delivered file is
harmless) refuse the batch before anything is written: validated data, quarantine and every
later artifact stay as they were.

A refusal is told in user terms, one line per failed check: the column as the file names it
(``uid (user_id)`` under a loader mapping), the row count and a few example values (null as
``null``), at most ``SHOWN_CHECKS`` checks and "and N more checks" — the same lines in the CLI
error, the Airflow log and ``reports/validation_failed.json``. Reports:
``reports/validation.json`` and one GX Data Docs page per batch under
``reports/validation_docs/``.
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.columns import Columns as C
from pipeline.config import Params

log = logging.getLogger("recflow.validate")

#: row-level checks, in the order their reasons are tried (first wins)
_ROW_ORDER = ("readable", "not_null", "event_type", "time", "value_range", "duplicate")
#: internal column: the batch holding the first copy of an exact duplicate (None otherwise)
_DUP = "_duplicate_of"
#: failed checks named in a refusal, per batch; the rest are counted ("and N more checks")
SHOWN_CHECKS = 5
_EXAMPLES = 3


@dataclass(frozen=True)
class BatchSource:
    """Where a batch came from, for messages people can act on."""

    file: str                                                 # as ingest recorded it
    columns: dict[str, str] = field(default_factory=dict)     # canonical → the file's column
    present: bool = True                                      # False: the file has left


@dataclass
class Outcome:
    accepted: pd.DataFrame
    quarantined: pd.DataFrame
    checks: list[dict] = field(default_factory=list)
    batch_errors: list[str] = field(default_factory=list)
    result: object | None = None  # the GX ExpectationSuiteValidationResult, for Data Docs
    failures: list[dict] = field(default_factory=list)  # failed checks, largest first

    @property
    def ok(self) -> bool:
        return not self.batch_errors

    def lines(self, limit: int = SHOWN_CHECKS) -> list[str]:
        """The batch-level problems, then one line per failed check (``limit`` at most)."""
        shown = [f["text"] for f in self.failures[:limit]]
        more = len(self.failures) - len(shown)
        return [*self.batch_errors, *shown,
                *([f"and {more} more check{'s' if more > 1 else ''}"] if more else [])]


def _suite(params: Params, now: datetime, has_parse_error: bool) -> list:
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    def m(check: str, column: str | None = None, **extra) -> dict:
        return {"meta": {"recflow": {"check": check, "column": column, **extra}}}

    floor = datetime.combine(params.validate_.timestamp_floor, datetime.min.time(), UTC)
    ex: list = [gxe.ExpectTableRowCountToBeBetween(min_value=1, **m("rows"))]
    ex += [gxe.ExpectColumnToExist(column=c, **m("exists", c)) for c in C.EVENT_TABLE]
    if has_parse_error:
        ex.append(gxe.ExpectColumnValuesToBeNull(column=C.parse_error, **m("readable")))
    ex += [gxe.ExpectColumnValuesToNotBeNull(column=c, **m("not_null", c))
           for c in (C.user, C.item, C.event, C.ts)]
    ex.append(gxe.ExpectColumnValuesToBeInSet(column=C.event, value_set=list(params.event_types),
                                              **m("event_type", C.event)))
    ex.append(gxe.ExpectColumnValuesToBeBetween(column=C.ts, min_value=floor, max_value=now,
                                                **m("time", C.ts)))
    for t, (lo, hi) in params.validate_.value_ranges.items():
        if t in params.event_types:
            ex.append(gxe.ExpectColumnValuesToBeBetween(
                column=C.value, min_value=lo, max_value=hi, row_condition=Column(C.event) == t,
                **m("value_range", C.value, type=t)))
    # Exact duplicates, against this batch and every batch before it: found in linear time
    # by duplicate_of() (one uint64 hash per row, real duplicates confirmed among the few
    # colliding rows), checked here as "no row is a later copy".
    ex.append(gxe.ExpectColumnValuesToBeNull(column=_DUP, **m("duplicate")))
    return ex


def duplicate_of(df: pd.DataFrame, batches: pd.Series | None = None) -> pd.Categorical:
    """Per row: null, or the batch holding the first copy of this exact event (``batches``
    gives each row's batch, in validation order; None = all one batch, named ``""``).

    GX's compound-unique over five columns grows faster than linear (8 of 21 s at 4M rows);
    one hash per row finds every candidate in linear time, and only the rows whose hash
    repeats are compared in full. A categorical: 10M rows cost 10 MB, not 80."""
    codes = np.full(len(df), -1, dtype=np.int32)
    names: list[str] = []
    if len(df) > 1:
        cols = list(C.EVENT_TABLE)
        h = pd.util.hash_pandas_object(df[cols], index=False).to_numpy()
        cand = np.flatnonzero(pd.Series(h).duplicated(keep=False).to_numpy())
        hc = h[cand]
        del h
        if len(cand):
            sub = df.iloc[cand]
            dup = sub.duplicated(subset=cols, keep="first").to_numpy()
            where = (batches.iloc[cand].astype(object).to_numpy() if batches is not None
                     else np.full(len(cand), "", dtype=object))
            first = pd.Series(where).groupby(hc, sort=False).transform("first").to_numpy()
            cats = pd.Categorical(first[dup])
            names = [str(c) for c in cats.categories]
            codes[cand[dup]] = cats.codes
    return pd.Categorical.from_codes(codes, categories=pd.Index(names, dtype=object))


def _gx_validate(df: pd.DataFrame, expectations: list):
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.execution_engine import pandas_execution_engine

    # GX fingerprints every in-memory batch under 1 GB by hashing every cell (≈ 2 s per 1M
    # rows, twice per validation). The batch already has an identity (its file's content
    # hash), so skip that work.
    pandas_execution_engine.HASH_THRESHOLD = 0
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = ctx.data_sources.add_pandas("recflow").add_dataframe_asset("events")
    batch = asset.add_batch_definition_whole_dataframe("batch").get_batch(
        batch_parameters={"dataframe": df}
    )
    suite = ctx.suites.add(gx.ExpectationSuite(name="events", expectations=expectations))
    return ctx, batch.validate(suite, result_format={"result_format": "COMPLETE"})


def _describe(cfg) -> str:
    """The expectation as GX names it (quarantine reasons, the report's ``expectation``)."""
    kw = {k: v for k, v in cfg.kwargs.items() if k not in ("batch_id", "result_format")}
    rc = kw.get("row_condition")
    if isinstance(rc, dict) and {"column", "operator", "parameter"} <= rc.keys():
        col = rc["column"].get("name") if isinstance(rc["column"], dict) else rc["column"]
        kw["row_condition"] = f"{col}{rc['operator']}{rc['parameter']!r}"
    elif rc is not None:
        kw["row_condition"] = str(rc)
    if kw.get("column") == _DUP:
        return "exact duplicate check (no event twice, across all batches)"
    args = ", ".join(f"{k}={v}" for k, v in kw.items() if k != "value_set")
    return f"{cfg.type}({args})"


def _rows(idx: list) -> np.ndarray:
    return np.asarray([i if not isinstance(i, dict) else i.get("index") for i in idx],
                      dtype=np.int64)


def show(v: object, width: int = 40) -> str:
    """One example value for people: null for missing (never ``nan``), strings quoted with
    their control characters visible, times in ISO-8601."""
    if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and math.isnan(v)):
        return "null"
    if isinstance(v, (pd.Timestamp, datetime)):
        return pd.Timestamp(v).isoformat()
    if isinstance(v, (float, np.floating)):
        return f"{float(v):g}"
    if isinstance(v, (int, np.integer)):
        return str(v)
    text = str(v)
    return json.dumps(text[:width] + ("…" if len(text) > width else ""), ensure_ascii=False)


def _label(column: str | None, columns: dict[str, str]) -> str:
    src = columns.get(column, column) if column else ""
    return f"{src} ({column})" if column and src != column else (column or "")


def _rows_word(n: int) -> str:
    return f"{n:,} row{'s' if n != 1 else ''}"


def _failure_text(meta: dict, n: int, examples: list, params: Params,
                  columns: dict[str, str], kw: dict) -> str:
    check, col = meta.get("check"), meta.get("column")
    label = _label(col, columns)
    eg = ", ".join(examples[:_EXAMPLES])
    if check == "readable":
        return f"{_rows_word(n)} could not be read, e.g. {'; '.join(examples[:2])}"
    if check == "not_null":
        return f"{label}: {_rows_word(n)} with no value (null)"
    if check == "event_type":
        types = list(params.event_types)
        listed = ", ".join(types[:8]) + (", …" if len(types) > 8 else "")
        return (f"{label}: {_rows_word(n)} with an event type not in signals.weights "
                f"({listed}), e.g. {eg}")
    if check == "time":
        floor = params.validate_.timestamp_floor.isoformat()
        return f"{label}: {_rows_word(n)} outside [{floor}, now], e.g. {eg}"
    if check == "value_range":
        t = meta.get("type")
        return (f"{label}: {_rows_word(n)} of type {t} outside [{kw.get('min_value')}, "
                f"{kw.get('max_value')}] (validate.value_ranges.{t}), e.g. {eg}")
    if check == "duplicate":
        return f"{_rows_word(n)} exactly repeating an earlier event, e.g. {eg}"
    return f"{label or check}: {_rows_word(n)} failed {check}, e.g. {eg}"


def _range_index(df: pd.DataFrame) -> bool:
    """True when positions are labels already (reset_index would copy every column)."""
    return isinstance(df.index, pd.RangeIndex) and df.index.start == 0 and df.index.step == 1


def _blank_to_null(df: pd.DataFrame) -> pd.DataFrame:
    """Blank ids are as missing as nulls (loaders already do this; frames built by hand may not)."""
    for col in (C.user, C.item):
        if col in df.columns and df[col].dtype == object:
            s = df[col].astype("string[pyarrow]").str.strip()
            df[col] = s.mask(s == "")
    return df


def _examples(df: pd.DataFrame, check: str | None, column: str | None, rows: np.ndarray,
              columns: dict[str, str]) -> list[str]:
    """A few failing values for people: the events themselves for duplicates (never the
    internal column), the loader's reason for unreadable rows, else the column's values."""
    rows = np.sort(rows)
    if check == "duplicate":
        return [_event_text(df, i, columns) for i in rows[:1]]
    if check == "readable":
        return [str(v)[:90] for v in df[C.parse_error].to_numpy()[rows[:2]]]
    if column is None or column not in df.columns:
        return []
    vals = pd.unique(df[column].iloc[rows[:200]].astype(object).to_numpy())
    return [show(v) for v in vals[:_EXAMPLES]]


def _event_text(df: pd.DataFrame, i: int, columns: dict[str, str]) -> str:
    row = df.iloc[i]
    return "(" + ", ".join(f"{columns.get(c, c)}={show(row[c], 20)}" for c in C.EVENT_TABLE
                           if c != C.value or not pd.isna(row[c])) + ")"


def check(df: pd.DataFrame, params: Params, now: datetime | None = None, *,
          dup_of: pd.Categorical | None = None, batch: str = "",
          columns: dict[str, str] | None = None) -> Outcome:
    """Run the suite on one batch; split rows into accepted and quarantined (+ ``reason``).

    ``dup_of`` (from :func:`duplicate_of` over every batch) marks exact copies of earlier
    events; without it, duplicates are looked for within ``df``. ``batch`` is this batch's
    name, ``columns`` its loader mapping (canonical → the file's column), for messages."""
    now = now or datetime.now(UTC)
    columns = columns or {}
    # positions are labels below; a shallow copy keeps the caller's frame as it was
    df = df.copy(deep=False) if _range_index(df) else df.reset_index(drop=True)
    df = _blank_to_null(df)
    missing = [c for c in C.EVENT_TABLE if c not in df.columns]
    empty_q = df.iloc[0:0].assign(**{C.reason: pd.Series(dtype=object)})
    if missing:
        named = ", ".join(_label(c, columns) for c in missing)
        return Outcome(df.iloc[0:0], empty_q, [],
                       [f"required column(s) {named} missing (expect_column_to_exist)"])
    if len(df) == 0:
        return Outcome(df, empty_q, [], ["the batch is empty: no rows "
                                         "(expect_table_row_count_to_be_between(min_value=1))"])
    has_pe = C.parse_error in df.columns
    df[_DUP] = duplicate_of(df) if dup_of is None else dup_of
    _, result = _gx_validate(df, _suite(params, now, has_pe))
    reasons = np.full(len(df), None, dtype=object)
    by_dup = np.zeros(len(df), dtype=bool)
    checks, failures, batch_errors = [], [], []
    rank = {t: i for i, t in enumerate(_ROW_ORDER)}

    def meta_of(r) -> dict:
        return (r.expectation_config.meta or {}).get("recflow", {})

    for r in sorted(result.results, key=lambda r: rank.get(meta_of(r).get("check"), -1)):
        cfg, meta = r.expectation_config, meta_of(r)
        res = r.result or {}
        idx = res.get("unexpected_index_list")
        n = int(res.get("unexpected_count") or 0)
        rows = _rows(idx) if idx else np.zeros(0, dtype=np.int64)
        check_id = meta.get("check")
        checks.append({"check": check_id, "column": meta.get("column"),
                       "source_column": columns.get(meta.get("column"), meta.get("column")),
                       "expectation": _describe(cfg), "success": bool(r.success),
                       "unexpected_count": n,
                       "examples": _examples(df, check_id, meta.get("column"), rows, columns)})
        if r.success:
            continue
        if idx is None:  # table-level expectation, or GX raised while computing a metric
            info = r.exception_info or {}
            msg = next((v.get("exception_message") for v in info.values() if isinstance(v, dict)),
                       info.get("exception_message") if isinstance(info, dict) else None)
            batch_errors.append(f"{_describe(cfg)} failed" + (f" ({msg})" if msg else ""))
            continue
        fresh = rows[pd.isna(reasons[rows])]  # rows no earlier check has claimed
        if check_id == "readable":
            reasons[fresh] = df[C.parse_error].to_numpy()[fresh]
        elif check_id == "duplicate":
            first = df[_DUP].array[fresh]  # categorical: few distinct batches
            why = np.asarray([("exact duplicate of an earlier event" if f == batch else
                               f"exact duplicate of an event in batch {f}")
                              for f in first.categories], dtype=object)
            reasons[fresh] = why[first.codes]
            by_dup[fresh] = True
        else:
            reasons[fresh] = _describe(cfg)
        if len(fresh):  # the user's view: each bad row under its first reason, so the lines
            # add up to the rows quarantined
            eg = _examples(df, check_id, meta.get("column"), fresh, columns)
            failures.append({"check": check_id, "column": meta.get("column"),
                             "source_column": columns.get(meta.get("column"), meta.get("column")),
                             "expectation": _describe(cfg), "rows": len(fresh), "examples": eg,
                             "text": _failure_text(meta, len(fresh), eg, params, columns,
                                                   cfg.kwargs)})
    bad = ~pd.isna(reasons)
    df = df.drop(columns=[_DUP])
    quarantined = df[bad].assign(**{C.reason: reasons[bad]})
    accepted = df[~bad]
    counted = bad & ~by_dup
    frac = counted.mean()
    failures.sort(key=lambda f: -f["rows"])
    if frac > params.validate_.max_quarantine_fraction:
        dups = int(by_dup.sum())
        batch_errors.append(
            f"{int(counted.sum()):,} of {len(df):,} rows ({frac:.1%}) failed, above "
            f"validate.max_quarantine_fraction={params.validate_.max_quarantine_fraction}"
            + (f" ({dups:,} exact duplicate{'s' if dups > 1 else ''} not counted)" if dups else ""))
    return Outcome(accepted, quarantined, checks, batch_errors, result, failures)


def data_docs(results: dict[str, object], out: Path) -> None:
    """One GX Data Docs validation page per batch plus an index linking them."""
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    renderer, view = ValidationResultsPageRenderer(), DefaultJinjaPageView()
    links = []
    for batch, res in results.items():
        (out / f"{batch}.html").write_text(view.render(renderer.render(res)))
        ok = "passed" if res.success else "rows quarantined"  # type: ignore[attr-defined]
        links.append(f'<li><a href="{html.escape(batch)}.html">{html.escape(batch)}</a> — {ok}</li>')
    (out / "index.html").write_text(
        "<!doctype html><meta charset=utf-8><title>recflow validation</title>"
        f"<h1>recflow validation — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC</h1>"
        f"<ul>{''.join(links)}</ul>\n")


def write_plain(frames: list[pd.DataFrame], path: Path) -> None:
    """Parquet with plain string columns (categoricals are an in-memory speed-up only, so the
    validated table keeps the canonical schema for every reader)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pa.Table.from_pandas(f, preserve_index=False) for f in frames]
    cast = []
    for t in tables:
        fields = [pa.field(f.name, f.type.value_type) if pa.types.is_dictionary(f.type) else f
                  for f in t.schema]
        cast.append(t.cast(pa.schema(fields)).replace_schema_metadata(None))
    pq.write_table(pa.concat_tables(cast, promote_options="permissive"), path)


def validate_batches(df: pd.DataFrame, sources: dict[str, BatchSource], default_source: str,
                     params: Params, now: datetime | None = None, details: str = ""
                     ) -> tuple[dict[str, Outcome], dict, list[str]]:
    """Check every batch of ``df`` (told apart by the ``batch`` column, in ingestion order).

    ``sources`` maps batch → where it came from (ingest's manifest), for messages people can
    act on; batches listed there without rows (a header-only file) are checked too, and fail.
    Exact duplicates are looked for across all batches: a later copy is quarantined in its
    own batch. Returns (outcome per batch, the report, the refusal's lines — empty if none).
    """
    now = now or datetime.now(UTC)
    if C.batch not in df.columns:
        df = df.assign(**{C.batch: "events"})
    if not _range_index(df):
        df = df.reset_index(drop=True)
    dup_all = duplicate_of(df, df[C.batch])
    names = [str(b) for b in df[C.batch].dropna().unique()]
    if len(names) > 1:
        groups = df.groupby(C.batch, sort=False, observed=True).indices
        batches = [(b, df.iloc[groups[b]], dup_all[groups[b]]) for b in names]
    else:
        batches = ([(names[0], df, dup_all)] if names
                   else ([] if sources else [("events", df, dup_all)]))
    empty = pd.DataFrame({c: df[c].iloc[0:0] for c in df.columns})
    batches += [(b, empty, dup_all[:0]) for b in sources if b not in names]
    outs, per_batch, refused = {}, [], []
    for b, g, dup in batches:
        src = sources.get(b, BatchSource(default_source))
        out = check(g.drop(columns=[C.batch]), params, now, dup_of=dup, batch=b,
                    columns=src.columns)
        outs[b] = out
        where = src.file + ("" if src.present else " (no longer in the landing folder)")
        entry = {"batch": b, "source": src.file, "source_present": src.present,
                 "rows": len(g), "accepted": len(out.accepted),
                 "quarantined": len(out.quarantined), "success": out.ok,
                 "batch_errors": out.batch_errors, "failures": out.failures,
                 "quarantine_reasons": (out.quarantined[C.reason].value_counts().head(20).to_dict()
                                        if len(out.quarantined) else {}),
                 "checks": out.checks}
        if not out.ok:
            entry["message"] = [f"{where} (batch {b}): {out.batch_errors[0]}",
                                *out.batch_errors[1:], *out.lines()[len(out.batch_errors):]]
            refused.append(entry)
        per_batch.append(entry)
    report = {
        "rows": len(df),
        "accepted": sum(len(o.accepted) for o in outs.values()),
        "quarantined": sum(len(o.quarantined) for o in outs.values()),
        "success": not refused,
        "batches": per_batch,
    }
    lines = refusal_lines(refused, details) if refused else []
    if lines:
        report["refusal"] = lines
    return outs, report, lines


def refusal_lines(refused: list[dict], details: str = "") -> list[str]:
    """The refusal for people: a headline naming the file(s), each batch's problems (one line
    per failed check, "and N more checks"), and what to do. The first line alone is a
    complete message."""
    if len(refused) == 1:
        (e,) = refused
        out = [f"validation refused {e['message'][0]}. Validated data left unchanged.",
               *(f"  - {ln}" for ln in e["message"][1:])]
    else:
        files = ", ".join(e["source"] for e in refused)
        out = [f"validation refused {len(refused)} batches ({files}). Validated data left unchanged."]
        for e in refused:
            out += [f"  {e['message'][0]}", *(f"    - {ln}" for ln in e["message"][1:])]
    batches = " ".join(e["batch"] for e in refused)
    out.append(f"  Fix the file and land it again (a refused batch is withdrawn when its file "
               f"leaves the landing folder), or drop it: recflow ingest --forget {batches}."
               + (f" Details: {details}" if details else ""))
    return out
