"""The Great Expectations suite: every batch checked, bad rows quarantined, nothing lost.

A batch is one landed file (or the one synthetic / MovieLens source), told apart by the
``batch`` column ingest writes. Row-level failures (unreadable row, null ids, unknown event
type, timestamp in the future or before the floor, value out of its type's range, exact
duplicate) move the row to ``data/quarantine/<batch>.parquet`` with a ``reason``; accepted +
quarantined = input, always. Batch-level failures (a required column missing, an empty
batch, more than ``max_quarantine_fraction`` bad rows) raise DataError naming the file, the
expectation, counts and examples, before anything is written: validated data, quarantine and
every later artifact stay as they were. Reports: ``reports/validation.json`` and one GX Data
Docs page per batch under ``reports/validation_docs/``.
"""

from __future__ import annotations

import html
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.columns import Columns as C
from pipeline.config import Params
from pipeline.errors import DataError

log = logging.getLogger("recflow.validate")

#: checks whose failures are row-level; their reasons are tried in this order (first wins)
_ROW_ORDER = (
    "expect_column_values_to_be_null",  # parse_error: the row could not even be read
    "expect_column_values_to_not_be_null",
    "expect_column_values_to_be_in_set",
    "expect_column_values_to_be_between",
    "expect_column_values_to_be_unique",
)
_ROW_HASH = "_row_hash"


@dataclass
class Outcome:
    accepted: pd.DataFrame
    quarantined: pd.DataFrame
    checks: list[dict] = field(default_factory=list)
    batch_errors: list[str] = field(default_factory=list)
    result: object | None = None  # the GX ExpectationSuiteValidationResult, for Data Docs

    @property
    def ok(self) -> bool:
        return not self.batch_errors


def _suite(params: Params, now: datetime, has_parse_error: bool) -> list:
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    floor = datetime.combine(params.validate_.timestamp_floor, datetime.min.time(), UTC)
    ex: list = [gxe.ExpectTableRowCountToBeBetween(min_value=1)]
    ex += [gxe.ExpectColumnToExist(column=c) for c in C.EVENT_TABLE]
    if has_parse_error:
        ex.append(gxe.ExpectColumnValuesToBeNull(column=C.parse_error))
    ex += [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in (C.user, C.item, C.event, C.ts)]
    ex.append(gxe.ExpectColumnValuesToBeInSet(column=C.event, value_set=list(params.event_types)))
    ex.append(gxe.ExpectColumnValuesToBeBetween(column=C.ts, min_value=floor, max_value=now))
    for t, (lo, hi) in params.validate_.value_ranges.items():
        if t in params.event_types:
            ex.append(gxe.ExpectColumnValuesToBeBetween(
                column=C.value, min_value=lo, max_value=hi, row_condition=Column(C.event) == t))
    # Exact duplicates: GX's compound-unique over five columns grows faster than linear
    # (8 of 21 s at 4M rows); one uint64 hash per row checked for uniqueness finds every
    # candidate in linear time, and check() confirms real duplicates among those few rows.
    ex.append(gxe.ExpectColumnValuesToBeUnique(column=_ROW_HASH))
    return ex


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
    kw = {k: v for k, v in cfg.kwargs.items() if k not in ("batch_id", "result_format")}
    rc = kw.get("row_condition")
    if isinstance(rc, dict) and {"column", "operator", "parameter"} <= rc.keys():
        col = rc["column"].get("name") if isinstance(rc["column"], dict) else rc["column"]
        kw["row_condition"] = f"{col}{rc['operator']}{rc['parameter']!r}"
    elif rc is not None:
        kw["row_condition"] = str(rc)
    args = ", ".join(f"{k}={v}" for k, v in kw.items() if k != "value_set")
    return f"{cfg.type}({args})"


def _rows(idx: list) -> np.ndarray:
    return np.asarray([i if not isinstance(i, dict) else i.get("index") for i in idx],
                      dtype=np.int64)


def _blank_to_null(df: pd.DataFrame) -> pd.DataFrame:
    """Blank ids are as missing as nulls (loaders already do this; frames built by hand may not)."""
    for col in (C.user, C.item):
        if col in df.columns and df[col].dtype == object:
            s = df[col].astype("string[pyarrow]").str.strip()
            df[col] = s.mask(s == "")
    return df


