"""The replay evaluation on the built tiny project: segments for every model, the reveal
recomputing features with the push path's SQL, attribute views served online."""

import json

import pandas as pd
import pytest

from pipeline.columns import Columns as C
from pipeline.config import load_params, paths
from pipeline.evaluation import replay
from pipeline.features import snapshots
from tests.conftest import sh

pytestmark = pytest.mark.integration


def test_segments_for_every_model_in_details_and_the_summary(built_project):
    d = json.loads((built_project / "reports/evaluation_details.json").read_text())
    seg = d["segments"]
    assert seg["reveal_n"] == 3 and seg["users"]["warm"] > 0
    assert 0 < seg["users"]["cold_revealed"] <= seg["users"]["cold"]
    for m in ("candidate", "popularity", "als", "category_rule"):
        for s in ("warm", "cold_revealed", "cold"):
            assert 0.0 <= seg[m][s]["precision@10"] <= 1.0
        assert seg[m]["cold_items"]["interactions"] > 0
    # the DVC metric stays the one-row headline; the segments are in the summary people read
    head = json.loads((built_project / "metrics/candidate.json").read_text())
    assert not any(key.startswith("cold_revealed") for key in head)
    shown = sh(["recflow", "summary"], built_project).stdout
    line = next(ln for ln in shown.splitlines() if ln.strip().startswith("cold_revealed"))
    assert f"candidate {seg['candidate']['cold_revealed']['precision@10']:.4f}" in line


def test_reveal_is_the_push_paths_features_after_the_first_events(built_project):
    p = paths(built_project)
    params = load_params(p.params)
    cutoff = pd.Timestamp(json.loads(p.trainset_meta.read_text())["cutoff"])
    train = pd.read_parquet(p.train_pairs)
    hold = pd.read_parquet(p.holdout_pairs)
    cold = sorted(set(hold[C.user].astype(str)) - set(train[C.user].astype(str)))[:3]
    rev = replay.reveal(params, p, cold, cutoff.to_pydatetime())
    ev = pd.read_parquet(p.validated_events)
    for u in rev.users:
        mine = ev[(ev[C.user] == u) & (ev[C.ts] >= cutoff)].sort_values([C.ts, C.item])
        row = rev.features[rev.features[C.user] == u].iloc[0]
        last = mine[C.ts].iloc[min(params.evaluate.reveal_n, len(mine)) - 1]
        shown = mine[mine[C.ts] <= last]  # the first reveal_n (and any tie)
        before = ((ev[C.user] == u) & (ev[C.ts] < cutoff)).sum()  # e.g. skips: no positive
        assert row["n_events"] == len(shown) + before
        con = snapshots.connect(params)
        snapshots.open_events(con, p.validated)
        again = snapshots.features_as_of(con, [u], row[C.ts].to_pydatetime(), params)
        con.close()
        assert again.iloc[0]["recent_items"] == row["recent_items"]
        assert set(rev.pairs[rev.pairs[C.user] == u][C.item]) == set(shown[C.item])
