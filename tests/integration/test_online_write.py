"""The batched online writer against Feast's own materialize: same online bytes, same lookups
(SQLite and a real redis-server), a rerun that writes only the changed rows, and a failure
mid-write that leaves the previous online values (and the fingerprints)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.columns import Columns as C
from pipeline.columns import Feast
from pipeline.config import Paths
from pipeline.feature_store import planning, store, writer
from tests.helpers import online_users
from tests.integration.test_feature_store import base, params, redis_url  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration
USER_DB_TABLE = "recflow_user_activity"


@pytest.fixture(scope="module")
def odd_base(base, tmp_path_factory) -> Path:  # noqa: F811
    """``base`` with awkward values in the newest user snapshot: nulls in int / double / string
    columns, NaN, empty strings, a long unicode string."""
    root = tmp_path_factory.mktemp("ow") / "odd"
    shutil.copytree(base, root)
    f = Paths(root).feature_data / Feast.user_file
    df = pd.read_parquet(f)
    last = df.index[df[C.ts] == df[C.ts].max()][:6]
    df["n_view"] = df["n_view"].astype("Int64")
    df.loc[last[0], ["n_view", "mean_watch", "top_category"]] = [pd.NA, np.nan, None]
    df.loc[last[1], ["top_category", "recent_items"]] = ["", ""]
    df.loc[last[2], "recent_items"] = "é中," * 60
    df.loc[last[3], "purchase_rate"] = -0.0
    df.to_parquet(f, index=False)
    return root


def _copy(src: Path, dst: Path) -> Paths:
    shutil.copytree(src, dst)
    return Paths(dst)


def _window(paths: Paths, view: str) -> tuple:
    """[first row, newest row] of the view's feature file, as Feast's [start, end)."""
    ts = pd.read_parquet(paths.feature_data / Feast.VIEWS[view][0])[C.ts]
    return ts.min().to_pydatetime(), ts.max().to_pydatetime() + pd.Timedelta(microseconds=1)


def _feast_materialize(paths: Paths, online: str | None) -> None:
    fs = store.open_store(paths, online)
    store.apply(fs, paths.feature_repo)
    for view in Feast.VIEWS:
        store.materialize(fs, *_window(paths, view), [view])


def _sqlite_dump(paths: Paths) -> dict[str, list]:
    con = sqlite3.connect(paths.feature_data / "online_store.db")
    try:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY entity_key, feature_name").fetchall()
                for t in (USER_DB_TABLE, "recflow_item_stats")}
    finally:
        con.close()


def _redis_dump(url: str) -> dict[bytes, dict[bytes, bytes]]:
    import redis

    r = redis.Redis.from_url(url)  # Feast's hashes; not the writer's token hash
    return {k: r.hgetall(k) for k in r.scan_iter(count=1000)
            if not k.startswith(writer.TOKEN_KEY)}


def _lookup(paths: Paths, online: str | None, users: list[str], items: list[str]) -> tuple:
    fs = store.open_store(paths, online)
    u = online_users(fs, users)
    refs = [f"item_stats:{f.name}" for f in fs.get_feature_view("item_stats").features]
    i = fs.get_online_features(features=refs, entity_rows=[{C.item: x} for x in items]).to_dict()
    return u.to_dict("list"), i


def _sample(paths: Paths) -> tuple[list[str], list[str]]:
    u = pd.read_parquet(paths.feature_data / Feast.user_file)
    last = u[u[C.ts] == u[C.ts].max()]
    items = pd.read_parquet(paths.feature_data / Feast.item_file)[C.item].unique()
    return ([*last[C.user].iloc[:6], *last[C.user].sample(10, random_state=0), "nobody"],
            [*items[:10], "no-such-item"])


def _same(a, b) -> bool:
    """Lookup results equal, NaN == NaN (numeric NaN and None both mean null to Feast)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if a is None or b is None or (isinstance(a, float) and np.isnan(a)):
        return (a is None or pd.isna(a)) and (b is None or pd.isna(b))
    return a == b and str(a) == str(b)  # str: -0.0 vs 0.0


