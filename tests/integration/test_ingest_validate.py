"""Real data and the CLI contract: MovieLens through the whole `dvc repro`, and a refused
batch that stops the pipeline with a readable refusal while validated data stays as it was."""

import json

import pandas as pd
import pytest

from tests.conftest import TINY, copy_project, sh

pytestmark = pytest.mark.integration


def test_movielens_whole_pipeline(tmp_path, movielens):
    proj = copy_project(tmp_path / "proj", {
        **TINY,
        "ingest": {"source": "movielens", "path": str(movielens)},
        "split": {"strategy": "leave_n_out", "n_out": 5},
    })
    sh(["dvc", "repro"], proj, timeout=600)

    val = json.loads((proj / "reports/validation.json").read_text())
    rows = len(pd.read_csv(movielens / "ratings.csv"))
    assert val["rows"] == rows
    assert val["accepted"] + val["quarantined"] == rows
    assert len(pd.read_parquet(proj / "data/validated/events.parquet")) == val["accepted"]
    (batch,) = val["batches"]
    assert len(pd.read_parquet(proj / f"data/quarantine/{batch['batch']}.parquet")) == val["quarantined"]
    assert (proj / "reports/validation_docs/index.html").exists()
    champ = json.loads((proj / "models/registry/champion.json").read_text())
    assert (proj / "models/registry/versions" / champ["version"] / "model.npz").exists()


def test_bad_batch_stops_cli_and_keeps_validated(tmp_path):
    proj = copy_project(tmp_path / "proj", {**TINY, "ingest": {"source": "landing"}})
    head = "user_id,item_id,event_type,event_timestamp,value\n"
    good = "".join(f"u{i % 5},i{i},view,2026-01-0{1 + i % 9}T00:00:00Z,\n" for i in range(40))
    (proj / "data/incoming/a.csv").write_text(head + good)
    sh(["dvc", "repro", "validate"], proj)
    kept = (proj / "data/validated/events.parquet").read_bytes()

    bad = "".join(f"u{i},i{i},teleport,2026-01-01T00:00:00Z,\n" for i in range(10))
    (proj / "data/incoming/b.csv").write_text(head + good.replace("view", "click") + bad)
    status = sh(["dvc", "status", "ingest"], proj)
    assert "data/incoming" in status.stdout  # DVC notices the new landed file
    sh(["recflow", "ingest"], proj)
    direct = sh(["recflow", "validate"], proj, check=False)
    assert direct.returncode == 1 and "Traceback" not in direct.stderr
    first, *checks = direct.stderr.strip().splitlines()  # a complete first line, then one
    assert "data/incoming/b.csv" in first and "10 of 50 rows" in first  # per failed check
    assert "max_quarantine_fraction" in first
    (types,) = [c for c in checks if "event type not in signals.weights" in c]
    assert '"teleport"' in types and "10 rows" in types
    assert (proj / "data/validated/events.parquet").read_bytes() == kept
