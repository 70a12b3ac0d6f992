"""Cache-first serving: `recflow export --to-online-store` writes each user's top-k into the
Feast view ``user_recs``; with ``serving.cache_first`` the API answers from it while it was
computed by the champion from the user's current features, and computes otherwise. On the
shared built project (SQLite) and over a real Redis."""

from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from pipeline.columns import Columns as C
from pipeline.columns import Feast
from pipeline.config import Params, load_params, paths
from pipeline.feature_store import store
from pipeline.registry import versions as registry
from pipeline.serving.app import create_app
from pipeline.serving.export import export
from pipeline.serving.recommender import Recommender
from tests.conftest import clone_built, sh

pytestmark = pytest.mark.integration


def _params(root: Path, cache_first: bool) -> Params:
    params = load_params(paths(root).params)
    return params.model_copy(update={"serving": params.serving.model_copy(
        update={"cache_first": cache_first})})


def _users(root: Path, n: int) -> list[str]:
    ev = pd.read_parquet(root / "data/validated/events.parquet", columns=[C.user])
    return sorted(ev[C.user].unique())[:n]


def _ids(body: dict) -> list[str]:
    return [i["item_id"] for i in body["items"]]


def _cache_round_trip(proj: Path, online: str | None) -> None:
    """Export into the store, then: hits equal the computed answers; a push, a k above the
    exported one, a filter and a new champion are each computed, not served from the list."""
    p = paths(proj)
    users = _users(proj, 6)
    fs = store.open_store(p, online)
    r = export(_params(proj, False), p, 20, None, users,
               rec=Recommender(_params(proj, False), p, feature_store=fs), to_online_store=True)
    assert r["online_store"]["users"] == len(users) and r["online_store"]["view"] == Feast.recs_view
    with TestClient(create_app(proj, _params(proj, False))) as plain:
        want = {u: plain.get(f"/recommendations/{u}?k=10").json() for u in users}
    with TestClient(create_app(proj, _params(proj, True))) as c:
        for u in users:
            got = c.get(f"/recommendations/{u}?k=10").json()
            assert got["cached"] is True, u
            assert got["items"] == want[u]["items"] and got["model_version"] == want[u]["model_version"]
        u = users[0]
        assert c.get(f"/recommendations/{u}?k=30").json()["cached"] is False  # exported 20
        filt = c.get(f"/recommendations/{u}?k=10&exclude={want[u]['items'][0]['item_id']}").json()
        assert filt["cached"] is False and want[u]["items"][0]["item_id"] not in _ids(filt)
        batch = c.post("/recommendations:batch", json={"user_ids": users[:3], "k": 5}).json()
        assert [x["cached"] for x in batch["results"]] == [True] * 3
        assert [_ids(x) for x in batch["results"]] == [_ids(want[v])[:5] for v in users[:3]]
        metrics = c.get("/metrics").text
        assert 'recflow_cache_total{outcome="hit"}' in metrics

        # a pushed event changes the user's features: computed again, the item now seen
        target = want[u]["items"][0]["item_id"]
        pushed = c.post("/events", json={"events": [
            {"user_id": u, "item_id": target, "event_type": "purchase"}]})
        assert pushed.status_code == 200, pushed.text
        after = c.get(f"/recommendations/{u}?k=10").json()
        assert after["cached"] is False and target not in _ids(after)
        assert c.get(f"/recommendations/{users[1]}?k=10").json()["cached"] is True  # others kept

        # a new champion: every exported list is older than it
        new = registry.register(p.registry, registry.champion_dir(p.registry), {"note": "t"})
        registry.set_champion(p.registry, new, "cache test")
        assert c.post("/admin/reload").json()["model_version"] == new
        again = c.get(f"/recommendations/{users[1]}?k=10").json()
        assert again["cached"] is False and again["model_version"] == new


def test_cache_first_serves_the_export_while_it_is_current(built_project, tmp_path):
    _cache_round_trip(clone_built(built_project, tmp_path / "p"), None)


def test_cache_first_over_redis(built_project, tmp_path, monkeypatch):
    from pipeline.feature_store import planning
    from tests.redis_server import redis_server

    proj = clone_built(built_project, tmp_path / "p")
    with redis_server(tmp_path / "redis") as url:
        planning.materialize(paths(proj), url)
        monkeypatch.setenv("RECFLOW_ONLINE_STORE", url)
        _cache_round_trip(proj, url)


def test_cache_first_without_an_export_computes(built_project):
    """No export yet (the view applied by materialize, but empty): every list is computed."""
    u = _users(built_project, 1)[0]
    with TestClient(create_app(built_project, _params(built_project, True))) as c:
        got = c.get(f"/recommendations/{u}?k=10").json()
    assert got["cached"] is False and got["features_source"] == "online" and len(got["items"]) == 10


def test_export_cli_to_online_store(built_project, tmp_path):
    proj = clone_built(built_project, tmp_path / "p")
    users = tmp_path / "users.txt"
    users.write_text("\n".join(_users(proj, 4)) + "\n")
    r = sh(["recflow", "--root", str(proj), "export", "--k", "5", "--users", str(users),
            "--to-online-store"], proj)
    assert "export" in r.stdout and "Traceback" not in r.stderr
    assert (paths(proj).feature_repo / "data" / Feast.recs_file).exists()
    bad = sh(["recflow", "--root", str(proj), "export", "--k", "5"], proj, check=False)
    assert bad.returncode == 2 and "--out" in bad.stderr
