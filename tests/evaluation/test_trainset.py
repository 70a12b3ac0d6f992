"""Leave-N-out training features come from training interactions only: adding events to a
held-out pair (even the newest events of the data set) changes no training feature."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.columns import Columns as C
from pipeline.columns import Features as F
from pipeline.config import Paths, load_params
from pipeline.evaluation import trainset

ROOT = Path(__file__).resolve().parents[2]


def _params():
    base = load_params(ROOT / "params.yaml")
    return base.model_copy(update={
        "split": base.split.model_copy(update={"strategy": "leave_n_out", "n_out": 3}),
        "model": base.model.model_copy(update={"validation_n": 2})})


def _events(seed: int = 0, n: int = 4_000) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp("2026-03-01", tz="UTC")
    return pd.DataFrame({
        C.user: [f"u{u:03d}" for u in rng.integers(0, 80, n)],
        C.item: [f"i{i:03d}" for i in rng.integers(0, 120, n)],
        C.event: rng.choice(["view", "click", "purchase"], n, p=[0.7, 0.2, 0.1]),
        C.ts: t0 + pd.to_timedelta(rng.integers(0, 86_400 * 20, n), unit="s"),
        C.value: np.nan,
    })


def _paths(tmp: Path, events: pd.DataFrame) -> Paths:
    p = Paths(tmp)
    p.validated.mkdir(parents=True, exist_ok=True)
    events.to_parquet(p.validated_events, index=False)
    cats = pd.DataFrame({C.item: [f"i{i:03d}" for i in range(120)],
                         C.category: [f"c{i % 5}" for i in range(120)]})
    cats.to_parquet(p.validated_items, index=False)
    return p


def test_a_held_out_interaction_changes_no_training_feature(tmp_path):
    params = _params()
    ev = _events()
    before = trainset.build(params, _paths(tmp_path / "a", ev))
    hold = before.holdout
    assert len(hold) > 100
    # more (and the newest) events on every held-out pair: purchases after everything else
    extra = hold[[C.user, C.item]].loc[hold.index.repeat(3)].reset_index(drop=True)
    extra = extra.assign(**{C.event: "purchase", C.value: np.nan,
                            C.ts: ev[C.ts].max() + pd.to_timedelta(np.arange(len(extra)) + 1, "min")})
    after = trainset.build(params, _paths(tmp_path / "b", pd.concat([ev, extra], ignore_index=True)))

    key = [C.user, C.item]
    pd.testing.assert_frame_equal(before.holdout[key], after.holdout[key])
    pd.testing.assert_frame_equal(before.train, after.train)
    pd.testing.assert_frame_equal(before.user_features, after.user_features)
    pd.testing.assert_frame_equal(before.item_features, after.item_features)

    # and they are the training interactions' own counts: events outside held-out pairs
    kept = ev.merge(hold[key], on=key, how="left", indicator=True)
    kept = kept[kept["_merge"] == "left_only"]
    uf = before.user_features.set_index(C.user)
    n = kept.groupby(C.user).size()
    assert (uf.loc[n.index, F.n_events] == n).all()
    itf = before.item_features.set_index(C.item)
    pop = kept.groupby(C.item).size()
    assert (itf.loc[pop.index, F.pop_all] == pop).all()


def test_target_narrows_holdout_and_validation_not_training(tmp_path):
    """evaluate.target = purchases: the holdout and the validation slice keep only pairs with a
    purchase; the train and fit parts are the same as with every positive relevant."""
    from pipeline.config import TargetParams

    params, ev = _params(), _events(n=2_000)
    everything = trainset.build(params, _paths(tmp_path / "a", ev))
    tp = params.evaluate.model_copy(update={"target": TargetParams(types=("purchase",))})
    bought = trainset.build(params.model_copy(update={"evaluate": tp}), _paths(tmp_path / "b", ev))
    key = [C.user, C.item]
    purchased = ev[ev[C.event] == "purchase"][key].drop_duplicates()
    for narrowed, full in ((bought.holdout, everything.holdout),
                           (bought.validation, everything.validation)):
        want = full[key].merge(purchased, on=key)
        pd.testing.assert_frame_equal(narrowed[key].reset_index(drop=True),
                                      want.reset_index(drop=True))
        assert 0 < len(narrowed) < len(full)
    pd.testing.assert_frame_equal(bought.train, everything.train)
    pd.testing.assert_frame_equal(bought.fit, everything.fit)
    assert bought.meta["target"] == "purchase" and everything.meta["target"] == "all positives"
