"""The content comparison behind materialization (DuckDB only, no store): new / changed /
unchanged / removed against the last fingerprint, forced and windowed plans, trust, and a
record that depends on the content only."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
from feast.value_type import ValueType

from pipeline.config import Paths
from pipeline.feature_store.fingerprint import Fingerprints, schema_digest
from pipeline.feature_store.writer import Spec

T1, T2 = pd.Timestamp("2026-10-01", tz="UTC"), pd.Timestamp("2026-10-08", tz="UTC")


def _spec(path) -> Spec:
    return Spec(SimpleNamespace(name="v"), path, "user_id", ValueType.STRING,
                [("n", ValueType.INT64), ("s", ValueType.STRING)], "event_timestamp", None)


def _write(path, rows) -> None:
    df = pd.DataFrame(rows, columns=["user_id", "n", "s", "event_timestamp"])
    df.astype({"n": "Int64"}).to_parquet(path)  # one column type, whatever the rows


@pytest.fixture
def setup(tmp_path):
    src = tmp_path / "f.parquet"
    _write(src, [("a", 1, "x", T1), ("a", 2, "x", T2), ("b", 5, "i1,i2", T2), ("c", None, None, T2)])
    return Paths(tmp_path), src, _spec(src)


def test_first_plan_is_all_new_then_nothing_changes(setup):
    paths, src, sp = setup
    fps = Fingerprints(paths, "sqlite")
    plan = fps.plan(sp, src, force=False)
    assert (plan.new, plan.changed, plan.unchanged, plan.entities) == (3, 0, 0, 3)
    assert sorted(plan.rows.column("user_id").to_pylist()) == ["a", "b", "c"]
    assert plan.rows.column("n").to_pylist()[plan.rows.column("user_id").to_pylist().index("a")] == 2
    fps.commit(plan, "tok")
    again = Fingerprints(paths, "sqlite").plan(sp, src, force=False)
    assert (again.new, again.changed, again.unchanged, again.rows.num_rows) == (0, 0, 3, 0)
    assert again.removed.num_rows == 0
    assert again.record == plan.record


def test_same_timestamps_other_values_are_changed_and_gone_entities_removed(setup):
    paths, src, sp = setup
    fps = Fingerprints(paths, "sqlite")
    fps.commit(fps.plan(sp, src, force=False), "tok")
    _write(src, [("a", 2, "x", T2), ("b", 5, "i1", T2), ("d", 1, "y", T2)])  # b changed, c gone
    plan = Fingerprints(paths, "sqlite").plan(sp, src, force=False)
    assert (plan.new, plan.changed, plan.unchanged) == (1, 1, 1)
    assert sorted(plan.rows.column("user_id").to_pylist()) == ["b", "d"]
    assert plan.removed.column("user_id").to_pylist() == ["c"]
    assert plan.removed.column("event_timestamp").to_pylist()[0] == T2
    forced = Fingerprints(paths, "sqlite").plan(sp, src, force=True)
    assert forced.rows.num_rows == 3 and (forced.changed, forced.unchanged) == (1, 1)


def test_a_windowed_plan_keeps_the_fingerprint_and_removes_nothing(setup):
    paths, src, sp = setup
    fps = Fingerprints(paths, "sqlite")
    fps.commit(fps.plan(sp, src, force=False), "tok")
    before = fps.path("v").read_bytes()
    plan = fps.plan(sp, src, force=True, end=T2.to_pydatetime())
    assert plan.rows.column("user_id").to_pylist() == ["a"] and plan.removed.num_rows == 0
    assert plan.tmp is None and plan.record is None
    fps.commit(plan, "other")
    assert fps.path("v").read_bytes() == before and fps.views["v"]["token"] == "tok"


def test_trust_needs_the_same_token_schema_and_store(setup):
    paths, src, sp = setup
    fps = Fingerprints(paths, "sqlite")
    fps.commit(fps.plan(sp, src, force=False), "tok")
    schema = schema_digest(sp)
    assert Fingerprints(paths, "sqlite").trusted("v", schema, "tok")
    assert not Fingerprints(paths, "sqlite").trusted("v", schema, None)  # store emptied
    assert not Fingerprints(paths, "sqlite").trusted("v", schema, "restored-copy")
    other = Spec(sp.view, src, "user_id", ValueType.STRING, [("n", ValueType.INT64)],
                 "event_timestamp", None)
    assert not Fingerprints(paths, "sqlite").trusted("v", schema_digest(other), "tok")
    assert not Fingerprints(paths, "redis:h:1,db=0").trusted("v", schema, "tok")
    fps.file.write_text("{not json")
    assert Fingerprints(paths, "sqlite").views == {}


def test_the_record_depends_on_the_content_not_the_row_order(setup, tmp_path):
    paths, src, sp = setup
    rec = Fingerprints(paths, "sqlite").plan(sp, src, force=False).record
    other = tmp_path / "g.parquet"
    _write(other, [("c", None, None, T2), ("b", 5, "i1,i2", T2), ("a", 2, "x", T2), ("a", 1, "x", T1)])
    assert Fingerprints(paths, "redis:x").plan(sp, other, force=False).record == rec
    _write(other, [("c", None, None, T2), ("b", 5, "i2,i1", T2), ("a", 2, "x", T2)])
    assert Fingerprints(paths, "sqlite").plan(sp, other, force=False).record != rec
