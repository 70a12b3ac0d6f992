"""Nothing stale online (issue 12): the faults that made serving disagree with training.

Each test ran red on the watermark materialization it replaces:

* a rebuild of the features with the same snapshot times (a late landing file, a change of
  ``features.recent_items``, a re-ingest with another event mapping) wrote 0 rows, so serving
  kept the old values while training saw the new ones;
* a backfill or materialization put a user's older snapshot over the row pushed since;
* an entity gone from the features stayed online;
* ``recent_items`` joined with commas never excluded an item id containing a comma;
* a push or a backfill rewrote DVC outs/deps, so ``dvc status`` called training stale.

Real DuckDB, Feast, SQLite and a real redis-server (started and stopped by the fixtures).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.columns import Columns as C
from pipeline.columns import Feast
from pipeline.columns import Features as F
from pipeline.config import FeatureParams, Paths
from pipeline.feature_store import planning, store
from pipeline.features import push, snapshots
from tests.conftest import clone_built, sh
from tests.helpers import online_users
from tests.integration import test_feature_store as fs_tests
from tests.integration.test_feature_store import _assert_same, _serving_cols

pytestmark = pytest.mark.integration
# the feature-store fixtures: tiny synthetic events with built features, SQLite / Redis copies
base, params, proj, redis_url = fs_tests.base, fs_tests.params, fs_tests.proj, fs_tests.redis_url


# --- helpers ---------------------------------------------------------------------------------

def _latest(paths: Paths, view: str) -> pd.DataFrame:
    """The newest offline row per entity of ``view`` (what the online store must hold)."""
    file, key = Feast.VIEWS[view]
    df = pd.read_parquet(paths.feature_data / file)
    return df.sort_values(C.ts).groupby(key).tail(1).sort_values(key).reset_index(drop=True)


def _online_items(fs, items: list[str]) -> pd.DataFrame:
    refs = [f"{Feast.item_view}:{f.name}" for f in fs.get_feature_view(Feast.item_view).features]
    out = fs.get_online_features(features=refs, entity_rows=[{C.item: i} for i in items]).to_dict()
    return pd.DataFrame(out)


def _assert_online_is_offline(paths: Paths, online: str | None) -> None:
    """Every serving column of every user, every item feature of every item: online = the
    newest offline row."""
    fs = store.open_store(paths, online)
    users = _latest(paths, Feast.user_view)
    cols = _serving_cols(fs)
    _assert_same(online_users(fs, users[C.user].tolist()), users, cols)
    items = _latest(paths, Feast.item_view)
    got = _online_items(fs, items[C.item].tolist())
    icols = [f.name for f in fs.get_feature_view(Feast.item_view).features]
    _assert_same(got.rename(columns={C.item: C.user}), items.rename(columns={C.item: C.user}),
                 icols)


def _changed(old: pd.DataFrame, new: pd.DataFrame, key: str) -> dict[str, int]:
    """new / changed / unchanged / removed entities between two sets of newest rows."""
    cols = [c for c in new.columns if c != key]
    m = old.merge(new, on=key, how="outer", suffixes=("_o", "_n"), indicator=True)
    both = m[m["_merge"] == "both"]
    diff = np.zeros(len(both), dtype=bool)
    for c in cols:
        a, b = both[f"{c}_o"], both[f"{c}_n"]
        diff |= ~((a == b) | (a.isna() & b.isna())).to_numpy()
    return {"new": int((m["_merge"] == "right_only").sum()), "changed": int(diff.sum()),
            "unchanged": int((~diff).sum()), "removed": int((m["_merge"] == "left_only").sum())}


def _expected(before: dict[str, pd.DataFrame], paths: Paths) -> dict[str, int]:
    out = {"new": 0, "changed": 0, "unchanged": 0, "removed": 0}
    for view, (_, key) in Feast.VIEWS.items():
        for k, v in _changed(before[view], _latest(paths, view), key).items():
            out[k] += v
    return out


def _events(paths: Paths) -> pd.DataFrame:
    return pd.read_parquet(paths.validated_events)


def _late_file(paths: Paths, params) -> None:
    """(a) a late landing file: purchases whose times all precede the newest event."""
    ev = _events(paths)
    late = ev.sample(300, random_state=7).assign(**{C.event: "purchase", C.value: np.nan})
    late[C.ts] = late[C.ts] - pd.Timedelta(hours=1)
    assert late[C.ts].max() < ev[C.ts].max()
    pd.concat([ev, late]).to_parquet(paths.validated_events, index=False)
    snapshots.write(paths.validated, paths.feature_data, params)


def _recent_items_3(paths: Paths, params) -> None:
    """(b) ``features.recent_items: 3`` (was 50): same events, same snapshot times."""
    p = params.model_copy(update={"features": FeatureParams(
        **{**params.features.model_dump(), "recent_items": 3})})
    snapshots.write(paths.validated, paths.feature_data, p)


def _remapped(paths: Paths, params) -> None:
    """(c) a re-ingest with another event mapping: the source's purchase name now maps to
    add_to_cart (simulated by rewriting the validated events)."""
    ev = _events(paths)
    assert (ev[C.event] == "purchase").any()
    ev[C.event] = ev[C.event].replace({"purchase": "add_to_cart"})
    ev.to_parquet(paths.validated_events, index=False)
    snapshots.write(paths.validated, paths.feature_data, params)


def _fresh(user: str, items: list[str], event: str = "click") -> pd.DataFrame:
    now = pd.Timestamp.now(tz="UTC")
    return pd.DataFrame({C.user: [user] * len(items), C.item: items, C.event: [event] * len(items),
                         C.value: [None] * len(items),
                         C.ts: [now - pd.Timedelta(minutes=len(items) - i)
                                for i in range(len(items))]})


# --- 1: online = offline after a rebuild with the same snapshot times ------------------------

# every scenario on SQLite; on Redis the one that matters there (every row changes at the same
# timestamps, which Feast's Redis rule "skip unless newer" would never write)
@pytest.mark.parametrize(("proj", "rebuild"), [
    ("sqlite", _late_file), ("sqlite", _recent_items_3), ("sqlite", _remapped),
    ("redis", _recent_items_3)], indirect=["proj"],
    ids=["sqlite-late-file", "sqlite-recent-items-3", "sqlite-new-event-mapping",
         "redis-recent-items-3"])
def test_online_equals_offline_after_a_rebuild(proj, params, rebuild):
    paths, online = proj
    planning.materialize(paths, online)
    before = {v: _latest(paths, v) for v in Feast.VIEWS}
    times = sorted(pd.read_parquet(paths.user_features)[C.ts].unique())
    rebuild(paths, params)
    assert sorted(pd.read_parquet(paths.user_features)[C.ts].unique()) == times  # same snapshots
    want = _expected(before, paths)
    assert want["changed"] > 0

    report = planning.materialize(paths, online)
    _assert_online_is_offline(paths, online)
    assert {k: report[k] for k in want} == want
    # only what changed was written; a second run writes nothing
    assert report["written"] == want["changed"] + want["new"]
    again = planning.materialize(paths, online)
    assert (again["written"], again["changed"], again["unchanged"]) == (
        0, 0, want["unchanged"] + want["changed"] + want["new"])


# --- 2: pushed (newer) rows survive backfill and materialize -----------------------------------

def test_pushed_rows_survive_backfill_and_materialize(proj, params):
    paths, online = proj
    planning.materialize(paths, online)
    fs = store.open_store(paths, online)
    off = _latest(paths, Feast.user_view).set_index(C.user)
    who = off.index[5]
    push.push_events(params, paths, _fresh(who, ["i0000001", "i0000002", "i0000003"]), fs=fs)
    pushed = online_users(fs, [who])
    assert pushed.iloc[0]["n_click"] == off.loc[who, "n_click"] + 3

    back = planning.backfill(paths, online=online)  # every row rewritten ... but never older
    cols = _serving_cols(fs)
    _assert_same(online_users(fs, [who]), pushed, cols)
    assert back["kept_newer"] == 1

    _recent_items_3(paths, params)  # every user's content changes, same snapshot times
    report = planning.materialize(paths, online)
    _assert_same(online_users(fs, [who]), pushed, cols)
    assert report["kept_newer"] == 1
    others = _latest(paths, Feast.user_view)
    others = others[others[C.user] != who]
    _assert_same(online_users(fs, others[C.user].tolist()), others, cols)


# --- 3: an entity that disappeared is removed online -----------------------------------------

def test_entities_gone_from_the_features_are_removed_online(proj, params):
    paths, online = proj
    planning.materialize(paths, online)
    fs = store.open_store(paths, online)
    push.push_events(params, paths, _fresh("pushed-only-user", ["i0000001"]), fs=fs)
    ev = _events(paths)
    newest = ev[C.ts].max()
    last_of = ev.groupby(C.user)[C.ts].max()
    gone_users = sorted(last_of[last_of < newest - pd.Timedelta(days=1)].index[:3])
    by_item = ev.groupby(C.item)[C.ts].max()
    gone_item = sorted(by_item[by_item < newest - pd.Timedelta(days=1)].index)[0]
    keep = ~ev[C.user].isin(gone_users) & (ev[C.item] != gone_item)
    ev[keep].to_parquet(paths.validated_events, index=False)
    before = {v: _latest(paths, v) for v in Feast.VIEWS}
    snapshots.write(paths.validated, paths.feature_data, params)
    want = _expected(before, paths)
    # the three users and the item, and any entity whose only events went with them
    left = ev[keep]
    assert want["removed"] == (len(set(ev[C.user]) - set(left[C.user]))
                               + len(set(ev[C.item]) - set(left[C.item]))) >= len(gone_users) + 1

    report = planning.materialize(paths, online)
    got = online_users(fs, [*gone_users, "pushed-only-user"])
    assert all(pd.isna(v) for c in _serving_cols(fs) for v in got[c][:-1])  # gone, not stale
    assert got["n_events"].iloc[-1] == 1  # pushed, never materialized: not touched
    assert _online_items(fs, [gone_item])["pop_all"].isna().all()
    _assert_online_is_offline(paths, online)
    assert report["removed"] == want["removed"]


# --- 4: an item id with a comma is excluded at serving ----------------------------------------

def test_an_item_id_with_a_comma_is_excluded_at_serving(base, params, tmp_path):
    from pipeline.models.popularity import Popularity
    from pipeline.registry import versions
    from pipeline.serving.recommender import Recommender

    root = tmp_path / "comma"
    shutil.copytree(base, root)
    paths = Paths(root)
    ev = _events(paths)
    top = ev.groupby(C.item)[C.user].nunique().idxmax()
    odd = f"{top},x"  # the most popular item, now with a comma in its id
    ev[C.item] = ev[C.item].replace({top: odd})
    ev.to_parquet(paths.validated_events, index=False)
    items = pd.read_parquet(paths.validated_items)
    items[C.item] = items[C.item].replace({top: odd})
    items.to_parquet(paths.validated_items, index=False)
    snapshots.write(paths.validated, paths.feature_data, params)
    planning.materialize(paths)

    model = Popularity().fit(ev[[C.user, C.item]].drop_duplicates())
    cand = tmp_path / "candidate"
    model.save(cand)
    versions.set_champion(paths.registry, versions.register(paths.registry, cand, {}), "test")
    rec = Recommender(params, paths)
    assert odd in rec.recommend("nobody-at-all", 5).items  # recommendable ...
    users = ev.loc[ev[C.item] == odd, C.user].unique()
    for u in sorted(users)[:5]:
        got = rec.recommend(u, 10)
        assert got.features_source == "online"
        assert odd not in got.items  # ... but never to a user who just saw it
    on = online_users(store.open_store(paths), sorted(users)[:5])[F.recent_items]
    assert all(odd in json.loads(r) for r in on)


# --- 5: a push or a backfill leaves DVC's pipeline up to date ---------------------------------

def test_push_and_backfill_leave_training_up_to_date(built_project, tmp_path):
    """Through the CLI on a project ``dvc repro`` built: a push, then a backfill. The pushed
    row is still online, and neither made DVC call a stage stale (the online store and the
    registry were outs/deps: training reran with no data change)."""
    root = clone_built(built_project, tmp_path / "p")
    p = Paths(root)
    who = sorted(pd.read_parquet(p.validated_events, columns=[C.user])[C.user].unique())[0]
    f = tmp_path / "fresh.csv"
    _fresh(who, ["i0000001", "i0000002"]).to_csv(f, index=False)
    sh(["recflow", "push-events", str(f)], root)
    fs = store.open_store(p)
    pushed = online_users(fs, [who])
    out = sh(["recflow", "backfill"], root).stdout
    _assert_same(online_users(fs, [who]), pushed, _serving_cols(fs))
    status = json.loads(sh(["dvc", "status", "--json"], root).stdout)
    assert not set(status) & {"materialize", "train", "evaluate", "promote"}, status
    for word in ("new=0", "changed=0", "unchanged=", "removed=0", "kept_newer=1"):
        assert word in out, out


@pytest.mark.parametrize("proj", ["redis"], indirect=True)
def test_the_materialization_record_is_deterministic_and_store_independent(proj, params):
    """The DVC out ``materialized.json`` depends on the offline content only: the same bytes
    after a rerun, a backfill or another online store (Redis, then SQLite); different after a
    content change."""
    paths, online = proj
    planning.materialize(paths, online)
    record = paths.materialized.read_bytes()
    planning.backfill(paths, online=online)
    planning.materialize(paths, online)
    assert paths.materialized.read_bytes() == record
    other = Path(str(paths.root) + "-fresh")
    shutil.copytree(paths.root, other)
    (Paths(other).materialized).unlink()
    shutil.rmtree(Paths(other).online_state, ignore_errors=True)
    Paths(other).online_db.unlink(missing_ok=True)
    planning.materialize(Paths(other), None)
    assert Paths(other).materialized.read_bytes() == record
    _recent_items_3(paths, params)
    planning.materialize(paths, online)
    assert paths.materialized.read_bytes() != record
