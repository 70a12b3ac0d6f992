"""The Airflow glue that needs no Airflow: failure reasons, the features Asset's change test,
serving notification, and the `make airflow` environment."""

from __future__ import annotations

import http.server
import json
import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pipeline import airflow_local as af
from pipeline import orchestrate as o


def test_reason_is_the_cli_one_liner_and_none_for_a_crash():
    out = "✓ something\nrecflow validate: data/events/events.parquet: validation failed (x)\n"
    assert o._reason("validate", out) == "data/events/events.parquet: validation failed (x)"
    assert o._reason("validate", "Traceback (most recent call last):\n  boom\nrecflow validate: x") is None
    assert o._reason("train", out) is None


def _write_features(root: Path, payload: bytes) -> None:
    for rel in o.FEATURE_FILES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(payload)


def test_features_announced_only_when_changed(tmp_path):
    assert o.features_changed(tmp_path) == (False, None)  # nothing built yet
    _write_features(tmp_path, b"v1")
    changed, fp = o.features_changed(tmp_path)
    assert changed and fp
    o.mark_announced(tmp_path, fp)
    assert o.features_changed(tmp_path) == (False, fp)
    _write_features(tmp_path, b"v2")
    changed2, fp2 = o.features_changed(tmp_path)
    assert changed2 and fp2 != fp


def test_promotion_outcome_reads_the_gate_record(tmp_path):
    (tmp_path / "reports").mkdir()
    rec = {"promoted": False, "reason": "precision@10 0.1 < champion 0.2 + min_delta 0.0",
           "version": None, "champion_version": "v0003"}
    (tmp_path / "reports/promotion.json").write_text(json.dumps(rec))
    out = o.promotion_outcome(tmp_path, ran=True)
    assert out["promoted"] is False and out["champion_version"] == "v0003"
    assert "min_delta" in out["reason"]
    (tmp_path / "reports/promotion.json").write_text(json.dumps({**rec, "promoted": True, "version": "v0004"}))
    assert o.promotion_outcome(tmp_path, ran=True)["promoted"] is True
    assert o.promotion_outcome(tmp_path, ran=False)["promoted"] is False  # stale record: no news


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_notify_serving_posts_reload_or_is_a_no_op():
    assert "no-op" in o.notify_serving(None)
    hits: list[str] = []

    class H(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server API
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        msg = o.notify_serving(f"http://127.0.0.1:{srv.server_port}/")
    finally:
        srv.shutdown()
        srv.server_close()
    assert hits == ["/admin/reload"] and "reloaded" in msg
    assert "not reachable" in o.notify_serving(f"http://127.0.0.1:{_free_port()}", timeout=2)


def test_password_created_once_private_and_reused(tmp_path):
    pw, new = af.ensure_password(tmp_path / "home")
    f = tmp_path / "home" / af.PASSWORDS_FILE
    assert new and len(pw) >= 12
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert af.ensure_password(tmp_path / "home") == (pw, False)


@pytest.mark.parametrize("port", [8793, 9100])
def test_airflow_env_is_loopback_and_consistent(tmp_path, port):
    env = af.airflow_env(tmp_path, tmp_path / "home", port, base={"PATH": "/usr/bin", "RECFLOW_ROOT": "/x"})
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == f"http://127.0.0.1:{port}/execution/"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(tmp_path / "dags")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW_HOME"] == str(tmp_path / "home")
    assert str(port) not in (env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"],
                             env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"])
    assert "RECFLOW_ROOT" not in env
    assert env["PATH"].endswith("/usr/bin") and env["PATH"] != "/usr/bin"


def test_run_stage_runs_skips_refuses_and_crashes_under_real_dvc(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run([str(Path(sys.executable).parent / "dvc"), "init", "--no-scm", "-q"], cwd=root, check=True)
    ok = "python -c \"open('out.txt','w').write('x')\""
    refuse = "python -c \"import sys; sys.stderr.write('recflow bad: batch is empty\\n'); sys.exit(1)\""
    crash = "python -c \"raise RuntimeError('boom')\""
    (root / "dvc.yaml").write_text(json.dumps({"stages": {
        "good": {"cmd": ok, "outs": ["out.txt"]},
        "bad": {"cmd": refuse},
        "crash": {"cmd": crash},
    }}))
    monkeypatch.chdir(tmp_path)  # the target must not depend on the caller's cwd
    for var in ("PATH", "RECFLOW_ROOT"):  # run_stage sets both for the stage: restore after
        monkeypatch.setenv(var, os.environ.get(var, ""))
    first = o.run_stage(root, "good")
    assert first.ran and (root / "out.txt").read_text() == "x"
    assert o.run_stage(root, "good").ran is False  # up to date → skipped
    assert o.run_stage(root, "good", force=True).ran is True
    with pytest.raises(o.StageFailed, match="batch is empty"):
        o.run_stage(root, "bad")
    with pytest.raises(o.StageCrashed, match="crash"):
        o.run_stage(root, "crash")
