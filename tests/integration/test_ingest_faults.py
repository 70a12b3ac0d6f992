"""Fault suite, ingest side (issue 12): CSV corner cases, a refused batch that must not block
the pipeline for good, a changed loader mapping, the input file as a DVC dependency, and
pushed events that become training data exactly once. Each case failed on main before
its fix; all run the real CLI / DVC in a throw-away project copy."""

from __future__ import annotations

import contextlib
import gzip
import json

import pandas as pd
import pytest
import yaml

from tests.conftest import TINY, clone_built, copy_project, sh

pytestmark = pytest.mark.integration

HEAD = "user_id,item_id,event_type,event_timestamp,value\n"


def good(n: int, user: str = "u") -> str:
    return "".join(f"{user}{i % 5},i{i},view,2026-01-0{1 + i % 9}T00:00:00Z,\n" for i in range(n))


def landing(tmp_path, **ingest) -> tuple:
    proj = copy_project(tmp_path / "proj", {**TINY, "ingest": {"source": "landing", **ingest}})
    return proj, proj / "data/incoming"


def no_traceback(p) -> None:
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout, p.stderr[-2000:]


def test_corner_cases_and_a_refused_batch_that_no_longer_blocks(tmp_path):
    """CSV corner cases through the CLI, beside two refused batches. A refused batch used to
    stay red for good (removing its file, or any command, did not help; the log named a file
    that no longer existed; only an undocumented rm -rf data/events did). Now: forget it, or
    remove its file, and the next `dvc repro` is green with the history kept."""
    proj, inc = landing(tmp_path)
    (inc / "a.csv").write_text(HEAD + good(40))
    # a malformed line next to another batch (earlier or new) crashed ingest (TypeError)
    (inc / "m.csv").write_text(HEAD + good(20, "m") + "m9,i9,vi\n")
    # CR-only line endings dropped the value column: 7 passed as NaN
    (inc / "cr.csv").write_bytes((HEAD + good(20, "r") + "r1,i1,play,2026-01-02T00:00:00Z,7\n")
                                 .replace("\n", "\r").encode())
    # a quoted CR split its row (at a parse-block edge): half under a wrong user id
    (inc / "q.csv").write_text(HEAD + good(20, "q") + '"al\rice",i1,view,2026-01-02T00:00:00Z,\n')
    # "NA" was a null id; only an empty field is null now
    (inc / "na.csv").write_text(HEAD + good(20, "n") + "NA,i1,view,2026-01-02T00:00:00Z,\n")
    # a re-delivery under another name, gzipped, was counted twice
    (inc / "a_again.csv.gz").write_bytes(gzip.compress((HEAD + good(40)).encode()))
    # two refused batches
    (inc / "b.csv").write_text(HEAD + good(5, "b") + "".join(
        f"b{i},i{i},teleport,2026-01-01T00:00:00Z,\n" for i in range(5)))
    (inc / "c.csv").write_text(HEAD + "".join(f"c{i},i{i},warp,2026-01-01T00:00:00Z,\n"
                                              for i in range(5)))
    no_traceback(sh(["recflow", "ingest"], proj))
    red = sh(["recflow", "validate"], proj, check=False)
    assert red.returncode == 1
    no_traceback(red)
    lines = red.stderr.strip().splitlines()
    assert "2 batches (data/incoming/b.csv, data/incoming/c.csv)" in lines[0]
    assert any("data/incoming/b.csv (batch b-" in ln and "5 of 10 rows (50.0%)" in ln
               for ln in lines)
    assert any("event_type: 5 rows with an event type not in signals.weights" in ln
               and '"teleport"' in ln for ln in lines)
    assert "recflow ingest --forget b-" in lines[-1]
    rep = json.loads((proj / "reports/validation_failed.json").read_text())
    assert rep["refusal"] == [ln.removeprefix("recflow validate: ") for ln in lines]
    by_file = {b["source"].rsplit("/", 1)[-1]: b for b in rep["batches"]}
    (reason,) = by_file["m.csv"]["quarantine_reasons"]
    assert reason.startswith("malformed line (3 fields, expected 5)") and "'m9,i9,vi'" in reason
    assert any("event_type=='play'" in k for k in by_file["cr.csv"]["quarantine_reasons"])
    again = by_file["a_again.csv.gz"]
    assert again["quarantined"] == 40 and again["success"]  # duplicates, harmless

    f = sh(["recflow", "ingest", "--forget", "data/incoming/b.csv"], proj)
    assert "rows_dropped=10" in f.stdout
    (inc / "c.csv").unlink()  # the refused file leaves: its batch is withdrawn
    sh(["dvc", "repro", "validate"], proj)  # green; b.csv stays, skipped while it is there
    ev = pd.read_parquet(proj / "data/validated/events.parquet")
    assert "al\rice" in set(ev["user_id"]) and "NA" in set(ev["user_id"])
    assert not ev.duplicated().any() and len(ev) == 40 + 20 * 4 + 2
    rep = json.loads((proj / "reports/validation.json").read_text())
    assert rep["accepted"] + rep["quarantined"] == rep["rows"]
    man = json.loads((proj / "data/events/manifest.json").read_text())
    assert [h["why"].split(":")[0] for h in man["history"]] == ["withdrawn"]
    assert [e["file"] for e in man["forgotten"].values()] == ["data/incoming/b.csv"]


