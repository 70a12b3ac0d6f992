"""Stage ``validate``: the GX suite (:mod:`pipeline.data.suite`) over every batch of
``data/events/``; accepted rows → ``data/validated/``, the rest → ``data/quarantine/``.

A refused batch raises DataError before anything is written: validated data, quarantine and
every later artifact stay as they were. Reports: ``reports/validation.json`` and one GX Data
Docs page per batch under ``reports/validation_docs/``.
"""

from __future__ import annotations

import pandas as pd

from pipeline.columns import Columns as C
from pipeline.config import Params, Paths
from pipeline.data import attributes
from pipeline.data.landing import SOURCE, read_manifest
from pipeline.data.suite import BatchSource, data_docs, validate_batches, write_plain
from pipeline.errors import DataError
from pipeline.io import atomic_dir, write_json


def _sources(paths: Paths) -> dict[str, BatchSource]:
    """batch → where it came from (ingest's manifest): file, loader mapping, whether the file
    is still there. Batches that landed with no rows (a header-only file) are listed too:
    they must fail."""
    out = {}
    for e in read_manifest(paths).files.values():
        gone = e.get("kind") != SOURCE and not (paths.root / e["file"]).exists()
        out[e["batch"]] = BatchSource(e["file"], e.get("columns") or {}, not gone)
    return out


def run(params: Params, paths: Paths) -> dict:
    src = paths.events_file
    try:
        df = pd.read_parquet(src)
        items = pd.read_parquet(paths.events_items)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user problem
        raise DataError(f"{src}: cannot be read ({type(e).__name__}: {str(e).splitlines()[0]}). "
                        "Re-run 'recflow ingest'.") from None
    outs, report, refusal = validate_batches(
        df, _sources(paths), str(src.relative_to(paths.root)), params,
        details=str(paths.validation_failed.relative_to(paths.root)))
    if refusal:
        write_json(paths.validation_failed, report)
        raise DataError("\n".join(refusal))
    canon = list(C.EVENT_TABLE)
    attrs = {k: attributes.validate(t) for k, t in attributes.read_raw(paths.attributes).items()}
    report["attributes"] = {k: rep for k, (_, _, rep) in attrs.items()}
    with atomic_dir(paths.validated) as tmp:
        write_plain([o.accepted[canon] for o in outs.values()], tmp / paths.validated_events.name)
        items.to_parquet(tmp / paths.validated_items.name, index=False)
        for k, (ok, _, _) in attrs.items():
            ok.to_parquet(tmp / paths.validated_attributes(k).name, index=False)
    with atomic_dir(paths.quarantine) as tmp:
        for b, o in outs.items():
            keep = [c for c in (*canon, C.parse_error, C.reason) if c in o.quarantined.columns]
            write_plain([o.quarantined[keep]], tmp / f"{b}.parquet")
        for k, (_, bad, _) in attrs.items():
            if len(bad):
                bad.to_parquet(tmp / f"attributes-{k}.parquet", index=False)
    with atomic_dir(paths.validation_docs) as tmp:
        data_docs({b: o.result for b, o in outs.items() if o.result is not None}, tmp)
    write_json(paths.validation_report, report)
    paths.validation_failed.unlink(missing_ok=True)
    return {"batches": len(outs), "rows": report["rows"], "accepted": report["accepted"],
            "quarantined": report["quarantined"],
            **{f"{k}_attributes_quarantined": rep["quarantined"]
               for k, rep in report["attributes"].items()}}
