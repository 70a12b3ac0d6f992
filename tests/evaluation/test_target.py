"""evaluate.target: which held-out pairs are relevant, on hand-built events with known answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import duckdb
import pandas as pd
import pytest

from pipeline.columns import Columns as C
from pipeline.config import TargetParams, load_params
from pipeline.data.signals import confidence_sql
from pipeline.evaluation import target
from tests.conftest import ROOT

T0 = datetime(2026, 1, 1, tzinfo=UTC)
EVENTS = pd.DataFrame(
    [("u1", "bought", "view", 0, None), ("u1", "bought", "purchase", 1, None),
     ("u1", "finished", "play", 0, 0.95), ("u1", "half", "play", 0, 0.5),
     ("u1", "viewed", "view", 0, None), ("u1", "viewed", "click", 1, None),
     ("u2", "finished_late", "play", 0, 0.3), ("u2", "finished_late", "play", 2, 0.92)],
    columns=list(C.EVENT_TABLE)).assign(**{C.ts: lambda d: [T0 + timedelta(days=x) for x in d[C.ts]]})
FINISHED = TargetParams(types=("purchase", "play"), min_value={"play": 0.9})


def pairs(tp: TargetParams) -> pd.DataFrame:
    con = duckdb.connect()
    con.register("ev", EVENTS)
    sp = load_params(ROOT / "params.yaml").signals
    return con.sql(confidence_sql(sp, "ev", None, target.flags(tp))).df()


def items(frame: pd.DataFrame) -> set[str]:
    return set(frame[C.item])


@pytest.mark.parametrize("tp, expected", [
    (TargetParams(), {"bought", "finished", "half", "viewed", "finished_late"}),
    (TargetParams(types=("purchase",)), {"bought"}),
    (FINISHED, {"bought", "finished", "finished_late"}),   # any of the pair's plays may finish
    (TargetParams(min_net=5.0), {"bought"}),               # view 1 + purchase 5
    # finished: 0.95 + 3 bonus; finished_late: 0.3 + 0.92 + 3 bonus + 0.5 repeat
    (TargetParams(types=("play",), min_net=4.5), {"finished_late"}),
])
def test_relevant_pairs(tp, expected):
    assert items(target.relevant(pairs(tp), tp)) == expected


def test_all_positives_is_todays_behaviour():
    """The default target keeps every positive pair: the holdout is what it was before."""
    p = pairs(TargetParams())
    pd.testing.assert_frame_equal(target.relevant(p, TargetParams()), p.reset_index(drop=True))


def test_describe():
    assert target.describe(TargetParams()) == "all positives"
    assert target.describe(FINISHED) == "purchase or play >= 0.9"
    assert target.describe(TargetParams(types=("rating",), min_net=2)) == "(rating) and net >= 2"
