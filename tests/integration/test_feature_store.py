"""Real Feast (DuckDB offline) against SQLite and a real redis-server: apply, materialize
(first / incremental / backfill), online lookup, unknown entities, push, skew, point-in-time."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.columns import Columns as C
from pipeline.columns import Feast
from pipeline.columns import Features as F
from pipeline.config import Paths, load_params
from pipeline.data.synthetic import attributes, generate
from pipeline.errors import DataError
from pipeline.feature_store import planning, store, writer
from pipeline.feature_store.reader import OnlineReader
from pipeline.features import push, recent, snapshots
from pipeline.models.tokens import session_tokens, user_tokens
from tests.conftest import ROOT, TINY
from tests.helpers import online_users, online_users_sdk
from tests.redis_server import redis_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def params():
    p = load_params(ROOT / "params.yaml")
    return p.model_copy(update={"synthetic": p.synthetic.model_copy(update=TINY["synthetic"])})


def _skeleton(root: Path) -> Paths:
    (root / "feature_repo").mkdir(parents=True)
    for f in ("definitions.py", "feature_store.yaml"):
        shutil.copy(ROOT / "feature_repo" / f, root / "feature_repo" / f)
    return Paths(root)


@pytest.fixture(scope="module")
def base(tmp_path_factory, params) -> Path:
    """A project with validated tiny synthetic events and built features (no store yet)."""
    paths = _skeleton(tmp_path_factory.mktemp("fs") / "base")
    events, items = generate(params.synthetic)
    paths.validated.mkdir(parents=True)
    events.to_parquet(paths.validated / "events.parquet", index=False)
    items.to_parquet(paths.validated / "items.parquet", index=False)
    for kind, table in zip(("items", "users"), attributes(params.synthetic), strict=True):
        table.to_parquet(paths.validated_attributes(kind), index=False)
    snapshots.write(paths.validated, paths.feature_data, params)
    return paths.root


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(params=["sqlite", "redis"])
def proj(request, base, tmp_path) -> tuple[Paths, str | None]:
    """A fresh copy of ``base`` and the online-store setting (None = the yaml's SQLite)."""
    root = tmp_path / "proj"
    shutil.copytree(base, root)
    online = None
    if request.param == "redis":
        import redis

        online = request.getfixturevalue("redis_url")
        redis.Redis.from_url(online).flushdb()
    return Paths(root), online


def _latest(paths: Paths, file: str) -> pd.DataFrame:
    df = pd.read_parquet(paths.feature_data / file)
    return df[df[C.ts] == df[C.ts].max()]


def _attribute_rows(paths: Paths) -> int:
    return sum(len(pd.read_parquet(paths.attribute_features(k))) for k in ("items", "users"))


def _serving_cols(fs) -> list[str]:
    return [r.split(":")[1] for r in store.service_refs(fs, Feast.serving_service, "user_activity")]


def _assert_same(a: pd.DataFrame, b: pd.DataFrame, cols: list[str]) -> None:
    a, b = a.set_index(C.user).sort_index(), b.set_index(C.user).sort_index()
    assert list(a.index) == list(b.index)
    for c in cols:
        x, y = a[c], b[c]
        if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y):
            np.testing.assert_allclose(x.astype(float), y.astype(float), rtol=1e-9, err_msg=c)
        else:
            assert [None if pd.isna(v) else v for v in x] == [None if pd.isna(v) else v for v in y], c


def test_applied_schema_holds_every_column_the_code_reads(base, tmp_path):
    """definitions.py infers its schemas from the feature files; the columns tokens, serving
    and evaluation read (pipeline.columns.Features) must all be in the applied views, the
    serving service must serve every user column, and the names must be Feast's constants."""
    from pipeline.columns import Features

    root = tmp_path / "proj"
    shutil.copytree(base, root)
    paths = Paths(root)
    fs = store.open_store(paths, "sqlite")
    names = store.apply(fs, paths.feature_repo)
    assert {Feast.user_view, Feast.item_view, Feast.user_push, Feast.training_service,
            Feast.serving_service, Feast.user_source, Feast.item_source} <= set(names)
    user_cols = {f.name for f in fs.get_feature_view(Feast.user_view).features}
    item_cols = {f.name for f in fs.get_feature_view(Feast.item_view).features}
    assert set(Features.USER) <= user_cols
    assert set(Features.ITEM) <= item_cols
    assert set(Features.USER) <= set(_serving_cols(fs))
    params = load_params(ROOT / "params.yaml")
    assert set(snapshots.user_feature_columns(params)) <= user_cols
    views = {p.name for p in fs.get_feature_service(Feast.training_service).feature_view_projections}
    assert views == {Feast.user_view, Feast.item_view, Feast.item_attr_view, Feast.user_attr_view}
    serving = {p.name for p in fs.get_feature_service(Feast.serving_service).feature_view_projections}
    assert serving == {Feast.user_view, Feast.user_attr_view}


