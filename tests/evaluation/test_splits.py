"""Splits are a pure function of (data, params): the same events give the same holdout in any
process, with any DuckDB thread count and in any row order; new data never moves a training
pair into the holdout; the validation carve is as reproducible."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.columns import Columns as C
from pipeline.config import Params
from pipeline.evaluation.splits import carve_validation, make_split

PARAMS = Params.model_validate({"signals": {"weights": {"view": 1.0, "purchase": 5.0}},
                                "split": {"strategy": "leave_n_out", "n_out": 4, "seed": 7},
                                "model": {"validation_n": 3}})


def events(n_users: int = 400, n_items: int = 300, n: int = 30_000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    return pd.DataFrame({
        C.user: [f"u{u:04d}" for u in rng.integers(0, n_users, n)],
        C.item: [f"i{i:04d}" for i in rng.zipf(1.3, n) % n_items],
        C.event: rng.choice(["view", "purchase"], n, p=[0.9, 0.1]),
        C.ts: t0 + pd.to_timedelta(rng.integers(0, 86_400 * 30, n), unit="s"),
        C.value: np.nan,
    })


# Runs make_split in a fresh interpreter with DuckDB forced to THREADS threads.
SCRIPT = """
import sys, duckdb
threads = int(sys.argv[3])
_connect = duckdb.connect
duckdb.connect = lambda *a, **k: _connect(*a, **{**k, "config": {"threads": threads}})
from pipeline.config import Params
from pipeline.evaluation.splits import make_split
params = Params.model_validate_json(open(sys.argv[2]).read())
s = make_split(__import__("pathlib").Path(sys.argv[1]), params)
s.holdout.to_parquet(sys.argv[4], index=False)
s.train.to_parquet(sys.argv[5], index=False)
"""


def _split_in_process(tmp: Path, ev: pd.DataFrame, threads: int, tag: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    src, prm = tmp / f"events-{tag}.parquet", tmp / "params.json"
    ev.to_parquet(src, index=False)
    prm.write_text(PARAMS.model_dump_json(by_alias=True))
    hold, train = tmp / f"hold-{tag}.parquet", tmp / f"train-{tag}.parquet"
    subprocess.run([sys.executable, "-c", SCRIPT, str(src), str(prm), str(threads), str(hold),
                    str(train)], check=True, cwd=Path(__file__).resolve().parents[2], timeout=120)
    return pd.read_parquet(hold), pd.read_parquet(train)


def _pairs(df: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(df[C.user], df[C.item], strict=True))


def test_same_data_same_holdout_in_any_process_thread_count_and_row_order(tmp_path, monkeypatch):
    import duckdb

    ev = events()
    src = tmp_path / "events.parquet"
    ev.to_parquet(src, index=False)
    connect = duckdb.connect
    monkeypatch.setattr(duckdb, "connect", lambda *a, **k: connect(*a, **{**k, "config": {"threads": 1}}))
    s1 = make_split(src, PARAMS)                                  # this process, one thread
    monkeypatch.undo()
    h1, t1 = s1.holdout, s1.train
    shuffled = ev.sample(frac=1.0, random_state=3).reset_index(drop=True)  # same data, other order
    h2, t2 = _split_in_process(tmp_path, shuffled, 4, "b")
    assert len(h1) > 1000
    assert _pairs(h1) == _pairs(h2) and _pairs(t1) == _pairs(t2)
    pd.testing.assert_frame_equal(h1[[C.user, C.item]], h2[[C.user, C.item]])
    np.testing.assert_allclose(h1[C.confidence], h2[C.confidence], rtol=1e-9)
    # a partition of the positives; every user keeps n_out pairs out (all, when they have no more)
    assert not _pairs(t1) & _pairs(h1)
    n = pd.concat([h1, t1]).groupby(C.user).size()
    out = h1.groupby(C.user).size().reindex(n.index, fill_value=0)
    assert (out == np.minimum(n, PARAMS.split.n_out)).all()


def test_new_data_never_moves_a_training_pair_into_the_holdout(tmp_path):
    ev = events()
    f = tmp_path / "events.parquet"
    ev.to_parquet(f, index=False)
    before = make_split(f, PARAMS)
    extra = events(n_users=200, n_items=400, n=6_000, seed=1)   # more pairs, 100 new users
    extra[C.user] = [f"u{int(u[1:]) + 300:04d}" for u in extra[C.user]]
    extra[C.ts] = extra[C.ts] + pd.Timedelta(days=40)
    pd.concat([ev, extra]).to_parquet(f, index=False)
    after = make_split(f, PARAMS)
    old_train, new_hold = _pairs(before.train), _pairs(after.holdout)
    assert not old_train & new_hold
    # users without new pairs keep exactly their holdout
    touched = set(extra[C.user])
    keep = lambda df: _pairs(df[~df[C.user].isin(touched)])  # noqa: E731
    assert keep(before.holdout) == keep(after.holdout) and keep(before.holdout)


def test_validation_carve_is_a_function_of_the_pairs(tmp_path):
    f = tmp_path / "events.parquet"
    events().to_parquet(f, index=False)
    train = make_split(f, PARAMS).train
    fit1, val1 = carve_validation(train, PARAMS)
    fit2, val2 = carve_validation(train.sample(frac=1.0, random_state=5), PARAMS)
    assert _pairs(val1) == _pairs(val2) and _pairs(fit1) == _pairs(fit2)
    assert _pairs(fit1) | _pairs(val1) == _pairs(train) and not _pairs(fit1) & _pairs(val1)
    per = val1.groupby(C.user).size()
    assert per.max() == PARAMS.model.validation_n
    assert set(fit1[C.user]) >= set(val1[C.user])   # a validation user keeps pairs to fit on


def test_time_split_refuses_data_without_time(tmp_path):
    """A count file loaded with ``time_unit: none`` has every event at one instant: the time
    split says to use leave_n_out instead of cutting nothing."""
    import pytest

    from pipeline.data.loaders import TIMELESS
    from pipeline.errors import DataError

    f = tmp_path / "events.parquet"
    events(n=500).assign(**{C.ts: TIMELESS}).to_parquet(f)
    timed = PARAMS.model_copy(update={"split": PARAMS.split.model_copy(update={"strategy": "time"})})
    with pytest.raises(DataError, match="leave_n_out"):
        make_split(f, timed)
    assert len(make_split(f, PARAMS).holdout) > 0      # leave-N-out needs no time
