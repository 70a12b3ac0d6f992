"""Stage ``validate`` beyond the corpus: refused batches leave artifacts alone, several
batches are quarantined separately, hand-built frames are checked too."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.data import suite
from pipeline.stages import ingest, validate
from pipeline.columns import Columns as C
from pipeline.errors import DataError
from tests.data.test_bad_input_corpus import (
    GARBAGE,
    GOOD,
    N_GOOD,
    csv,
    good_lines,
    land,
    params,
    run_both,
)


def test_refused_batch_leaves_previous_artifacts_untouched(tmp_path: Path):
    p = land(tmp_path, "a_good.csv", csv(GOOD))
    prm = params()
    run_both(p, prm)
    before = {f: f.read_bytes() for d in (p.validated, p.quarantine) for f in d.iterdir()}
    before[p.reports / "validation.json"] = (p.reports / "validation.json").read_bytes()
    land(tmp_path, "b_bad.csv", csv(GOOD[:5] + GARBAGE, ))
    ingest.run(prm, p)
    with pytest.raises(DataError, match="b_bad.csv"):
        validate.run(prm, p)
    after = {f: f.read_bytes() for d in (p.validated, p.quarantine) for f in d.iterdir()}
    after[p.reports / "validation.json"] = (p.reports / "validation.json").read_bytes()
    assert after == before
    failed = json.loads((p.reports / "validation_failed.json").read_text())
    assert not failed["success"]


def test_two_batches_quarantined_separately(tmp_path: Path):
    p = land(tmp_path, "a.csv", csv([*GOOD, "u1,i1,teleport,2026-01-02T00:00:00Z,"]))
    others = [ln.replace("u", "w", 1) for ln in good_lines(20, seed=1)]  # not copies of a's
    land(tmp_path, "b.csv", csv([*others, "u1,i1,play,2026-01-02T00:00:00Z,7"]))
    rep = run_both(p, params())
    assert [b["quarantined"] for b in rep["batches"]] == [1, 1]
    assert rep["accepted"] + rep["quarantined"] == rep["rows"] == N_GOOD + 1 + 20 + 1
    assert len(list(p.quarantine.glob("*.parquet"))) == 2


def test_check_on_a_frame_with_blank_ids_and_no_bookkeeping_columns():
    df = pd.DataFrame({C.user: ["u1", " ", "u3"], C.item: ["i1", "i2", "i3"],
                       C.event: ["view", "view", "view"],
                       C.ts: pd.to_datetime(["2026-01-01"] * 3, utc=True),
                       C.value: [np.nan] * 3})
    out = suite.check(df, params(validate={"max_quarantine_fraction": 0.5}))
    assert out.ok and len(out.accepted) == 2 and len(out.quarantined) == 1


def test_a_refusal_reads_in_the_users_terms(tmp_path: Path):
    """The refusal was one ~700-character line naming the top 3 GX expectations by their
    internal names (``_row_hash``, its hash values, null ids as ``nan``) and never saying that
    others were left out. Now: one line per failed check, with the column as the file names
    it, the count and examples; the same lines in the error and in validation_failed.json."""
    rows = [f"w{i},s{i},seen,2026-01-02T00:00:00Z,0.5" for i in range(6)]
    rows += [f",s{i},seen,2026-01-02T00:00:00Z," for i in range(3)]          # no user
    rows += ["w1,s1,teleport,2026-01-02T00:00:00Z,", "w1,s2,warp,2026-01-02T00:00:00Z,"]
    rows += ["w1,s3,seen,2099-01-01T00:00:00Z,", "w2,s4,watch,2026-01-02T00:00:00Z,7"]
    rows += [rows[0], "w9,s9,vi"]                                           # copy, malformed
    p = land(tmp_path, "log.csv", csv(rows, "uid,sku,what,ts,amount"))
    prm = params(ingest={"source": "landing", "loader": {
        "columns": {"user_id": "uid", "item_id": "sku", "event_type": "what",
                    "event_timestamp": "ts", "value": "amount"},
        "events": {"seen": "view", "watch": "play"}}})
    ingest.run(prm, p)
    with pytest.raises(DataError) as e:
        validate.run(prm, p)
    lines = str(e.value).splitlines()
    assert lines[0].startswith("validation refused data/incoming/log.csv (batch log-")
    assert "8 of 15 rows (53.3%) failed" in lines[0] and "1 exact duplicate not counted" in lines[0]
    body = "\n".join(lines[1:])
    assert "  - uid (user_id): 3 rows with no value (null)" in lines
    assert 'what (event_type): 2 rows with an event type not in signals.weights' in body
    assert 'e.g. "teleport", "warp"' in body
    assert "ts (event_timestamp): 1 row outside [1995-01-01, now], e.g. 2099-01-01T00:00:00+00:00" in body
    assert "amount (value): 1 row of type play outside [0.0, 1.0] (validate.value_ranges.play), e.g. 7" in body
    assert "1 row could not be read, e.g. malformed line (3 fields, expected 5)" in body
    assert "and 1 more check" in body  # SHOWN_CHECKS = 5 of the 6 failed checks
    assert "recflow ingest --forget log-" in lines[-1]
    for bad in ("_row_hash", "_duplicate_of", "nan", "NaT", "expect_column"):
        assert bad not in body, bad
    rep = json.loads((p.reports / "validation_failed.json").read_text())
    assert rep["refusal"] == lines
    (batch,) = rep["batches"]
    by_check = {f["check"]: f for f in batch["failures"]}
    assert by_check["not_null"]["source_column"] == "uid" and by_check["not_null"]["rows"] == 3
    assert by_check["not_null"]["examples"] == ["null"]  # never nan
    assert by_check["duplicate"]["examples"][0].startswith('(uid="w0", sku="s0"')
    assert all("_row_hash" not in json.dumps(c) for c in batch["checks"])


def test_several_refused_batches_each_get_their_lines(tmp_path: Path):
    p = land(tmp_path, "a.csv", csv(GOOD[:5] + GARBAGE))
    land(tmp_path, "b.csv", csv([]))
    ingest.run(params(), p)
    with pytest.raises(DataError) as e:
        validate.run(params(), p)
    lines = str(e.value).splitlines()
    assert lines[0].startswith("validation refused 2 batches (data/incoming/a.csv, data/incoming/b.csv)")
    assert any(ln.startswith("  data/incoming/b.csv (batch b-") and "empty" in ln for ln in lines)
    assert any(ln.startswith("    - ") for ln in lines)