def test_materialize_then_lookup_and_unknown_entities(proj):
    paths, online = proj
    report = planning.materialize(paths, online)
    users, items = _latest(paths, Feast.user_file), _latest(paths, Feast.item_file)
    assert report["mode"] == "first"
    assert report["entity_rows"] == len(users) + len(items) + _attribute_rows(paths)
    assert report["online_store"].startswith("redis" if online else "sqlite")
    if not online:  # the store was created with the writer's page size, not SQLite's default
        import sqlite3

        con = sqlite3.connect(paths.feature_data / "online_store.db")
        assert con.execute("PRAGMA page_size").fetchone()[0] == writer.SQLITE_PAGE_SIZE
        con.close()

    fs = store.open_store(paths, online)
    sample = sorted(users[C.user].sample(10, random_state=0))
    got = online_users(fs, [*sample, "nobody"])
    cols = _serving_cols(fs)
    _assert_same(got[got[C.user] != "nobody"], users[users[C.user].isin(sample)], cols)
    unknown = got[got[C.user] == "nobody"].iloc[0]
    assert all(pd.isna(unknown[c]) for c in cols)  # nulls, no exception

    it = items.iloc[0]
    out = fs.get_online_features(features=["item_stats:pop_all", "item_stats:category"],
                                 entity_rows=[{C.item: it[C.item]}, {C.item: "no-such-item"}]).to_dict()
    assert out["pop_all"] == [it.pop_all, None] and out["category"] == [it.category, None]


def test_serving_reader_equals_feast_sdk(proj, params):
    """The serving path reads Feast's online rows itself; it must answer what the SDK answers,
    for known, unknown and repeated users, and after a push."""
    paths, online = proj
    planning.materialize(paths, online)
    fs = store.open_store(paths, online)
    users = sorted(_latest(paths, Feast.user_file)[C.user].sample(25, random_state=3))
    asked = [*users, "nobody", users[0]]
    reader = OnlineReader(fs, Feast.serving_service)
    assert reader.read(asked) == online_users_sdk(fs, asked)

    before = online_users_sdk(fs, [users[1]])["n_events"][0]
    fresh = pd.DataFrame({C.user: [users[1]] * 2, C.item: ["i0000001", "i0000002"],
                          C.event: ["view", "click"], C.value: [None, None],
                          C.ts: [pd.Timestamp.now(tz="UTC") - pd.Timedelta(minutes=1)] * 2})
    push.push_events(params, paths, fresh, fs=fs)
    after = reader.read(users[:2])
    assert after == online_users_sdk(fs, users[:2])
    assert after["n_events"][1] == before + 2


def test_materialization_writes_only_what_changed(proj, params):
    paths, online = proj
    first = planning.materialize(paths, online)
    assert first["mode"] == "first" and first["new"] == first["written"] > 0
    again = planning.materialize(paths, online)
    assert again["mode"] == "incremental" and again["written"] == 0
    assert again["unchanged"] == first["written"] and again["changed"] == again["new"] == 0

    # new events land one day after the last one; features are rebuilt: every newest row moves
    ev = pd.read_parquet(paths.validated / "events.parquet")
    last = ev[C.ts].max()
    new = ev.sample(200, random_state=1).assign(**{C.ts: last + pd.Timedelta(days=1)})
    pd.concat([ev, new]).to_parquet(paths.validated / "events.parquet", index=False)
    snapshots.write(paths.validated, paths.feature_data, params)
    third = planning.materialize(paths, online)
    users = _latest(paths, Feast.user_file)
    assert third["mode"] == "incremental"
    assert third["written"] == third["changed"] == len(users) + len(_latest(paths, Feast.item_file))

    fs = store.open_store(paths, online)
    moved = sorted(new[C.user].unique())[:5]
    _assert_same(online_users(fs, moved), users[users[C.user].isin(moved)], _serving_cols(fs))

    back = planning.backfill(paths, online=online)  # rewrites the (unchanged) attributes too
    assert back["mode"] == "backfill"
    assert back["written"] == third["written"] + _attribute_rows(paths)
    # an old window (the first snapshot only) is older than every online row: nothing written
    f = pd.read_parquet(paths.feature_data / Feast.user_file)
    first_snap = f[C.ts].min().to_pydatetime()
    old = planning.backfill(paths, end=first_snap + timedelta(microseconds=1), online=online)
    n_old = int((f[C.ts] == f[C.ts].min()).sum())
    assert old["views"][0]["written"] == 0 and old["views"][0]["kept_newer"] == n_old
    _assert_same(online_users(fs, moved), users[users[C.user].isin(moved)], _serving_cols(fs))


