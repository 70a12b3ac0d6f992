"""Real Airflow 3: DagBag import check, dag.test() runs of both DAGs (success, a bad batch that
fails at validate, a refused gate), and `airflow standalone` driven through /api/v2.

Airflow runs in subprocesses with a temp AIRFLOW_HOME (it reads the home once, at import, and
writes its config and DB there), so nothing is written outside the test's temp dirs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline.orchestration import airflow_local as af
from tests.conftest import ROOT, TINY, copy_project, deep_update, run_env, sh

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


def task_log(out: str, task_id: str) -> list[str]:
    """What dag.test printed while it ran ``task_id``: that task's log."""
    lines = out.splitlines()
    start = next(i for i, ln in enumerate(lines) if f"[DAG TEST] starting task_id={task_id} " in ln)
    end = next(i for i in range(start, len(lines)) if f"[DAG TEST] end task task_id={task_id} " in lines[i])
    return lines[start:end + 1]


def shown(lines: list[str]) -> list[str]:
    """The lines the UI's log viewer shows without expanding a ``::group::`` section."""
    out, depth = [], 0
    for ln in lines:
        if "::group::" in ln:
            depth += 1
        elif "::endgroup::" in ln:
            depth = max(0, depth - 1)
        elif depth == 0:
            out.append(ln)
    return out


def logged(lines: list[str], level: str, logger: str) -> list[str]:
    """The messages of ``lines`` (dag.test's console format) at ``level`` from ``logger``."""
    pat = re.compile(rf"\[{level}\s*\] (.*?)\s+\[{re.escape(logger)}\]")
    return [m.group(1) for m in map(pat.search, lines) if m]


def readme_block(name: str) -> list[str]:
    """The lines of the fenced block between README's ``<!-- name:begin/end -->`` markers."""
    text = (ROOT / "README.md").read_text()
    body = text.split(f"<!-- {name}:begin -->", 1)[1].split(f"<!-- {name}:end -->", 1)[0]
    inner = [ln for ln in body.splitlines() if ln.strip() and not ln.strip().startswith("```")]
    return textwrap.dedent("\n".join(inner)).splitlines()


@pytest.fixture(scope="module")
def bag(af_home) -> dict:
    """The DagBag summary of this checkout's dags/ (pipeline.orchestration.airflow_dagtest.check)."""
    return dagtest(af_home, ROOT / "dags")[0]


def test_dagbag_has_the_two_dags_without_import_errors(bag):
    assert bag["import_errors"] == {}
    assert bag["dag_ids"] == ["feature_pipeline", "training_pipeline"]
    assert all(bag["acyclic"].values())
    assert bag["tasks"]["feature_pipeline"] == FEATURE_TASKS
    assert bag["tasks"]["training_pipeline"] == TRAINING_TASKS
    assert bag["max_active_runs"] == {"feature_pipeline": 1, "training_pipeline": 1}
    assert "force" in bag["params"]["feature_pipeline"]
    assert "force_retrain" in bag["params"]["training_pipeline"]
    assert all(bag["has_doc"].values()) and all("recflow" in t for t in bag["tags"].values())


def test_trigger_params_cannot_be_submitted_empty_and_the_asset_has_one_name(bag):
    """The trigger form marks a param required, and refuses to submit it empty, exactly when its
    schema has a type without "null" (Airflow 3.3's FlexibleForm); an untyped enum could be
    cleared and came back as a raw 400. The UI lists the Asset by its name: the README and the
    DAG docs call it by that name, never by its URI."""
    schemas = [sch for d in bag["param_schemas"].values() for sch in d.values()]
    assert schemas and all(sch.get("type") for sch in schemas), bag["param_schemas"]
    for sch in schemas:
        types = sch["type"] if isinstance(sch["type"], list) else [sch["type"]]
        assert "null" not in types and None not in sch.get("enum", []) and "" not in sch.get("enum", [])
    assert bag["param_schemas"]["feature_pipeline"]["announce"]["type"] == "string"

    emitted = bag["outlets"]["feature_pipeline"]["announce_features"]
    consumed = bag["schedule_assets"]["training_pipeline"]
    assert emitted == consumed and len(emitted) == 1
    name, uri = emitted[0]["name"], emitted[0]["uri"].rstrip("/")
    for doc in ((ROOT / "README.md").read_text(), *bag["doc_md"].values()):
        assert f"`{name}`" in doc and uri not in doc


