"""Signals → confidence: the ordering and sign rules DESIGN.md promises, on hand-built events."""

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from pipeline.columns import Columns as C
from pipeline.config import load_params
from pipeline.data.signals import confidence_sql
from tests.conftest import ROOT

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def sp():
    return load_params(ROOT / "params.yaml").signals


def events(*rows: tuple) -> pd.DataFrame:
    """rows of (user, item, event, days after T0, value)."""
    return pd.DataFrame(
        [(u, i, e, T0 + timedelta(days=d), v) for u, i, e, d, v in rows],
        columns=list(C.EVENT_TABLE),
    )


def pair_confidence(events: pd.DataFrame, sp, as_of=None) -> pd.DataFrame:
    """Confidence per positive (user, item) of an in-memory event frame."""
    import duckdb

    con = duckdb.connect()
    con.register("events_df", events)
    return con.sql(confidence_sql(sp, "events_df", as_of)).df()


def conf(df: pd.DataFrame, sp, **kw) -> dict[tuple[str, str], float]:
    out = pair_confidence(df, sp, **kw)
    return {(u, i): c for u, i, c in zip(out[C.user], out[C.item], out[C.confidence], strict=True)}


def test_purchase_beats_cart_beats_view(sp):
    c = conf(events(("u", "buy", "purchase", 0, None), ("u", "cart", "add_to_cart", 0, None),
                    ("u", "seen", "view", 0, None)), sp)
    assert c["u", "buy"] > c["u", "cart"] > c["u", "seen"] > 1.0


def test_default_weights_order(sp):
    w = sp.weights
    assert w["purchase"] > w["add_to_cart"] > w["click"] > w["view"] > 0 > w["skip"]


def test_more_evidence_more_confidence(sp):
    c = conf(events(("u", "a", "view", 0, None), ("u", "b", "view", 0, None),
                    ("u", "b", "purchase", 0, None)), sp)
    assert c["u", "b"] > c["u", "a"]


def test_skip_only_pair_is_not_a_positive(sp):
    c = conf(events(("u", "s", "skip", 0, None), ("u", "v", "view", 0, None)), sp)
    assert ("u", "s") not in c and ("u", "v") in c


def test_net_negative_pair_is_not_a_positive(sp):
    # a view (+1) outweighed by two skips (-3)
    c = conf(events(("u", "x", "view", 0, None), ("u", "x", "skip", 1, None),
                    ("u", "x", "skip", 2, None)), sp)
    assert ("u", "x") not in c


def test_watch_fraction_rules(sp):
    c = conf(events(("u", "full", "play", 0, 0.95), ("u", "half", "play", 0, 0.5),
                    ("u", "early", "play", 0, 0.05)), sp)
    assert c["u", "full"] > c["u", "half"]
    assert ("u", "early") not in c  # abandoned early: weak negative, not a positive


def test_repeats_add_confidence(sp):
    once = conf(events(("u", "a", "play", 0, 0.95)), sp)
    thrice = conf(events(("u", "a", "play", 0, 0.95), ("u", "a", "play", 1, 0.95),
                         ("u", "a", "play", 2, 0.95)), sp)
    assert thrice["u", "a"] > once["u", "a"]


def test_ratings_more_stars_more_confidence_and_low_stars_not_positive(sp):
    c = conf(events(("u", "five", "rating", 0, 5.0), ("u", "three", "rating", 0, 3.0),
                    ("u", "half", "rating", 0, 0.5)), sp)
    assert c["u", "five"] > c["u", "three"] > 1.0
    assert ("u", "half") not in c


def test_decay_lowers_old_events(sp):
    decayed = sp.model_copy(update={"half_life_days": 7.0})
    df = events(("u", "old", "purchase", 0, None), ("u", "new", "purchase", 60, None))
    plain, dec = conf(df, sp), conf(df, decayed)
    assert plain["u", "old"] == pytest.approx(plain["u", "new"])
    assert dec["u", "old"] < dec["u", "new"] == pytest.approx(plain["u", "new"])


def test_decay_as_of_halves_net(sp):
    decayed = sp.model_copy(update={"half_life_days": 10.0, "alpha": 1.0, "epsilon": 1.0})
    df = events(("u", "a", "purchase", 0, None))
    out = pair_confidence(df, decayed, as_of=T0 + timedelta(days=10))
    assert out["net"].iloc[0] == pytest.approx(sp.weights["purchase"] / 2)


def test_scaling_is_log(sp):
    out = pair_confidence(events(("u", "a", "view", 0, None), ("u", "a", "click", 0, None),
                                 ("u", "a", "purchase", 0, None)), sp)
    net = sp.weights["view"] + sp.weights["click"] + sp.weights["purchase"]
    import math

    assert out["net"].iloc[0] == pytest.approx(net)
    assert out[C.confidence].iloc[0] == pytest.approx(1 + sp.alpha * math.log(1 + net / sp.epsilon))


def test_empty_events_give_no_pairs(sp):
    assert len(pair_confidence(events(), sp)) == 0


def test_a_count_row_is_that_many_events_without_expanding(sp):
    """``value_kind: count``: one (play, 3) row gives the pair the confidence of three plays
    (weight and repeat_bonus), and a zero count is no positive."""
    counted = sp.model_copy(update={"value_kind": {"play": "count"}})
    one_row = events(("u", "a", "play", 0, 3.0), ("u", "z", "play", 0, 0.0))
    three_rows = events(*[("u", "a", "play", d, 1.0) for d in range(3)])
    got, want = conf(one_row, counted), conf(three_rows, counted)
    assert got == pytest.approx(want) and ("u", "z") not in got
    # 3 plays: 3 × weight + 2 repeats × repeat_bonus
    net = 3 * counted.weights["play"] + 2 * counted.repeat_bonus
    import math
    assert got[("u", "a")] == pytest.approx(1 + counted.alpha * math.log(1 + net / counted.epsilon))


def test_value_kind_decides_what_a_value_means(sp):
    """The same play value 0.95 is a finished watch under fraction and 0.95 plays under count."""
    ev = events(("u", "a", "play", 0, 0.95))
    as_fraction = conf(ev, sp)[("u", "a")]
    as_count = conf(ev, sp.model_copy(update={"value_kind": {"play": "count"}}))[("u", "a")]
    assert as_fraction > as_count   # the strong-watch bonus applies only to a fraction