def test_sqlite_rows_and_lookups_equal_feast_materialize(odd_base, tmp_path):
    ours, theirs = _copy(odd_base, tmp_path / "ours"), _copy(odd_base, tmp_path / "feast")
    report = planning.materialize(ours)
    assert {v["writer"] for v in report["views"]} == {"recflow"}
    _feast_materialize(theirs, None)
    a, b = _sqlite_dump(ours), _sqlite_dump(theirs)
    assert len(a[USER_DB_TABLE]) > 1000 and a == b  # every column, byte for byte
    users, items = _sample(ours)
    got, want = _lookup(ours, None, users, items), _lookup(theirs, None, users, items)
    assert _same(got, want)
    u = got[0]
    assert pd.isna(u["n_view"][0]) and pd.isna(u["mean_watch"][0]) and u["top_category"][0] is None
    assert u["top_category"][1] == "" and u["recent_items"][2] == "é中," * 60
    assert all(pd.isna(u[c][-1]) for c in ("n_events", "mean_watch", "top_category"))  # nobody
    con = sqlite3.connect(ours.feature_data / "online_store.db")
    assert con.execute("SELECT count(*) FROM sqlite_master WHERE name = ?",
                       (f"{USER_DB_TABLE}_ek",)).fetchone()[0] == 1  # index rebuilt
    con.close()


def test_redis_hashes_and_lookups_equal_feast_materialize(odd_base, tmp_path, redis_url):  # noqa: F811
    import redis

    ours, theirs = _copy(odd_base, tmp_path / "ours"), _copy(odd_base, tmp_path / "feast")
    url_ours, url_feast = redis_url[:-1] + "1", redis_url[:-1] + "2"
    for u in (url_ours, url_feast):
        redis.Redis.from_url(u).flushdb()
    report = planning.materialize(ours, url_ours)
    assert {v["writer"] for v in report["views"]} == {"recflow"}
    _feast_materialize(theirs, url_feast)
    a, b = _redis_dump(url_ours), _redis_dump(url_feast)
    assert len(a) > 500 and a == b  # same keys, same fields, same bytes
    users, items = _sample(ours)
    assert _same(_lookup(ours, url_ours, users, items), _lookup(theirs, url_feast, users, items))

    # like Feast, a row older than the stored one is not written
    first_snapshot_end = _window(ours, "user_activity")[0] + pd.Timedelta(microseconds=1)
    old = planning.backfill(ours, end=first_snapshot_end, online=url_ours)
    assert old["views"][0]["written"] == 0 and old["views"][0]["kept_newer"] > 0
    assert _redis_dump(url_ours) == a


def _append_newer(paths: Paths, users: list[str] | None, bump: int) -> pd.DataFrame:
    """Append user-feature rows one day after the newest (for ``users``; None = all of them)."""
    f = paths.feature_data / Feast.user_file
    df = pd.read_parquet(f)
    last = df[df[C.ts] == df[C.ts].max()]
    if users is not None:
        last = last[last[C.user].isin(users)]
    new = last.assign(**{C.ts: last[C.ts] + pd.Timedelta(days=1),
                         "n_events": last["n_events"] + bump})
    pd.concat([df, new]).to_parquet(f, index=False)
    return new


@pytest.fixture(params=["sqlite", "redis"])
def online(request) -> str | None:
    if request.param == "sqlite":
        return None
    import redis

    url = request.getfixturevalue("redis_url")[:-1] + "3"
    redis.Redis.from_url(url).flushdb()
    return url


def _state(paths: Paths) -> dict[str, bytes]:
    """The materialization record and the fingerprint state, file by file."""
    files = [paths.materialized, *paths.online_state.rglob("*")]
    return {str(f): f.read_bytes() for f in files if f.is_file()}