def test_dag_runs_success_bad_batch_and_refused_gate(af_home, tmp_path):
    project = copy_project(tmp_path / "proj")
    dags = project / "dags"
    champion = project / "models/registry/champion.json"

    # 1. features from scratch: every task green, the Asset is emitted (features are new)
    run, _ = dagtest(af_home, dags, "feature_pipeline")
    assert run["state"] == "success", run
    assert all(run["tasks"][t] == "success" for t in FEATURE_TASKS), run
    assert (project / "feature_repo/data/online_store.db").exists()

    # 1b. nothing changed: DVC skips every stage, announce_features is skipped, and its log
    # says why outside the collapsed "Post Execute" group (where Airflow puts a skip's reason)
    run, out = dagtest(af_home, dags, "feature_pipeline")
    assert run["tasks"]["announce_features"] == "skipped", run
    visible = shown(task_log(out, "announce_features"))
    warned = logged(visible, "warning", "recflow.dags")
    assert any("features unchanged since last announced" in w for w in warned), visible

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
    bad = good.assign(event_type=["teleport"] * 120 + list(good["event_type"][120:]),
                      user_id=[None] * 5 + list(good["user_id"][5:]))  # two failed checks
    (project / "data/incoming").mkdir(parents=True, exist_ok=True)
    bad.to_csv(project / "data/incoming/batch.csv", index=False)
    set_params(project, {"ingest": {"source": "landing"}})
    run, out = dagtest(af_home, dags, "feature_pipeline")
    assert run["state"] == "failed", run
    assert run["tasks"]["ingest"] == "success"
    assert run["tasks"]["validate"] == "failed"
    assert {run["tasks"][t] for t in FEATURE_TASKS[2:]} == {"upstream_failed"}
    assert "validation refused" in out and "teleport" in out  # the bad value, in any wording
    assert "max_quarantine_fraction" in out
    assert {p: sha(p) for p in guarded} == before
    check_refusal_log(project, task_log(out, "validate"))

    # 4. a gate that cannot be passed: promote ends green, says why, champion untouched.
    # A changed evaluate param makes evaluate re-score the champion promoted in step 2 (the
    # up-to-date evaluation.json predates it, and promote alone would read "first model").
    set_params(project, {"gate": {"min_delta": 1.0}, "evaluate": {"k": 5}})
    run, out = dagtest(af_home, dags, "training_pipeline")
    assert run["state"] == "success", run
    assert "NOT PROMOTED" in out and "precision@5" in out and "min_delta 1.0" in out
    assert sha(champion) == before[champion]
    assert "no new champion" in out


def check_refusal_log(project: Path, log: list[str]) -> None:
    """The validate task's log shows the stage's reason once, one ERROR line per failed check,
    outside any collapsed group, and the README quotes these very lines."""
    cli = sh(["recflow", "validate"], project, check=False)  # the same refusal, from the CLI
    assert cli.returncode != 0
    err = cli.stderr.splitlines()
    i = max(n for n, ln in enumerate(err) if ln.startswith("recflow validate: "))
    message = "\n".join(err[i:]).removeprefix("recflow validate: ")
    text = "\n".join(log)
    head = message.splitlines()[0][:60]
    assert text.count(head) == 1, text  # not echoed from the captured output nor the exception
    reason = logged(shown(log), "error", "recflow.dags")
    words = re.compile(r"[^\s;|]+").findall
    assert words(" ".join(reason)) == words(message), reason  # all of it, nothing added
    for problem in ("teleport", "user_id"):  # one line per failed check
        assert len([ln for ln in reason if problem in ln]) == 1, reason
    assert len({ln for ln in reason if "teleport" in ln or "user_id" in ln}) == 2, reason
    assert "reason in the ERROR lines above" in text
    batch = re.compile(r"batch-[0-9a-f]+")
    assert [batch.sub("batch-…", ln) for ln in reason] == readme_block("validate-log"), (
        "README's validate-log block no longer matches the log; paste:\n" + "\n".join(reason))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group_pids(pgid: int) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "pid=,pgid="], capture_output=True, text=True).stdout
    return [ln.split()[0] for ln in ps.splitlines() if ln.split()[1:] == [str(pgid)]]


