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
    land(tmp_path, "b.csv", csv([*good_lines(20, seed=1), "u1,i1,play,2026-01-02T00:00:00Z,7"]))
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
