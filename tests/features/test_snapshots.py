"""DuckDB feature SQL on a tiny hand-made event table with known answers, and bad input."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.columns import Columns as C
from pipeline.columns import Feast
from pipeline.columns import Features as F
from pipeline.config import FeatureParams, load_params
from pipeline.errors import DataError
from pipeline.features import snapshots as features
from pipeline.features.recent import decode as decode_recent
from pipeline.features.recent import encode as encode_recent

ROOT = Path(__file__).resolve().parents[2]


def build(validated: Path, params) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(user_features, item_features) as frames, through the stage's own ``write``."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        features.write(validated, Path(d), params)
        return (pd.read_parquet(Path(d) / Feast.user_file),
                pd.read_parquet(Path(d) / Feast.item_file))
T0 = pd.Timestamp("2026-01-31 00:00", tz="UTC")  # the last event
D = pd.Timedelta(days=1)


@pytest.fixture(scope="module")
def params():
    return load_params(ROOT / "params.yaml")


def _events() -> pd.DataFrame:
    rows = [  # user, item, type, time, value
        ("u1", "i1", "view", T0 - 40 * D, None),
        ("u1", "i1", "view", T0 - 20 * D, None),
        ("u1", "i2", "view", T0 - 3 * D, None),
        ("u1", "i2", "purchase", T0 - 2 * D, None),
        ("u1", "i3", "play", T0 - 1 * D, 0.5),
        ("u1", "i3", "play", T0, 1.0),
        ("u2", "i3", "view", T0 - 10 * D, None),
        ("u2", "i3", "click", T0 - 5 * D, None),
    ]
    df = pd.DataFrame(rows, columns=list(C.EVENT_TABLE))
    df[C.ts] = pd.to_datetime(df[C.ts], utc=True)
    df[C.value] = df[C.value].astype("float64")
    return df


def _validated(tmp: Path, events: pd.DataFrame) -> Path:
    d = tmp / "validated"
    d.mkdir(parents=True, exist_ok=True)
    events.to_parquet(d / "events.parquet", index=False)
    pd.DataFrame({C.item: ["i1", "i2", "i3"], C.category: ["A", "A", "B"]}).to_parquet(
        d / "items.parquet", index=False)
    return d


@pytest.fixture(scope="module")
def built(tmp_path_factory, params):
    return build(_validated(tmp_path_factory.mktemp("f"), _events()), params)


def _row(df: pd.DataFrame, key: str, ident: str, at: pd.Timestamp) -> pd.Series:
    hit = df[(df[key] == ident) & (df[C.ts] == at)]
    assert len(hit) == 1, f"{ident} @ {at}: {len(hit)} rows"
    return hit.iloc[0]


END = T0 + pd.Timedelta(microseconds=1)
CUT = END - pd.Timedelta(days=7)


def test_snapshots_are_cutoff_and_end(built):
    users, items = built
    assert sorted(users[C.ts].unique()) == [CUT, END]
    assert sorted(items[C.ts].unique()) == [CUT, END]
    # u2's first event (T0-10d) is before the cutoff, so both users exist at both snapshots
    assert len(users) == 4


def test_user_features_at_end(built):
    u1 = _row(built[0], C.user, "u1", END)
    assert (u1.n_events, u1.n_events_7d, u1.n_events_30d) == (6, 4, 5)
    assert (u1.n_view, u1.n_view_7d, u1.n_view_30d) == (3, 1, 2)
    assert (u1.n_purchase, u1.n_purchase_7d, u1.n_play_7d, u1.n_click) == (1, 1, 2, 0)
    assert u1.n_items == 3
    assert u1.purchase_rate == pytest.approx(1 / 3)
    assert u1.mean_watch == pytest.approx(0.75)
    assert u1.recency_days == pytest.approx(0.0, abs=1e-4)
    assert (u1.top_category, u1.top_category_share) == ("A", pytest.approx(4 / 6))
    assert (u1.top_category_2, u1.top_category_2_share) == ("B", pytest.approx(2 / 6))
    assert u1.top_category_3 is None and u1.top_category_3_share == 0.0
    assert decode_recent(u1.recent_items) == ["i3", "i2", "i1"]
    assert u1.recent_items == '["i3","i2","i1"]'

    u2 = _row(built[0], C.user, "u2", END)
    assert (u2.n_events, u2.n_events_7d, u2.n_click_7d, u2.n_view_7d) == (2, 1, 1, 0)
    assert u2.purchase_rate == 0.0 and u2.mean_watch == 0.0
    assert (u2.top_category, u2.top_category_share) == ("B", 1.0)


def test_user_features_at_cutoff_use_only_earlier_events(built):
    u1 = _row(built[0], C.user, "u1", CUT)
    assert (u1.n_events, u1.n_view, u1.n_events_7d, u1.n_events_30d) == (2, 2, 0, 1)
    assert u1.n_purchase == 0 and u1.n_play == 0
    assert u1.recency_days == pytest.approx(13.0, abs=1e-4)
    assert u1.recent_items == '["i1"]'
    u2 = _row(built[0], C.user, "u2", CUT)
    assert (u2.n_events, u2.n_click) == (1, 0)


def test_item_features(built):
    items = built[1]
    i1, i2, i3 = (_row(items, C.item, i, END) for i in ("i1", "i2", "i3"))
    assert (i1.pop_all, i1.pop_7d, i1.pop_30d, i1.unique_users, i1.category) == (2, 0, 1, 1, "A")
    assert (i2.pop_all, i2.pop_7d, i2.conversion_rate) == (2, 2, 1.0)
    assert (i3.pop_all, i3.pop_7d, i3.unique_users, i3.category) == (4, 3, 2, "B")
    assert i3.conversion_rate == 0.0
    c3 = _row(items, C.item, "i3", CUT)
    assert (c3.pop_all, c3.unique_users) == (1, 1)


def test_windows_follow_params(tmp_path, params):
    p = params.model_copy(update={"features": FeatureParams(windows_days=(3,), top_categories=1)})
    users, items = build(_validated(tmp_path, _events()), p)
    assert "n_events_3d" in users and "n_view_3d" in users and "pop_3d" in items
    assert "n_events_7d" not in users and "top_category_2" not in users
    assert _row(users, C.user, "u1", END).n_events_3d == 3  # T0-2d, T0-1d, T0
    assert features.user_feature_columns(p)[:2] == ["n_events", "n_events_3d"]


def _good_then(tmp_path, params, corrupt) -> tuple[Path, dict[str, bytes]]:
    val = _validated(tmp_path, _events())
    out = tmp_path / "feature_data"
    features.write(val, out, params)
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    corrupt(val)
    return out, before


@pytest.mark.parametrize("case, message", [
    ("empty", "empty"),
    ("unknown_users", "known user"),
    ("corrupted", "cannot"),
    ("missing", "missing"),
])
def test_bad_batch_keeps_previous_features(tmp_path, params, case, message):
    def corrupt(val: Path) -> None:
        f = val / "events.parquet"
        if case == "empty":
            _events().iloc[0:0].to_parquet(f, index=False)
        elif case == "unknown_users":
            _events().assign(**{C.user: None}).to_parquet(f, index=False)
        elif case == "corrupted":
            f.write_bytes(b"PAR1 this is not parquet" * 10)
        else:
            f.unlink()

    out, before = _good_then(tmp_path, params, corrupt)
    with pytest.raises(DataError, match=message):
        features.write(tmp_path / "validated", out, params)
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before  # untouched, no temp left


def test_features_as_of_matches_stage_sql(tmp_path, params):
    """The push path (one as-of time, chosen users) gives the stage's numbers."""
    val = _validated(tmp_path, _events())
    con = features.connect(params)
    features.open_events(con, val)
    got = features.features_as_of(con, ["u1"], END.to_pydatetime(), params)
    users, _ = build(val, params)
    want = users[(users[C.user] == "u1") & (users[C.ts] == END)]
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True),
                                  check_dtype=False)
    # from a relation holding only some users' events (the replay's cold users): the same row
    con.execute(f"CREATE TEMP TABLE some_users AS SELECT * FROM ev WHERE {C.user} = 'u1'")
    again = features.features_as_of(con, ["u1"], END.to_pydatetime(), params, "some_users")
    pd.testing.assert_frame_equal(again, got)


