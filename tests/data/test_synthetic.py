import numpy as np
import pandas as pd
import pytest

from pipeline.columns import Columns as C
from pipeline.config import SyntheticParams
from pipeline.data.synthetic import generate

SMALL = SyntheticParams(n_events=30_000, n_users=500, n_items=800, n_categories=8)


@pytest.fixture(scope="module")
def data():
    return generate(SMALL)


def test_same_seed_same_rows_other_seed_other_rows(data):
    again, _ = generate(SMALL)
    pd.testing.assert_frame_equal(data[0], again)
    other, _ = generate(SMALL.model_copy(update={"seed": 7}))
    assert not data[0].equals(other)


def test_schema_and_size(data):
    events, items = data
    assert list(events.columns) == list(C.EVENT_TABLE)
    assert str(events[C.ts].dtype) == "datetime64[us, UTC]"
    assert events[C.value].dtype == np.float64
    assert 0.95 * SMALL.n_events <= len(events) <= SMALL.n_events
    assert events[[C.user, C.item, C.event, C.ts]].notna().all().all()
    assert set(events[C.item]) <= set(items[C.item])
    assert items[C.category].nunique() <= SMALL.n_categories


def test_time_window(data):
    events, _ = data
    end = pd.Timestamp(SMALL.end_date, tz="UTC") + pd.Timedelta(days=1)
    assert events[C.ts].max() < end
    assert events[C.ts].min() >= end - pd.Timedelta(days=SMALL.days)
    assert events[C.ts].is_monotonic_increasing


def test_value_ranges(data):
    events, _ = data
    plays = events[events[C.event] == "play"][C.value]
    assert plays.between(0, 1).all() and len(plays) > 0
    assert events[events[C.event] != "play"][C.value].isna().all()
    assert set(events[C.event]) == {"view", "click", "add_to_cart", "purchase", "play", "skip"}


def test_funnel_order(data):
    """Every purchase follows an add_to_cart, which follows a click, which follows a view."""
    events, _ = data
    first = events.groupby([C.user, C.item, C.event])[C.ts].min().unstack()
    for later, earlier in (("purchase", "add_to_cart"), ("add_to_cart", "click"), ("click", "view")):
        rows = first[first[later].notna()]
        assert rows[earlier].notna().all(), f"{later} without {earlier}"
        assert (rows[earlier] <= rows[later]).all(), f"{later} before {earlier}"
    counts = events[C.event].value_counts()
    assert counts["view"] > counts["click"] > counts["add_to_cart"] > counts["purchase"]


def test_long_tail_and_cold_starts(data):
    events, _ = data
    pop = events[C.item].value_counts()
    top = pop.iloc[: len(pop) // 10].sum() / pop.sum()
    assert top > 0.4, f"top 10% of items get {top:.0%} of events: not a long tail"
    first_seen = events.groupby(C.user)[C.ts].min()
    start = events[C.ts].min()
    assert (first_seen > start + pd.Timedelta(days=20)).sum() > 0, "no users join late"
    item_first = events.groupby(C.item)[C.ts].min()
    assert (item_first > start + pd.Timedelta(days=20)).sum() > 0, "no items launch late"


def test_users_have_tastes(data):
    """A user's events concentrate on few categories (what lets a model beat popularity)."""
    events, items = data
    ev = events.merge(items, on=C.item)
    share = ev.groupby(C.user)[C.category].agg(lambda s: s.value_counts(normalize=True).iloc[0])
    assert share.median() > 2.0 / SMALL.n_categories


def test_strong_signals_carry_more_taste_than_views(data):
    """What the signal weights rely on: a purchase or a finished play says more about a user's
    taste than a view, a click or an abandoned play. Measured against the generator's ground
    truth: the mean taste weight of the event's category for its user (1/n_categories when an
    event says nothing), so the ablation in benchmarks/signals.py measures something real."""
    from pipeline.data.synthetic import user_taste

    events, items = data
    taste = user_taste(SMALL)
    cat = items.set_index(C.item)[C.category].str.slice(1).astype(int)
    u = events[C.user].str.slice(1).astype(int).to_numpy()
    c = cat.reindex(events[C.item]).to_numpy()
    w = pd.Series(taste[u, c], index=events.index)
    kind = events[C.event].where(events[C.event] != "play",
                                 np.where(events[C.value] >= 0.9, "finished play",
                                          np.where(events[C.value] < 0.2, "abandoned play", "play")))
    info = w.groupby(kind.to_numpy()).mean()
    for strong in ("purchase", "finished play"):
        # relative: attribute-shaped taste (synthetic.attribute_taste) flattens every level
        assert info[strong] > info["view"] * 1.05, info.round(3).to_dict()
        assert info[strong] > info["abandoned play"] * 1.5, info.round(3).to_dict()
        assert info[strong] > info["click"], info.round(3).to_dict()
    assert info["view"] > 1.0 / SMALL.n_categories    # views are not pure noise either
