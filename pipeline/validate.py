"""Stage ``validate``: Great Expectations checks every batch; bad rows go to quarantine.

Row-level failures (null ids, unknown event type, timestamp out of range, value out of its
type's range, exact duplicates) move the row to ``data/quarantine/<batch>.parquet`` with a
``reason``; accepted + quarantined = input, always. Batch-level failures (a required column
missing, an empty batch, too many bad rows) raise DataError and leave every artifact as it was.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.columns import Columns as C
from pipeline.config import Params, Paths
from pipeline.errors import DataError
from pipeline.io import atomic_dir, write_json

log = logging.getLogger("recflow.validate")

#: value range per event type; types not listed carry no value constraint
VALUE_RANGES: dict[str, tuple[float | None, float | None]] = {
    "play": (0.0, 1.0),
    "rating": (0.0, 10.0),
    "repeat": (0.0, None),
}


@dataclass
class Outcome:
    accepted: pd.DataFrame
    quarantined: pd.DataFrame
    checks: list[dict] = field(default_factory=list)
    batch_errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.batch_errors


def _suite(params: Params, now: datetime) -> list:
    import great_expectations.expectations as gxe

    floor = datetime.combine(params.validate_.timestamp_floor, datetime.min.time(), UTC)
    ex: list = [gxe.ExpectTableRowCountToBeBetween(min_value=1)]
    ex += [gxe.ExpectColumnToExist(column=c) for c in C.EVENT_TABLE]
    ex += [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in (C.user, C.item, C.event, C.ts)]
    ex.append(gxe.ExpectColumnValuesToBeInSet(column=C.event, value_set=list(params.event_types)))
    ex.append(gxe.ExpectColumnValuesToBeBetween(column=C.ts, min_value=floor, max_value=now))
    for t, (lo, hi) in VALUE_RANGES.items():
        if t in params.event_types:
            ex.append(
                gxe.ExpectColumnValuesToBeBetween(
                    column=C.value, min_value=lo, max_value=hi,
                    row_condition=f'{C.event}=="{t}"', condition_parser="pandas",
                )
            )
    ex.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=list(C.EVENT_TABLE[:4]) + [C.value]))
    return ex


def _gx_validate(df: pd.DataFrame, expectations: list):
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = {"globally": False}  # type: ignore[assignment]
    asset = ctx.data_sources.add_pandas("recflow").add_dataframe_asset("events")
    batch = asset.add_batch_definition_whole_dataframe("batch").get_batch(
        batch_parameters={"dataframe": df}
    )
    suite = ctx.suites.add(gx.ExpectationSuite(name="events", expectations=expectations))
    return ctx, batch.validate(suite, result_format={"result_format": "COMPLETE"})


def _describe(cfg) -> str:
    kw = {k: v for k, v in cfg.kwargs.items() if k not in ("batch_id", "result_format")}
    args = ", ".join(f"{k}={v}" for k, v in kw.items() if k != "value_set")
    return f"{cfg.type}({args})"


def check(df: pd.DataFrame, params: Params, now: datetime | None = None) -> Outcome:
    """Run the suite on one batch; split rows into accepted and quarantined."""
    now = now or datetime.now(UTC)
    df = df.reset_index(drop=True)
    for col in (C.user, C.item, C.event):  # blank ids are as missing as nulls
        if col in df.columns and df[col].dtype == object:
            s = df[col].astype("string").str.strip()
            df[col] = s.mask(s == "").astype(object).where(s.notna() & (s != ""), None)
    missing = [c for c in C.EVENT_TABLE if c not in df.columns]
    if missing:
        return Outcome(df.iloc[0:0], df.iloc[0:0], [], [f"required column(s) missing: {missing}"])
    if len(df) == 0:
        return Outcome(df, df.assign(**{C.reason: pd.Series(dtype=object)}), [], ["the batch is empty"])

    _, result = _gx_validate(df, _suite(params, now))
    reasons = pd.Series([None] * len(df), dtype=object)
    checks, batch_errors = [], []
    for r in result.results:
        cfg = r.expectation_config
        res = r.result or {}
        idx = res.get("unexpected_index_list")
        entry = {
            "expectation": cfg.type,
            "kwargs": {k: str(v) for k, v in cfg.kwargs.items() if k != "batch_id"},
            "success": bool(r.success),
            "unexpected_count": int(res.get("unexpected_count") or 0),
            "examples": [str(v) for v in (res.get("unexpected_list") or [])[:5]],
        }
        checks.append(entry)
        if r.success:
            continue
        if cfg.type == "expect_compound_columns_to_be_unique":
            continue  # every copy is flagged; the first copy is kept below
        if idx is None:
            batch_errors.append(f"{_describe(cfg)} failed")
            continue
        rows = np.asarray([i if not isinstance(i, dict) else i.get("index") for i in idx], dtype=np.int64)
        fresh = rows[reasons.iloc[rows].isna().to_numpy()]
        reasons.iloc[fresh] = _describe(cfg)
    dup = df.duplicated(subset=list(C.EVENT_TABLE), keep="first").to_numpy()
    reasons[dup & reasons.isna().to_numpy()] = "exact duplicate of an earlier event"

    bad = reasons.notna().to_numpy()
    quarantined = df[bad].assign(**{C.reason: reasons[bad].to_numpy()})
    accepted = df[~bad]
    frac = bad.mean() if len(df) else 0.0
    if frac > params.validate_.max_quarantine_fraction:
        top = quarantined[C.reason].value_counts().head(3)
        batch_errors.append(
            f"{bad.sum()} of {len(df)} rows ({frac:.1%}) failed, above "
            f"validate.max_quarantine_fraction={params.validate_.max_quarantine_fraction}; "
            + "; ".join(f"{n}× {why}" for why, n in top.items())
        )
    return Outcome(accepted, quarantined, checks, batch_errors)


def batch_id(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return f"events-{h.hexdigest()[:12]}"


def run(params: Params, paths: Paths) -> dict:
    src = paths.events / "events.parquet"
    try:
        df = pd.read_parquet(src)
        items = pd.read_parquet(paths.events / "items.parquet")
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user problem
        raise DataError(f"{src}: cannot be read ({type(e).__name__}: {str(e).splitlines()[0]}). Re-run 'recflow ingest'.") from None
    out = check(df, params)
    bid = batch_id(src)
    report = {
        "batch": bid,
        "source": str(src.relative_to(paths.root)),
        "rows": len(df),
        "accepted": len(out.accepted),
        "quarantined": len(out.quarantined),
        "success": out.ok,
        "batch_errors": out.batch_errors,
        "quarantine_reasons": out.quarantined[C.reason].value_counts().to_dict() if len(out.quarantined) else {},
        "checks": out.checks,
    }
    if not out.ok:
        write_json(paths.reports / "validation_failed.json", report)
        raise DataError(f"{src}: validation failed ({'; '.join(out.batch_errors)}). "
                        f"Validated data left unchanged; details in reports/validation_failed.json.")
    with atomic_dir(paths.validated) as tmp:
        out.accepted.to_parquet(tmp / "events.parquet", index=False)
        items.to_parquet(tmp / "items.parquet", index=False)
    with atomic_dir(paths.quarantine) as tmp:
        out.quarantined.to_parquet(tmp / f"{bid}.parquet", index=False)
    write_json(paths.reports / "validation.json", report)
    return {k: report[k] for k in ("batch", "rows", "accepted", "quarantined")}
