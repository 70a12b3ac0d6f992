"""The one quoting helper, and a project whose path holds a quote: every SQL that names a
path or a literal goes through ``sql_str`` / ``sql_path`` (``read_parquet('{path}')`` broke
on ``it's`` in four modules)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd

from pipeline.columns import Columns as C
from pipeline.columns import Feast
from pipeline.config import Paths
from pipeline.data.signals import confidence_sql
from pipeline.evaluation.splits import make_split
from pipeline.features import push, snapshots
from pipeline.io import sql_path, sql_str
from pipeline.stages import ingest, validate
from tests.data.test_bad_input_corpus import GOOD, csv, land, params


def test_sql_str_round_trips_any_text():
    con = duckdb.connect()
    for text in ["it's", "a,b", "'; DROP TABLE x; --", "", 'q"q', "ü\n\r\t"]:
        assert con.execute(f"SELECT {sql_str(text)}").fetchone()[0] == text
    assert sql_path(Path("/tmp/o'brien/x.parquet")) == "'/tmp/o''brien/x.parquet'"


def test_a_project_path_with_a_quote(tmp_path: Path, monkeypatch):
    root = tmp_path / "o'brien's \"recs\""
    p = land(root, "a.csv", csv(GOOD))
    prm = params(signals={"half_life_days": 7.0}, split={"test_days": 3})
    ingest.run(prm, p)
    validate.run(prm, p)

    out = snapshots.write(p.validated, p.feature_data, prm)  # features stage
    assert out["user_rows"] > 0 and (p.feature_data / Feast.user_file).exists()
    split = make_split(p.validated_events, prm)  # train stage's split (+ signals with decay)
    assert len(split.train) > 0
    con = duckdb.connect()
    as_of = datetime(2026, 2, 1, tzinfo=UTC)
    src = f"read_parquet({sql_path(p.validated_events)})"
    assert len(con.sql(confidence_sql(prm.signals, src, as_of)).df()) > 0

    # push path: validated history + data/pushed/ files read back through DuckDB
    pushed: list[pd.DataFrame] = []
    monkeypatch.setattr(push, "load_watermarks", lambda *_: {Feast.user_view: "x"})
    monkeypatch.setattr(push.store, "store_id", lambda fs: "test")
    monkeypatch.setattr(push.store, "push_users", lambda fs, rows: pushed.append(rows))
    fresh = pd.DataFrame({C.user: ["u1"], C.item: ["i9"], C.event: ["click"],
                          C.ts: [pd.Timestamp("2026-02-01", tz="UTC")], C.value: [None]})
    r = push.push_events(prm, p, fresh, fs=object(), now=datetime(2026, 2, 2, tzinfo=UTC))
    assert r["users_pushed"] == 1 and pushed[0][C.user].tolist() == ["u1"]
    assert list(Paths(root).pushed.glob("*.parquet"))
