"""Bad-input corpus: each kind of broken landing file with its expected outcome.

Every case lands one file in a throw-away project's ``data/incoming/`` and runs the real
ingest + validate stages (GX included). Row-level problems must end in quarantine with a
reason (accepted + quarantined = input rows); batch-level problems must stop with a
DataError naming the file and the failed expectation, leaving validated data untouched.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.stages import ingest, validate
from pipeline.columns import Columns as C
from pipeline.config import Params, Paths
from pipeline.errors import DataError
from tests.conftest import ROOT, deep_update

HEADER = "user_id,item_id,event_type,event_timestamp,value"
N_GOOD = 30


def good_lines(n: int = N_GOOD, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    kinds = ["view", "click", "add_to_cart", "purchase", "play", "skip"]
    out = []
    for i in range(n):
        k = kinds[i % len(kinds)]
        v = f"{rng.uniform(0, 1):.3f}" if k == "play" else ""
        out.append(f"u{i % 7},i{i},{k},2026-01-{1 + i % 28:02d}T{i % 24:02d}:00:00Z,{v}")
    return out


def csv(lines: list[str], header: str = HEADER) -> bytes:
    return ("\n".join([header, *lines]) + "\n").encode()


def params(**over) -> Params:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    return Params.model_validate(deep_update(raw, {"ingest": {"source": "landing"}, **over}))


def land(root: Path, name: str, data: bytes) -> Paths:
    p = Paths(root)
    p.incoming.mkdir(parents=True, exist_ok=True)
    (p.incoming / name).write_bytes(data)
    return p


def run_both(p: Paths, prm: Params) -> dict:
    ingest.run(prm, p)
    validate.run(prm, p)
    return json.loads((p.reports / "validation.json").read_text())


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    accepted: int | None = None  # row outcome: counts + a reason fragment
    quarantined: int | None = None
    reason: str = ""
    error: str = ""  # batch outcome: a fragment of the one-line DataError
    filename: str = "batch.csv"


GOOD = good_lines()
garbage_rng = np.random.default_rng(7)
GARBAGE = [",".join("".join(garbage_rng.choice(list("xyz#@!q%^&*()"), 6)) for _ in range(5))
           for _ in range(N_GOOD // 9)]  # ~10% of the rows: random tokens in every field

CASES = [
    Case("missing_column", csv([ln.rsplit(",", 2)[0] for ln in GOOD],
                               "user_id,item_id,event_type"),
         error="expect_column_to_exist"),
    Case("extra_column", csv([ln + ",extra" for ln in GOOD], HEADER + ",note"),
         accepted=N_GOOD, quarantined=0),
    Case("wrong_types", csv([*GOOD, "u1,i1,play,2026-01-02T00:00:00Z,lots",
                             "u1,i2,view,yesterday,"]),
         accepted=N_GOOD, quarantined=2, reason="is not"),
    Case("empty_file", b"", error="empty file"),
    Case("header_only", csv([]), error="empty"),
    Case("non_utf8_bytes", csv(GOOD) + b"u9,caf\xe9,view,2026-01-02T00:00:00Z,\n",
         accepted=N_GOOD, quarantined=1, reason="UTF-8"),
    # input contract: only an empty (or blank) field is null; "NaN" is an id like any other
    Case("empty_and_nan_ids", csv([*GOOD, ",i1,view,2026-01-02T00:00:00Z,",
                                   "u1,  ,view,2026-01-02T00:00:00Z,",
                                   "u1,NaN,view,2026-01-02T00:00:00Z,"]),
         accepted=N_GOOD + 1, quarantined=2, reason="not_be_null"),
    Case("future_timestamps", csv([*GOOD, "u1,i1,view,2099-01-01T00:00:00Z,"]),
         accepted=N_GOOD, quarantined=1, reason="column=event_timestamp"),
    Case("before_floor", csv([*GOOD, "u1,i1,view,1980-01-01T00:00:00Z,"]),
         accepted=N_GOOD, quarantined=1, reason="column=event_timestamp"),
    Case("watch_fraction_negative", csv([*GOOD, "u1,i1,play,2026-01-02T00:00:00Z,-0.1"]),
         accepted=N_GOOD, quarantined=1, reason="event_type=='play'"),
    Case("watch_fraction_above_one", csv([*GOOD, "u1,i1,play,2026-01-02T00:00:00Z,1.5"]),
         accepted=N_GOOD, quarantined=1, reason="event_type=='play'"),
    Case("unknown_event_types", csv([*GOOD, "u1,i1,teleport,2026-01-02T00:00:00Z,"]),
         accepted=N_GOOD, quarantined=1, reason="expect_column_values_to_be_in_set"),
    Case("exact_duplicates", csv([*GOOD, GOOD[3], GOOD[3], GOOD[4]]),
         accepted=N_GOOD, quarantined=3, reason="exact duplicate"),
    Case("truncated_last_line", csv(GOOD) + b"u9,i9,vi",
         accepted=N_GOOD, quarantined=1, reason="malformed line"),
    Case("mixed_timestamp_formats", csv([*GOOD, "u1,i1,view,1767225600,",
                                         "u1,i2,view,01/02/2026 10:00,"]),
         accepted=N_GOOD, quarantined=2, reason="is not a timestamp (iso)"),
    Case("ten_percent_garbage", csv(GOOD[:27] + GARBAGE),
         accepted=27, quarantined=len(GARBAGE), reason=""),
    Case("too_much_garbage", csv(GOOD[:10] + GARBAGE * 2),
         error="max_quarantine_fraction"),
    Case("not_csv_at_all", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4,
         error="batch.png", filename="batch.png.csv"),
    Case("gzip_csv", gzip.compress(csv(GOOD)), accepted=N_GOOD, quarantined=0,
         filename="batch.csv.gz"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_corpus(case: Case, tmp_path: Path):
    p = land(tmp_path, case.filename, case.data)
    prm = params()
    if case.error:
        with pytest.raises(DataError) as e:
            run_both(p, prm)
        msg = str(e.value)
        first, *checks = msg.splitlines()
        assert case.error in first  # the first line alone says what and where
        assert case.filename.split(".")[0] in first
        # then one short line per failed check (+ what to do), never internals or nan
        assert all(len(ln) < 400 for ln in checks) and len(checks) <= 7
        assert "_row_hash" not in msg and "nan" not in msg.replace("NaN", "")
        assert not p.validated.exists()  # nothing validated from a refused batch
        if "max_quarantine_fraction" in msg:  # the message carries counts and examples
            assert " of " in first and "e.g." in msg and "--forget" in msg
        return
    rep = run_both(p, prm)
    assert rep["accepted"] == case.accepted and rep["quarantined"] == case.quarantined
    (batch,) = rep["batches"]
    assert batch["rows"] == batch["accepted"] + batch["quarantined"] == rep["rows"]
    q = pd.read_parquet(p.quarantine / f"{batch['batch']}.parquet")
    v = pd.read_parquet(p.validated / "events.parquet")
    assert len(q) == case.quarantined and len(v) == case.accepted
    assert list(v.columns) == list(C.EVENT_TABLE)
    if case.quarantined:
        assert q[C.reason].notna().all()
        assert q[C.reason].str.contains(case.reason, regex=False).any(), q[C.reason].tolist()
    assert (p.reports / "validation_docs" / "index.html").exists()
    assert (p.reports / "validation_docs" / f"{batch['batch']}.html").stat().st_size > 1000


def test_corpus_covers_at_least_15_kinds():
    assert len({c.name for c in CASES}) >= 15


