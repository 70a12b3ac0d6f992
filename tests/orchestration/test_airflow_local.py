"""`make airflow`: the admin password and the environment of a local `airflow standalone`."""

from __future__ import annotations

import stat

import pytest

from pipeline.orchestration import airflow_local as af


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