def _free_ports(n: int) -> int:
    """A loopback port p with p … p+n-1 all free (`make airflow` puts its log servers at p+1, p+2)."""
    for _ in range(100):
        p = _free_port()
        try:
            for q in range(p, p + n):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", q))
            return p
        except OSError:
            continue
    raise RuntimeError(f"no {n} consecutive free loopback ports")


def _wait_for(path: Path, pattern: str, timeout: float) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(pattern, path.read_text(errors="replace")) if path.exists() else None
        if m:
            return m
        time.sleep(0.5)
    raise TimeoutError(f"{pattern!r} not in {path} after {timeout:.0f}s")


@pytest.mark.timeout(1200)
def test_standalone_rest_trigger_runs_both_dags(tmp_path):
    """`make airflow`'s launcher, driven through /api/v2: both DAGs run, the UI is served the
    trigger-form schema and the Asset name the docs use, and the terminal gets a few status
    lines while standalone's access log goes to its log file."""
    project = copy_project(tmp_path / "proj", deep_update(dict(TINY), {}))
    home = tmp_path / "airflow_home"
    port = _free_ports(3)
    terminal = tmp_path / "terminal.txt"
    env = {**run_env(project), "RECFLOW_ROOT": str(project)}
    with terminal.open("wb") as out:  # what `make airflow` prints on the user's terminal
        launcher = subprocess.Popen(
            [sys.executable, "-m", "pipeline.orchestration.airflow_local", "--port", str(port),
             "--home", str(home)], cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    log = af.standalone_log(home)
    groups = [launcher.pid]
    try:
        groups.append(int(_wait_for(terminal, r"process group (\d+)", 60).group(1)))
        api = af.Api(port)
        api.wait_ready(240, launcher)
        st, _ = api.call("GET", "/api/v2/dags", auth=False)
        assert st == 401  # authentication is on
        st, _ = api.call("POST", "/auth/token", {"username": "admin", "password": "wrong"}, auth=False)
        assert st == 401
        password = json.loads((home / af.PASSWORDS_FILE).read_text())["admin"]
        api.login("admin", password)
        for dag_id in ("feature_pipeline", "training_pipeline"):
            api.wait_dag(dag_id, 120)
            api.unpause(dag_id)

        # what the trigger form is built from: a typed, non-null schema is a required field
        st, details = api.call("GET", "/api/v2/dags/feature_pipeline/details")
        assert st == 200 and details["params"]["announce"]["schema"]["type"] == "string", details

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
        st, assets = api.call("GET", "/api/v2/assets")
        assert st == 200 and [a["name"] for a in assets["assets"]] == ["recflow_features"], assets
    finally:
        launcher.send_signal(signal.SIGTERM)  # as `kill <pid of make airflow>`: it stops standalone
        try:
            rc = launcher.wait(timeout=60)
        except subprocess.TimeoutExpired:
            rc = None
        left = {g: _group_pids(g) for g in groups}
        for g, pids in left.items():
            if pids:  # never leave anything behind, even when the assertions below fail
                os.killpg(g, signal.SIGKILL)
    assert rc == 0 and all(pids == [] for pids in left.values()), (rc, left)
    shown_lines = terminal.read_text(errors="replace").splitlines()
    assert f"http://127.0.0.1:{port}" in shown_lines[0] and any(
        f"admin / {password}" in ln for ln in shown_lines), shown_lines
    assert any(ln.strip() == f"ready: http://127.0.0.1:{port}" for ln in shown_lines), shown_lines
    assert len(shown_lines) <= 12 and not any("[http.access]" in ln for ln in shown_lines), shown_lines[:20]
    kept = log.read_text(errors="replace")  # the API's access log and the rest are in the log file
    assert "[http.access]" in kept and "path=/api/v2/dags" in kept and "standalone | " in kept