def check(df: pd.DataFrame, params: Params, now: datetime | None = None) -> Outcome:
    """Run the suite on one batch; split rows into accepted and quarantined (+ ``reason``)."""
    now = now or datetime.now(UTC)
    df = _blank_to_null(df.reset_index(drop=True))
    missing = [c for c in C.EVENT_TABLE if c not in df.columns]
    empty_q = df.iloc[0:0].assign(**{C.reason: pd.Series(dtype=object)})
    if missing:
        return Outcome(df.iloc[0:0], empty_q, [],
                       [f"expect_column_to_exist failed: required column(s) {missing} missing"])
    if len(df) == 0:
        return Outcome(df, empty_q, [], ["expect_table_row_count_to_be_between(min_value=1) "
                                         "failed: the batch is empty"])
    has_pe = C.parse_error in df.columns
    df[_ROW_HASH] = pd.util.hash_pandas_object(df[list(C.EVENT_TABLE)], index=False).to_numpy()
    _, result = _gx_validate(df, _suite(params, now, has_pe))
    reasons = np.full(len(df), None, dtype=object)
    checks, batch_errors = [], []
    rank = {t: i for i, t in enumerate(_ROW_ORDER)}
    for r in sorted(result.results, key=lambda r: rank.get(r.expectation_config.type, -1)):
        cfg = r.expectation_config
        res = r.result or {}
        idx = res.get("unexpected_index_list")
        entry = {
            "expectation": _describe(cfg),
            "success": bool(r.success),
            "unexpected_count": int(res.get("unexpected_count") or 0),
            "examples": [str(v) for v in (res.get("unexpected_list") or [])[:5]],
        }
        checks.append(entry)
        if r.success:
            continue
        if idx is None:  # table-level expectation, or GX raised while computing a metric
            info = r.exception_info or {}
            msg = next((v.get("exception_message") for v in info.values() if isinstance(v, dict)),
                       info.get("exception_message") if isinstance(info, dict) else None)
            batch_errors.append(f"{_describe(cfg)} failed" + (f" ({msg})" if msg else ""))
            continue
        rows = _rows(idx)
        if cfg.type == "expect_column_values_to_be_unique":
            # GX flags every copy; the first one is a good event, later ones are duplicates
            rows = np.sort(rows)
            dup = df.iloc[rows].duplicated(subset=list(C.EVENT_TABLE), keep="first").to_numpy()
            rows = rows[dup]
            why = "exact duplicate of an earlier event"
        else:
            why = _describe(cfg)
        fresh = rows[pd.isna(reasons[rows])]
        if cfg.type == "expect_column_values_to_be_null":
            reasons[fresh] = df[C.parse_error].to_numpy()[fresh]
        else:
            reasons[fresh] = why
    bad = ~pd.isna(reasons)
    df = df.drop(columns=[_ROW_HASH])
    quarantined = df[bad].assign(**{C.reason: reasons[bad]})
    accepted = df[~bad]
    frac = bad.mean()
    if frac > params.validate_.max_quarantine_fraction:
        failing = sorted((c for c in checks if not c["success"] and c["unexpected_count"]),
                         key=lambda c: -c["unexpected_count"])[:3]
        batch_errors.append(
            f"{int(bad.sum())} of {len(df)} rows ({frac:.1%}) failed, above "
            f"validate.max_quarantine_fraction={params.validate_.max_quarantine_fraction}; "
            + "; ".join(f"{c['expectation'][:120]}: {c['unexpected_count']}×, e.g. "
                        f"{[e[:60] for e in c['examples'][:3]]}" for c in failing)
        )
    return Outcome(accepted, quarantined, checks, batch_errors, result)


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


def validate_batches(df: pd.DataFrame, sources: dict[str, str], default_source: str,
                     params: Params, now: datetime | None = None
                     ) -> tuple[dict[str, Outcome], dict, list[str]]:
    """Check every batch of ``df`` (told apart by the ``batch`` column).

    ``sources`` maps batch → the file it came from (ingest's manifest), for messages people
    can act on; batches listed there without rows (a header-only file) are checked too, and
    fail. Returns (outcome per batch, the report, one line per refused batch).
    """
    now = now or datetime.now(UTC)
    if C.batch not in df.columns:
        df = df.assign(**{C.batch: "events"})
    names = [str(b) for b in df[C.batch].dropna().unique()]
    if len(names) > 1:
        batches = [(str(b), g) for b, g in df.groupby(C.batch, sort=False, observed=True)]
    else:
        batches = [(names[0], df)] if names else ([] if sources else [("events", df)])
    empty = pd.DataFrame({c: df[c].iloc[0:0] for c in df.columns})
    batches += [(b, empty) for b in sources if b not in names]
    outs, per_batch, failed = {}, [], []
    for b, g in batches:
        out = check(g.drop(columns=[C.batch]), params, now)
        outs[b] = out
        entry = {"batch": b, "source": sources.get(b, default_source),
                 "rows": len(g), "accepted": len(out.accepted),
                 "quarantined": len(out.quarantined), "success": out.ok,
                 "batch_errors": out.batch_errors,
                 "quarantine_reasons": (out.quarantined[C.reason].value_counts().head(20).to_dict()
                                        if len(out.quarantined) else {}),
                 "checks": out.checks}
        per_batch.append(entry)
        if not out.ok:
            failed.append(f"{entry['source']} (batch {b}): {'; '.join(out.batch_errors)}")
    report = {
        "rows": len(df),
        "accepted": sum(len(o.accepted) for o in outs.values()),
        "quarantined": sum(len(o.quarantined) for o in outs.values()),
        "success": not failed,
        "batches": per_batch,
    }
    return outs, report, failed