def _dump(paths: Paths, online: str | None):
    return _redis_dump(online) if online else _sqlite_dump(paths)


def test_a_rerun_writes_only_the_changed_rows(odd_base, tmp_path, online):
    paths = _copy(odd_base, tmp_path / "p")
    planning.materialize(paths, online)
    before = _dump(paths, online)
    users, items = _sample(paths)
    moved = users[:3]
    _append_newer(paths, moved, bump=1000)
    again = planning.materialize(paths, online)
    assert again["mode"] == "incremental"
    assert [(v["view"], v["written"], v["changed"]) for v in again["views"]] == [
        ("user_activity", 3, 3), ("item_stats", 0, 0), ("item_attributes", 0, 0),
        ("user_attributes", 0, 0)]
    after = _dump(paths, online)
    changed = (sum(x != y for x, y in zip(before[USER_DB_TABLE], after[USER_DB_TABLE],
                                          strict=True))
               if not online else sum(before[k] != after[k] for k in before))
    # SQLite: n_events and the two timestamps of 3 users → one row per feature of 3 users
    # (event_ts changes in every row); Redis: 3 hashes
    n_feat = len(store.open_store(paths, online).get_feature_view("user_activity").features)
    assert changed == (3 * n_feat if not online else 3)
    if not online:
        assert before["recflow_item_stats"] == after["recflow_item_stats"]
    got = _lookup(paths, online, users, items)[0]
    old = pd.read_parquet(odd_base / "feature_repo/data" / Feast.user_file)
    old = old[old[C.ts] == old[C.ts].max()].set_index(C.user)["n_events"]
    assert got["n_events"][:3] == [old[u] + 1000 for u in moved]
    assert got["n_events"][3:-1] == [old[u] for u in users[3:-1]]


def test_failure_mid_write_keeps_previous_online_values(odd_base, tmp_path, online, monkeypatch):
    paths = _copy(odd_base, tmp_path / "p")
    planning.materialize(paths, online)
    marks = _state(paths)
    before = _dump(paths, online)
    users, items = _sample(paths)
    looked = _lookup(paths, online, users, items)
    _append_newer(paths, None, bump=1000)  # every user changes

    monkeypatch.setattr(writer, "CHUNK", 50)  # several chunks; fail in the third
    calls = {"n": 0}
    if online:
        real = writer._send_chunk

        def boom(conn, commands):
            calls["n"] += 1
            real(conn, commands)  # the chunk IS written, then the failure
            if calls["n"] == 3:
                raise ConnectionError("injected failure after a written chunk")
        monkeypatch.setattr(writer, "_send_chunk", boom)
    else:
        real_params = writer._sqlite_params

        def boom(batch, adapt):  # two chunks written in the transaction, the third fails
            calls["n"] += 1
            if calls["n"] == 3:
                raise ConnectionError("injected failure in the third chunk")
            return real_params(batch, adapt)
        monkeypatch.setattr(writer, "_sqlite_params", boom)

    with pytest.raises(ConnectionError, match="injected"):
        planning.materialize(paths, online)
    assert calls["n"] == 3
    assert _dump(paths, online) == before  # every byte as before, the index too (SQLite)
    assert _same(_lookup(paths, online, users, items), looked)
    assert _state(paths) == marks  # record, fingerprints and tokens as before, no temp files
    if not online:
        con = sqlite3.connect(paths.feature_data / "online_store.db")
        assert con.execute("SELECT count(*) FROM sqlite_master WHERE name = ?",
                           (f"{USER_DB_TABLE}_ek",)).fetchone()[0] == 1
        con.close()

    monkeypatch.undo()  # the next run writes the new values
    planning.materialize(paths, online)
    got = _lookup(paths, online, users, items)[0]["n_events"]
    assert got[:-1] == [n + 1000 for n in looked[0]["n_events"][:-1]]
