"""The landing manifest: a file is read once per (content, loader); batches leave only by
``--forget`` or when a refused file is withdrawn; pushed events join exactly once; exact
duplicates are caught across batches."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from pipeline.columns import Columns as C
from pipeline.config import Paths
from pipeline.errors import DataError
from pipeline.stages import ingest, validate
from tests.data.test_bad_input_corpus import GARBAGE, GOOD, csv, good_lines, land, params

MAPPED = "uid,sku,what,ts\n" + "".join(f"u{i % 4},i{i},seen,2026-01-0{1 + i % 8}T00:00:00Z\n"
                                        for i in range(12))
LOADER = {"columns": {"user_id": "uid", "item_id": "sku", "event_type": "what",
                      "event_timestamp": "ts"}}


def others(lines: list[str]) -> list[str]:
    """The same kind of rows for other users (not copies of the originals)."""
    return [ln.replace("u", "w", 1) for ln in lines]


def manifest(p: Paths) -> dict:
    return json.loads(p.manifest.read_text())


def events(p: Paths) -> pd.DataFrame:
    return pd.read_parquet(p.events_file)


def validated(p: Paths) -> pd.DataFrame:
    return pd.read_parquet(p.validated_events)


def test_a_changed_loader_mapping_reingests_the_file(tmp_path: Path):
    """Keyed by content hash only, a file was never re-read: the new mapping was ignored
    while dvc.lock recorded it."""
    p = land(tmp_path, "log.csv", MAPPED.encode())
    first = params(ingest={"source": "landing", "loader": {**LOADER, "events": {"seen": "click"}}})
    ingest.run(first, p)
    assert set(events(p)[C.event]) == {"click"}
    (k1,) = manifest(p)["files"]

    second = params(ingest={"source": "landing", "loader": {**LOADER, "events": {"seen": "view"}}})
    out = ingest.run(second, p)
    ev = events(p)
    assert set(ev[C.event]) == {"view"} and ev[C.batch].nunique() == 1
    assert out["reingested"] == 1 and out["events"] == 12  # replaced, not added
    files = manifest(p)["files"]
    (k2,) = files
    assert k1.split(":")[0] == k2.split(":")[0] and k1 != k2  # same bytes, another loader
    assert files[k2]["columns"]["user_id"] == "uid"
    assert ingest.run(second, p)["new_files"] == 0  # and once is once


def test_a_batch_whose_file_left_keeps_its_rows_under_the_old_loader(tmp_path: Path, caplog):
    p = land(tmp_path, "log.csv", MAPPED.encode())
    ingest.run(params(ingest={"source": "landing", "loader": {**LOADER, "events": {"seen": "click"}}}), p)
    (p.incoming / "log.csv").unlink()  # cleared from the inbox: history, not lost
    land(tmp_path, "more.csv", MAPPED.replace(",seen,", ",seen,").replace("\nu", "\nv").encode())
    with caplog.at_level("WARNING", logger="recflow"):
        out = ingest.run(params(ingest={"source": "landing", "loader": {**LOADER, "events": {"seen": "view"}}}), p)
    assert any("another ingest.loader" in r.getMessage() for r in caplog.records)
    assert out["kept_from_another_loader"] == 1 and out["events"] == 24


def test_forget_drops_a_batch_and_skips_its_file_while_it_stays(tmp_path: Path):
    p = land(tmp_path, "a.csv", csv(GOOD))
    land(tmp_path, "b.csv", csv(others(good_lines(10, seed=3))))
    prm = params()
    ingest.run(prm, p)
    b = next(e["batch"] for e in manifest(p)["files"].values() if e["file"].endswith("b.csv"))
    out = ingest.forget(prm, p, ["data/incoming/b.csv"])
    assert out["forgotten"] == b and out["rows_dropped"] == 10 and out["events"] == len(GOOD)
    assert set(events(p)[C.batch]) == {next(iter({e["batch"] for e in manifest(p)["files"].values()}))}
    assert ingest.run(prm, p)["forgotten_skipped"] == 1 and len(events(p)) == len(GOOD)
    with pytest.raises(DataError, match="already forgotten"):
        ingest.forget(prm, p, ["b.csv"])

    (p.incoming / "b.csv").unlink()  # gone: a later delivery of the same bytes is new again
    ingest.run(prm, p)
    assert manifest(p)["forgotten"] == {} and manifest(p)["history"][-1]["batch"] == b
    land(tmp_path, "b.csv", csv(others(good_lines(10, seed=3))))
    assert ingest.run(prm, p)["new_files"] == 1 and len(events(p)) == len(GOOD) + 10


def test_forget_by_batch_name_and_what_it_refuses(tmp_path: Path):
    p = land(tmp_path, "a.csv", csv(GOOD))
    prm = params()
    ingest.run(prm, p)
    (e,) = manifest(p)["files"].values()
    with pytest.raises(DataError, match=r"no such batch or file.*known: a-"):
        ingest.forget(prm, p, ["nope.csv"])
    ingest.forget(prm, p, [e["batch"]])
    assert len(events(p)) == 0 and manifest(p)["files"] == {}


def test_forget_refuses_the_configured_source(tmp_path: Path):
    p = Paths(tmp_path)
    prm = params(ingest={"source": "synthetic"},
                 synthetic={"n_events": 500, "n_users": 20, "n_items": 40, "n_categories": 3})
    ingest.run(prm, p)
    with pytest.raises(DataError, match="configured source"):
        ingest.forget(prm, p, ["synthetic"])


def _refuse(p: Paths, prm) -> str:
    ingest.run(prm, p)
    with pytest.raises(DataError) as e:
        validate.run(prm, p)
    return str(e.value)


@pytest.mark.parametrize("how", ["removed", "replaced_by_a_fixed_file"])
def test_a_refused_batch_is_withdrawn_when_its_file_leaves(tmp_path: Path, how: str):
    """A refused batch used to stay in data/events and fail every later validation, naming
    a file that no longer existed; the only way out was rm -rf data/events."""
    p = land(tmp_path, "a.csv", csv(GOOD))
    prm = params()
    ingest.run(prm, p)
    validate.run(prm, p)
    land(tmp_path, "b.csv", csv(GOOD[:5] + GARBAGE))
    assert "data/incoming/b.csv" in _refuse(p, prm).splitlines()[0]
    (p.incoming / "b.csv").unlink()
    if how == "replaced_by_a_fixed_file":
        land(tmp_path, "b.csv", csv(others(GOOD[:5])))
    out = ingest.run(prm, p)
    validate.run(prm, p)  # green again, and the accepted history is all there
    assert len(validated(p)) == len(GOOD) + (5 if how != "removed" else 0)
    assert out["withdrawn"] == 1
    assert manifest(p)["history"][-1]["why"].startswith("withdrawn")


def test_an_accepted_batch_stays_when_its_file_is_cleared_away(tmp_path: Path):
    p = land(tmp_path, "a.csv", csv(GOOD))
    prm = params()
    ingest.run(prm, p)
    validate.run(prm, p)
    (p.incoming / "a.csv").unlink()
    land(tmp_path, "b.csv", csv(others(GOOD[:5])))
    ingest.run(prm, p)
    validate.run(prm, p)
    assert len(validated(p)) == len(GOOD) + 5


@pytest.mark.parametrize("copy", ["gzipped", "re-exported"])
def test_a_redelivered_file_is_counted_once(tmp_path: Path, copy: str):
    """Duplicates were only caught within a batch: the same events under other bytes (gzip,
    CRLF) were validated twice."""
    p = land(tmp_path, "a.csv", csv(GOOD))
    data = gzip.compress(csv(GOOD)) if copy == "gzipped" else csv(GOOD).replace(b"\n", b"\r\n")
    land(tmp_path, "a_again.csv.gz" if copy == "gzipped" else "a_again.csv", data)
    prm = params()
    ingest.run(prm, p)
    validate.run(prm, p)  # all-duplicate batch is harmless: not refused
    v = validated(p)
    assert len(v) == len(GOOD) and not v.duplicated().any()
    rep = json.loads(p.validation_report.read_text())
    first, again = rep["batches"]
    assert again["quarantined"] == again["rows"] == len(GOOD) and again["success"]
    q = pd.read_parquet(p.quarantine / f"{again['batch']}.parquet")
    assert (q[C.reason] == f"exact duplicate of an event in batch {first['batch']}").all()
    assert rep["accepted"] + rep["quarantined"] == rep["rows"] == 2 * len(GOOD)


def _push(p: Paths, rows: list[tuple], name: str) -> None:
    """What push_events keeps in data/pushed/ (canonical parquet of accepted events)."""
    df = pd.DataFrame(rows, columns=list(C.EVENT_TABLE))
    df[C.ts] = pd.to_datetime(df[C.ts], utc=True).dt.as_unit("us")
    df[C.value] = df[C.value].astype("float64")
    p.pushed.mkdir(parents=True, exist_ok=True)
    df.to_parquet(p.pushed / name, index=False)


@pytest.mark.parametrize("source", ["landing", "synthetic"])
def test_pushed_events_join_the_validated_events_exactly_once(tmp_path: Path, source: str):
    """Pushed events stayed in data/pushed/ and never reached the validated events."""
    p = land(tmp_path, "a.csv", csv(GOOD))
    prm = params(ingest={"source": source},
                 synthetic={"n_events": 500, "n_users": 20, "n_items": 40, "n_categories": 3})
    ingest.run(prm, p)
    validate.run(prm, p)
    before = len(validated(p))
    fresh = [("pu1", "i1", "click", "2026-11-30T10:00:00Z", None),
             ("pu1", "i2", "purchase", "2026-11-30T10:01:00Z", None)]
    _push(p, fresh, "pushed-aaa.parquet")
    _push(p, [fresh[1], ("pu2", "i3", "view", "2026-11-30T10:02:00Z", None)], "pushed-bbb.parquet")
    out = ingest.run(prm, p)
    validate.run(prm, p)
    v = validated(p)
    assert len(v) == before + 3
    assert out["new_pushed"] == 2
    assert (v[C.user].isin(["pu1", "pu2"])).sum() == 3 and not v.duplicated().any()
    items = pd.read_parquet(p.validated_items)
    assert "i1" in set(items[C.item])  # a pushed event never erases a known category
    ingest.run(prm, p)  # nothing new: still once
    validate.run(prm, p)
    assert len(validated(p)) == before + 3
    if source == "landing":
        shutil.copy(p.incoming / "a.csv", p.incoming / "a2.csv")
        assert ingest.run(prm, p)["already_ingested"] == 2
