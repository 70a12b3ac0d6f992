"""Real Airflow 3: DagBag import check, dag.test() runs of both DAGs (success, a bad batch that
fails at validate, a refused gate), and `airflow standalone` driven through /api/v2.

Airflow runs in subprocesses with a temp AIRFLOW_HOME (it reads the home once, at import, and
writes its config and DB there), so nothing is written outside the test's temp dirs.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline.orchestration import airflow_local as af
from tests.conftest import ROOT, TINY, copy_project, deep_update, run_env

pytestmark = pytest.mark.integration

FEATURE_TASKS = ["ingest", "validate", "build_features", "materialize", "announce_features"]
TRAINING_TASKS = ["train", "evaluate", "promote", "notify_serving"]


def _env(home: Path) -> dict[str, str]:
    env = run_env(home)
    env["AIRFLOW_HOME"] = str(home)
    env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    env.pop("RECFLOW_SERVING_URL", None)
    return env


@pytest.fixture(scope="module")
def af_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("airflow_home")
    p = subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
                       env=_env(home), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return home


def dagtest(home: Path, dags: Path, dag_id: str | None = None, conf: dict | None = None,
            timeout: int = 600) -> tuple[dict, str]:
    """Run pipeline.orchestration.airflow_dagtest in a subprocess; (its JSON summary, everything it printed)."""
    args = [sys.executable, "-m", "pipeline.orchestration.airflow_dagtest", str(dags)]
    if dag_id:
        args += [dag_id, "--conf", json.dumps(conf or {})]
    p = subprocess.run(args, env=_env(home), capture_output=True, text=True, timeout=timeout,
                       cwd=dags.parent)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-4000:]
    return json.loads(p.stdout.strip().splitlines()[-1]), out


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def set_params(project: Path, overrides: dict) -> None:
    f = project / "params.yaml"
    f.write_text(yaml.safe_dump(deep_update(yaml.safe_load(f.read_text()), overrides), sort_keys=False))


def test_dagbag_has_the_two_dags_without_import_errors(af_home):
    bag, _ = dagtest(af_home, ROOT / "dags")
    assert bag["import_errors"] == {}
    assert bag["dag_ids"] == ["feature_pipeline", "training_pipeline"]
    assert all(bag["acyclic"].values())
    assert bag["tasks"]["feature_pipeline"] == FEATURE_TASKS
    assert bag["tasks"]["training_pipeline"] == TRAINING_TASKS
    assert bag["max_active_runs"] == {"feature_pipeline": 1, "training_pipeline": 1}
    assert "force" in bag["params"]["feature_pipeline"]
    assert "force_retrain" in bag["params"]["training_pipeline"]
    assert all(bag["has_doc"].values()) and all("recflow" in t for t in bag["tags"].values())


def test_dag_runs_success_bad_batch_and_refused_gate(af_home, tmp_path):
    project = copy_project(tmp_path / "proj")
    dags = project / "dags"
    champion = project / "models/registry/champion.json"

    # 1. features from scratch: every task green, the Asset is emitted (features are new)
    run, _ = dagtest(af_home, dags, "feature_pipeline")
    assert run["state"] == "success", run
    assert all(run["tasks"][t] == "success" for t in FEATURE_TASKS), run
    assert (project / "feature_repo/data/online_store.db").exists()

    # 2. training: a first model is promoted
    run, out = dagtest(af_home, dags, "training_pipeline")
    assert run["state"] == "success", run
    assert all(run["tasks"][t] == "success" for t in TRAINING_TASKS), run
    assert "PROMOTED v0001" in out
    assert json.loads(champion.read_text())["version"] == "v0001"
    assert "RECFLOW_SERVING_URL not set" in out

    # 3. a bad landing batch: validate fails with the GX reason, nothing downstream changes
    guarded = [champion, project / "data/validated/events.parquet",
               project / "feature_repo/data/user_features.parquet",
               project / "feature_repo/data/online_store.db", project / "reports/feature_asset.json"]
    before = {p: sha(p) for p in guarded}
    good = pd.read_parquet(project / "data/events/events.parquet").head(200)
    bad = good.assign(event_type=["teleport"] * 120 + list(good["event_type"][120:]))
    (project / "data/incoming").mkdir(parents=True, exist_ok=True)
    bad.to_csv(project / "data/incoming/batch.csv", index=False)
    set_params(project, {"ingest": {"source": "landing"}})
    run, out = dagtest(af_home, dags, "feature_pipeline")
    assert run["state"] == "failed", run
    assert run["tasks"]["ingest"] == "success"
    assert run["tasks"]["validate"] == "failed"
    assert {run["tasks"][t] for t in FEATURE_TASKS[2:]} == {"upstream_failed"}
    assert "validation refused" in out and "expect_column_values_to_be_in_set" in out
    assert "max_quarantine_fraction" in out
    assert {p: sha(p) for p in guarded} == before

    # 4. a gate that cannot be passed: promote ends green, says why, champion untouched.
    # A changed evaluate param makes evaluate re-score the champion promoted in step 2 (the
    # up-to-date evaluation.json predates it, and promote alone would read "first model").
    set_params(project, {"gate": {"min_delta": 1.0}, "evaluate": {"k": 5}})
    run, out = dagtest(af_home, dags, "training_pipeline")
    assert run["state"] == "success", run
    assert "NOT PROMOTED" in out and "precision@5" in out and "min_delta 1.0" in out
    assert sha(champion) == before[champion]
    assert "no new champion" in out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group_pids(pgid: int) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "pid=,pgid="], capture_output=True, text=True).stdout
    return [ln.split()[0] for ln in ps.splitlines() if ln.split()[1:] == [str(pgid)]]


@pytest.mark.timeout(1200)
def test_standalone_rest_trigger_runs_both_dags(tmp_path):
    project = copy_project(tmp_path / "proj", deep_update(dict(TINY), {}))
    home = tmp_path / "airflow_home"
    port = _free_port()
    log = tmp_path / "standalone.log"
    proc = af.start(project, home, port, log, log_ports=(_free_port(), _free_port()))
    try:
        api = af.Api(port)
        api.wait_ready(240, proc)
        st, _ = api.call("GET", "/api/v2/dags", auth=False)
        assert st == 401  # authentication is on
        st, _ = api.call("POST", "/auth/token", {"username": "admin", "password": "wrong"}, auth=False)
        assert st == 401
        password = json.loads((home / af.PASSWORDS_FILE).read_text())["admin"]
        api.login("admin", password)
        for dag_id in ("feature_pipeline", "training_pipeline"):
            api.wait_dag(dag_id, 120)
            api.unpause(dag_id)

        run_id = api.trigger("feature_pipeline")
        run = api.wait_run("feature_pipeline", run_id, 600)
        assert run["state"] == "success", (api.task_states("feature_pipeline", run_id), log.read_text()[-3000:])

        deadline = time.monotonic() + 600
        done = None
        while time.monotonic() < deadline and done is None:
            runs = [r for r in api.runs("training_pipeline") if r["run_type"] == "asset_triggered"]
            done = next((r for r in runs if r["state"] in ("success", "failed")), None)
            time.sleep(2)
        assert done is not None, "training_pipeline was not triggered by the features Asset"
        assert done["state"] == "success", api.task_states("training_pipeline", done["dag_run_id"])
        champ = json.loads((project / "models/registry/champion.json").read_text())
        assert (project / "models/registry/versions" / champ["version"] / "model.npz").exists()
    finally:
        pgid = proc.pid
        af.stop(proc)
        left = _group_pids(pgid)
        if left:  # never leave anything behind, even when the assertion below fails
            os.killpg(pgid, signal.SIGKILL)
    assert left == [], f"processes left in group {pgid}: {left}"
    assert not af.group_alive(pgid)
