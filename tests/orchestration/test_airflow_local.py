"""`make airflow`: the admin password, the environment of a local `airflow standalone`, and what
reaches the terminal."""

from __future__ import annotations

import json
import socket
import stat
import sys

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


# A stand-in for `airflow standalone`: as chatty as the real one (startup noise, the admin
# password, one access-log line per request on stderr), it answers /api/v2/version on the
# port make airflow polls, and exits on its own shortly after its first request (or after 20 s).
FAKE_STANDALONE = r'''
import http.server, json, os, sys, threading
port = int(os.environ["AIRFLOW__API__PORT"])
for i in range(2000):
    print(f"api-server | [info     ] request finished [http.access] client_addr=127.0.0.1:5{i:04d} "
          "method=GET path=/ui/dags status_code=200")
print("standalone | Password for user 'admin': fake-password", flush=True)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"version": "fake"}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        threading.Timer(1.0, lambda: os._exit(0)).start()
threading.Timer(20, lambda: os._exit(0)).start()  # never outlive a launcher that does not poll
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
'''


def test_make_airflow_keeps_standalone_output_in_its_log_file(tmp_path, monkeypatch, capfd):
    """The terminal shows the URL, the login and a few status lines; the access log and the
    rest of standalone's output go to <AIRFLOW_HOME>/logs/standalone.log."""
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    airflow = fakebin / "airflow"
    airflow.write_text(f"#!{sys.executable}\n{FAKE_STANDALONE}")
    airflow.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fakebin / "python"))  # the launcher runs <bin>/airflow
    home = tmp_path / "home"
    port = _free_port()
    assert af.main(["--port", str(port), "--home", str(home)]) == 0
    terminal = capfd.readouterr()
    lines = (terminal.out + terminal.err).splitlines()
    password = json.loads((home / af.PASSWORDS_FILE).read_text())[af.USER]
    assert len(lines) <= 12, lines[:20]
    assert not any("[http.access]" in ln for ln in lines)
    text = "\n".join(lines)
    assert f"http://127.0.0.1:{port}" in text and f"{af.USER} / {password}" in text
    assert f"ready: http://127.0.0.1:{port}" in text
    log = (home / "logs" / "standalone.log").read_text()
    assert log.count("[http.access]") == 2000 and "GET /api/v2/version" in log


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