def test_pushed_events_show_up_online(proj, params):
    paths, online = proj
    planning.materialize(paths, online)
    fs = store.open_store(paths, online)
    users = _latest(paths, Feast.user_file).set_index(C.user)
    who = users.index[3]
    now = pd.Timestamp.now(tz="UTC")
    fresh = pd.DataFrame({
        C.user: [who, who, who, "brand-new-user"],
        C.item: ["i0000001", "i0000002", "i0000001", "i0000003"],
        C.event: ["view", "click", "purchase", "play"],
        C.ts: [now - pd.Timedelta(minutes=m) for m in (3, 2, 1, 1)],
        C.value: [None, None, None, 0.8],
    })
    summary = push.push_events(params, paths, fresh, fs=fs)
    assert summary["accepted"] == 4 and summary["users_pushed"] == 2
    got = online_users(fs, [who, "brand-new-user"]).set_index(C.user)
    assert got.loc[who, "n_events"] == users.loc[who, "n_events"] + 3
    assert got.loc[who, "n_purchase_7d"] == 1
    assert recent.decode(got.loc[who, "recent_items"])[:2] == ["i0000001", "i0000002"]
    assert got.loc["brand-new-user", "n_events"] == 1
    assert got.loc["brand-new-user", "mean_watch"] == pytest.approx(0.8)

    # a second push still counts the first batch; a refused batch pushes nothing
    more = fresh.iloc[:1].assign(**{C.ts: now - pd.Timedelta(seconds=10), C.event: "view"})
    push.push_events(params, paths, more, fs=fs)
    assert online_users(fs, [who]).iloc[0]["n_events"] == users.loc[who, "n_events"] + 4
    bad = fresh.assign(**{C.event: "teleport"})
    with pytest.raises(DataError):
        push.push_events(params, paths, bad, fs=fs)
    assert online_users(fs, [who]).iloc[0]["n_events"] == users.loc[who, "n_events"] + 4


def test_online_equals_offline_at_the_same_timestamp(proj):
    """No training/serving skew: serving features online == historical retrieval at the
    timestamp of the row the online store holds."""
    paths, online = proj
    planning.materialize(paths, online)
    fs = store.open_store(paths, online)
    users = _latest(paths, Feast.user_file)
    sample = sorted(users[C.user].sample(25, random_state=2))
    on = online_users(fs, sample)
    at = users[C.ts].iloc[0]
    off = store.historical(fs, pd.DataFrame({C.user: sample, C.ts: at}), Feast.serving_service)
    _assert_same(on, off, _serving_cols(fs))
    # ... and so are the tokens a model builds from them, attributes and session tokens
    # included: training reads the snapshot (historical), serving the online row
    feats = ("top_category", "activity", "recency", "country", "age_band")
    assert user_tokens(on, feats) == user_tokens(off, feats)
    assert any(t.startswith("country=") for t in user_tokens(on, feats)[sample[0]])
    items = pd.read_parquet(paths.validated / "items.parquet")
    imap = {i: [f"category={c}"] for i, c in zip(items[C.item], items[C.category], strict=True)}
    hist_on = recent.history(on[C.user], on[F.recent_items])
    hist_off = recent.history(off[C.user], off[F.recent_items])
    assert hist_on and session_tokens(hist_on, imap, 10) == session_tokens(hist_off, imap, 10)


def test_point_in_time_training_rows_never_see_the_future(base, tmp_path):
    """For interactions at many times, every returned feature was computed before the
    interaction: the count of earlier events bounds n_events, and rows before the first
    snapshot get nulls."""
    from pipeline.evaluation import trainset as train

    root = tmp_path / "pit"
    shutil.copytree(base, root)
    paths = Paths(root)
    fs = store.open_store(paths)
    store.apply(fs, paths.feature_repo)
    ev = pd.read_parquet(paths.validated / "events.parquet")
    snaps = sorted(pd.read_parquet(paths.feature_data / Feast.user_file)[C.ts].unique())
    rows = ev.sample(300, random_state=3)[[C.user, C.ts]].reset_index(drop=True)
    got = store.historical_view(fs, rows, Feast.user_view).merge(
        rows.assign(_i=range(len(rows))), on=[C.user, C.ts])
    assert len(got) == len(rows)
    for r in got.itertuples():
        mine = ev[ev[C.user] == r.user_id]
        before = [s for s in snaps if s <= r.event_timestamp]
        if not before:
            assert pd.isna(r.n_events)
            continue
        used = before[-1]  # the latest snapshot at or before the interaction
        n_before = (mine[C.ts] < used).sum()
        if n_before == 0:  # no activity before that snapshot: no row, nulls
            assert pd.isna(r.n_events)
            continue
        assert r.n_events == n_before
        assert r.n_events <= (mine[C.ts] < r.event_timestamp).sum()
    assert got["n_events"].notna().any() and got["n_events"].isna().any()

    cut = snaps[0].to_pydatetime()
    ids = sorted(ev[C.user].unique())[:20]
    pit = train.point_in_time(fs, ids, C.user, Feast.user_view, cut + timedelta(hours=1))
    want = ev[(ev[C.ts] < cut) & ev[C.user].isin(ids)].groupby(C.user).size()
    assert pit.set_index(C.user)["n_events"].dropna().astype(int).to_dict() == want.to_dict()