def _reference(ev: pd.DataFrame, cats: dict, params, at: pd.Timestamp) -> pd.DataFrame:
    """The user features of one snapshot the slow, obvious way (pandas), for comparison."""
    f = params.features
    rows = []
    for u, g in ev[ev[C.ts] < at].groupby(C.user):
        age = at - g[C.ts]
        r = {C.user: u, "n_events": len(g)}
        for d in f.windows_days:
            r[f"n_events_{d}d"] = int((age <= pd.Timedelta(days=d)).sum())
        for t in params.event_types:
            gt = g[C.event] == t
            r[f"n_{t}"] = int(gt.sum())
            for d in f.windows_days:
                r[f"n_{t}_{d}d"] = int((gt & (age <= pd.Timedelta(days=d))).sum())
        last = g.groupby(C.item)[C.ts].max().reset_index()
        last = last.sort_values([C.ts, C.item], ascending=[False, True])
        r["n_items"] = len(last)
        r["recent_items"] = encode_recent(last[C.item].head(f.recent_items).tolist())
        cat = g[C.item].map(cats).value_counts(dropna=False).rename("n").reset_index()
        cat.columns = ["c", "n"]
        cat["null"] = cat["c"].isna()
        cat = cat.sort_values(["n", "null", "c"], ascending=[False, True, True])
        for i in range(f.top_categories):
            sfx = "" if i == 0 else f"_{i + 1}"
            c = cat["c"].iloc[i] if i < len(cat) else None
            r[f"top_category{sfx}"] = None if pd.isna(c) else c
            r[f"top_category{sfx}_share"] = (cat["n"].iloc[i] if i < len(cat) else 0) / len(g)
        rows.append(r)
    return pd.DataFrame(rows)