def test_a_new_loader_mapping_reingests_and_dvc_lock_tells_the_truth(tmp_path):
    proj, inc = landing(tmp_path, loader={"events": {"seen": "click"}})
    (inc / "log.csv").write_text(HEAD + good(30).replace(",view,", ",seen,"))
    sh(["dvc", "repro", "ingest"], proj)
    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["ingest"]["loader"]["events"] = {"seen": "purchase"}
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(["dvc", "repro", "ingest"], proj)
    ev = pd.read_parquet(proj / "data/events/events.parquet")
    assert set(ev["event_type"]) == {"purchase"} and len(ev) == 30  # the data follows params
    lock = yaml.safe_load((proj / "dvc.lock").read_text())
    assert lock["stages"]["ingest"]["params"]["params.yaml"]["ingest"] == params["ingest"]


def test_the_source_file_is_a_dvc_dependency(tmp_path):
    proj = copy_project(tmp_path / "proj", {**TINY, "ingest": {"source": "file",
                                                               "path": "data/events.csv"}})
    src = proj / "data/events.csv"
    src.write_text(HEAD + good(30))
    sh(["dvc", "repro", "ingest"], proj)
    src.write_text(HEAD + good(31))
    status = sh(["dvc", "status", "ingest"], proj).stdout
    assert "modified:" in status and "data/events.csv" in status


def test_pushed_events_become_training_data_exactly_once(built_project, tmp_path):
    """`recflow push-events` kept accepted events in data/pushed/ and no later run ever
    learned from them. Now data/pushed/ is a DVC dependency of ingest (new training data:
    `dvc status` says so) and its events join the validated events once. The push runs
    in-process (the function the CLI and POST /events call) to spare two imports."""
    from dvc.repo import Repo

    from pipeline.config import load_params, paths
    from pipeline.features.push import run_file

    proj = clone_built(built_project, tmp_path / "p")
    fresh = pd.DataFrame({"user_id": ["pushed-u1", "pushed-u1", "u0000001"],
                          "item_id": ["i0000001", "i0000002", "i0000003"],
                          "event_type": ["click", "purchase", "view"],
                          "event_timestamp": ["2026-11-30T10:00:00Z", "2026-11-30T10:01:00Z",
                                              "2026-11-30T10:02:00Z"], "value": [None] * 3})
    fresh.to_csv(proj / "fresh.csv", index=False)
    p = paths(proj)
    run_file(load_params(p.params), p, proj / "fresh.csv")
    with contextlib.chdir(proj), Repo(str(proj)) as repo:  # DVC resolves paths against cwd
        (changes,) = repo.status(targets=["ingest"])["ingest"]
    assert changes == {"changed deps": {"data/pushed": "modified"}}
    sh(["dvc", "repro", "validate"], proj)
    ev = pd.read_parquet(proj / "data/validated/events.parquet")
    got = ev[ev["event_timestamp"] >= pd.Timestamp("2026-11-30T10:00:00Z")]
    assert sorted(got["item_id"]) == ["i0000001", "i0000002", "i0000003"]  # once each
