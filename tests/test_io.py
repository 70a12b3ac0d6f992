"""pipeline.io: the one quoting helper (every SQL that names a path or a literal goes through
``sql_str`` / ``sql_path``; ``read_parquet('{path}')`` broke on ``it's`` in four modules), and
atomic writes that leave nothing behind even when the writer is killed (the next writer of the
same folder removes a dead process's temp folder; problem 14: `.candidate.tmp-*` forever)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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
from pipeline.io import atomic_dir, remove_stale, sql_path, sql_str
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

KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from pipeline.io import atomic_dir
with atomic_dir(Path(sys.argv[1])) as tmp:
    (tmp / "half.txt").write_text("half")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _killed_writer(target: Path) -> None:
    p = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target)], timeout=60)
    assert p.returncode == -signal.SIGKILL


def test_a_killed_writers_temp_folder_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "models" / "candidate"
    with atomic_dir(target) as tmp:
        (tmp / "model.json").write_text("v1")
    _killed_writer(target)
    left = [p.name for p in target.parent.iterdir() if p.name != "candidate"]
    assert len(left) == 1 and left[0].startswith(".candidate.tmp-")
    with atomic_dir(target) as tmp:
        (tmp / "model.json").write_text("v2")
    assert sorted(p.name for p in target.parent.iterdir()) == ["candidate"]
    assert (target / "model.json").read_text() == "v2"


def test_live_writers_and_other_files_are_left_alone(tmp_path):
    mine = tmp_path / f".x.tmp-{os.getpid()}"
    mine.mkdir()
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "x.tmp-1").mkdir()          # no leading dot: not ours
    assert remove_stale(tmp_path) == []
    assert {p.name for p in tmp_path.iterdir()} == {mine.name, ".hidden", "x.tmp-1"}


def test_an_old_copy_without_its_target_is_moved_back(tmp_path):
    """Killed between the two renames of atomic_dir: the `.old` copy is the last complete
    version, so it is restored rather than deleted."""
    dead = _dead_pid()
    old = tmp_path / f".trainset.old-{dead}"
    old.mkdir()
    (old / "meta.json").write_text("{}")
    remove_stale(tmp_path)
    assert (tmp_path / "trainset" / "meta.json").exists() and not old.exists()


def _dead_pid() -> int:
    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                       capture_output=True, text=True, check=True)
    return int(p.stdout)