@pytest.mark.parametrize("recent, top", [(3, 2), (0, 1)])
def test_random_events_match_a_pandas_reference(tmp_path, params, recent, top):
    """Random events on whole days (many timestamp ties), some items without a category:
    every snapshot's counts, windows, top categories and recent items (ties broken by id)
    equal a direct pandas computation."""
    import numpy as np

    rng = np.random.default_rng(7)
    n = 600
    ids = [f"i{i:02d}" + (',x"é' if i % 7 == 0 else "") for i in range(25)]  # ids with commas
    ev = pd.DataFrame({
        C.user: rng.choice([f"u{i}" for i in range(12)], n),
        C.item: rng.choice(ids, n),
        C.event: rng.choice(list(params.event_types), n),
        C.ts: T0 - pd.to_timedelta(rng.integers(0, 45, n), unit="D"),
        C.value: rng.random(n),
    })
    ev.loc[0, C.ts] = T0
    cats = {ids[i]: "AB"[i % 2] for i in range(20)}  # i20..i24: no category
    d = tmp_path / "validated"
    d.mkdir()
    ev.to_parquet(d / "events.parquet", index=False)
    pd.DataFrame({C.item: list(cats), C.category: list(cats.values())}).to_parquet(
        d / "items.parquet", index=False)
    p = params.model_copy(update={"features": FeatureParams(recent_items=recent,
                                                            top_categories=top)})
    users, _ = build(d, p)
    for at in (CUT, END):
        want = _reference(ev, cats, p, at)
        got = users[users[C.ts] == at][list(want.columns)].reset_index(drop=True)
        pd.testing.assert_frame_equal(got, want, check_dtype=False)
        if recent:
            assert any(',x"é' in i for r in got[F.recent_items] for i in decode_recent(r))


def test_wide_sort_key_gives_the_same_features(tmp_path, params):
    """The HUGEINT recent-items key (for very long spans × many items) orders the same."""
    val = _validated(tmp_path, _events())
    con = features.connect(params)
    features.open_events(con, val)
    times = features.snapshot_times(con, "ev", params)
    features.make_pairs(con, "ev", times)
    narrow, wide = (con.sql(features.user_features_sql("ev", params, times, "pairs", w)).df()
                    for w in (False, True))
    pd.testing.assert_frame_equal(narrow, wide)
    assert narrow[C.user].tolist() == ["u1", "u2", "u1", "u2"]


def test_seen_items_are_every_item_before_the_snapshot(built):
    """The seen set serving excludes: every item with an event before the snapshot, sorted."""
    assert decode_recent(_row(built[0], C.user, "u1", END)[F.seen_items]) == ["i1", "i2", "i3"]
    assert decode_recent(_row(built[0], C.user, "u1", CUT)[F.seen_items]) == ["i1"]
    assert decode_recent(_row(built[0], C.user, "u2", END)[F.seen_items]) == ["i3"]


def test_repeatable_event_types_stay_out_of_the_seen_set(tmp_path, params):
    """With plays repeatable, u1's played-only item i3 may be recommended again; u2 clicked
    i3, so it stays seen."""
    p = params.model_copy(update={"features": params.features.model_copy(
        update={"repeatable_events": ("play",)})})
    users, _ = build(_validated(tmp_path, _events()), p)
    assert decode_recent(_row(users, C.user, "u1", END)[F.seen_items]) == ["i1", "i2"]
    assert decode_recent(_row(users, C.user, "u2", END)[F.seen_items]) == ["i3"]
    assert decode_recent(_row(users, C.user, "u1", END)[F.recent_items])[0] == "i3"  # history keeps it
