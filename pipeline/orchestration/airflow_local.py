"""`make airflow`: a local `airflow standalone` for this project, and the helpers tests reuse.

Why a wrapper and not a bare `airflow standalone`: the home, the DAG folder, the loopback
port, the execution-API URL (the default points at :8080, so tasks on another port fail with
"connection refused") and the admin password must agree, and standalone survives SIGTERM of
its leader (the scheduler keeps workers alive), so it has to be stopped as a process group.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"
USER = "admin"


def ensure_password(home: Path) -> tuple[str, bool]:
    """The admin password kept in ``home`` (created on first use, mode 0600); True if new."""
    f = home / PASSWORDS_FILE
    if f.exists():
        return json.loads(f.read_text())[USER], False
    home.mkdir(parents=True, exist_ok=True)
    pw = secrets.token_urlsafe(12)
    fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({USER: pw}, fh)
    return pw, True


def airflow_env(root: Path, home: Path, port: int, log_ports: tuple[int, int] | None = None,
                base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for `airflow standalone` serving ``root``/dags on 127.0.0.1:``port``."""
    env = dict(os.environ if base is None else base)
    bindir = str(Path(sys.executable).parent)
    wlog, tlog = log_ports or (port + 1, port + 2)  # defaults 8793/8794 would collide with 8793
    url = f"http://127.0.0.1:{port}"
    env.update({
        "PATH": bindir + os.pathsep + env.get("PATH", ""),  # tasks run `recflow` / `dvc`
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",  # feature → training flows at once
        "AIRFLOW__CORE__PARALLELISM": "4",  # 2-core laptops; each LocalExecutor slot is a process
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
        "AIRFLOW__CORE__AUTH_MANAGER":
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / PASSWORDS_FILE),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(wlog),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(tlog),
    })
    env.pop("RECFLOW_ROOT", None)  # the DAGs take the project from their own location
    return env


def start(root: Path, home: Path, port: int, log_path: Path,
          log_ports: tuple[int, int] | None = None) -> subprocess.Popen:
    """Start `airflow standalone` in its own process group (so stop() can end all of it)."""
    home.mkdir(parents=True, exist_ok=True)
    ensure_password(home)
    env = airflow_env(root, home, port, log_ports)
    out = log_path.open("ab")
    try:
        return subprocess.Popen([str(Path(sys.executable).parent / "airflow"), "standalone"],
                                cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    finally:
        out.close()


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """TERM the whole process group, wait up to ``grace`` s, then KILL what is left."""
    pgid = proc.pid  # start_new_session: the leader's pid is the group id
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        if not group_alive(pgid):
            break
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc.poll() is None:
                time.sleep(0.2)
                continue
            if not group_alive(pgid):
                break
            time.sleep(0.2)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


class Api:
    """Minimal /api/v2 client (stdlib only) for tests, benchmarks and scripts."""

    def __init__(self, port: int, token: str | None = None):
        self.base = f"http://127.0.0.1:{port}"
        self.token = token

    def call(self, method: str, path: str, body: Any = None, auth: bool = True) -> tuple[int, Any]:
        req = urllib.request.Request(self.base + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
        if auth and self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def poll(self, method: str, path: str) -> tuple[int, Any]:
        """Like call(), but a busy server (timeout, reset) is (0, None): keep polling."""
        try:
            return self.call(method, path)
        except OSError:  # URLError, TimeoutError, ConnectionResetError
            return 0, None

    def wait_ready(self, timeout: float, proc: subprocess.Popen | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"airflow standalone exited with {proc.returncode}")
            if self.poll("GET", "/api/v2/version")[0] == 200:
                return
            time.sleep(1.0)
        raise TimeoutError(f"{self.base}: API not up after {timeout:.0f}s")

    def login(self, user: str, password: str) -> None:
        st, body = self.call("POST", "/auth/token", {"username": user, "password": password}, auth=False)
        if st not in (200, 201):
            raise RuntimeError(f"login failed: HTTP {st} {body}")
        self.token = body["access_token"]

    def wait_dag(self, dag_id: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.poll("GET", f"/api/v2/dags/{dag_id}")[0] == 200:
                return
            time.sleep(1.0)
        raise TimeoutError(f"DAG {dag_id} not parsed after {timeout:.0f}s")

    def unpause(self, dag_id: str) -> None:
        st, body = self.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        if st != 200:
            raise RuntimeError(f"unpause {dag_id}: HTTP {st} {body}")

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        st, body = self.call("POST", f"/api/v2/dags/{dag_id}/dagRuns",
                             {"logical_date": None, "conf": conf or {}})
        if st != 200:
            raise RuntimeError(f"trigger {dag_id}: HTTP {st} {body}")
        return body["dag_run_id"]

    def runs(self, dag_id: str) -> list[dict]:
        st, body = self.poll("GET", f"/api/v2/dags/{dag_id}/dagRuns?order_by=-start_date")
        return body["dag_runs"] if st == 200 else []

    def wait_run(self, dag_id: str, run_id: str, timeout: float) -> dict:
        rid = urllib.parse.quote(run_id, safe="")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st, body = self.poll("GET", f"/api/v2/dags/{dag_id}/dagRuns/{rid}")
            if st == 200 and body["state"] in ("success", "failed"):
                return body
            time.sleep(2.0)
        raise TimeoutError(f"{dag_id} run {run_id} not finished after {timeout:.0f}s")

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        rid = urllib.parse.quote(run_id, safe="")
        st, body = self.poll("GET", f"/api/v2/dags/{dag_id}/dagRuns/{rid}/taskInstances")
        return {t["task_id"]: t["state"] for t in body["task_instances"]} if st == 200 else {}


def standalone_log(home: Path) -> Path:
    """Where `make airflow` keeps everything `airflow standalone` prints (access log included)."""
    return home / "logs" / "standalone.log"


def _tail(path: Path, n: int = 15) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return []


def watch(proc: subprocess.Popen, port: int, log_path: Path, say: Callable[[str], None],
          ready_timeout: float = 600.0) -> int:
    """Tell the user when the UI is up, then wait for ``proc``; returns its exit code.

    Only these status lines reach the terminal: standalone's own output (thousands of
    access-log lines) stays in ``log_path``.
    """
    url = f"http://127.0.0.1:{port}"
    try:
        Api(port).wait_ready(ready_timeout, proc)
        say(f"  ready: {url}")
    except RuntimeError:
        pass  # exited before the API came up: reported below
    except TimeoutError:
        say(f"  {url} not answering after {ready_timeout:.0f}s; still starting? see {log_path}")
    rc = proc.wait()
    if rc == 0:
        say("airflow standalone stopped.")
    else:
        say(f"airflow standalone exited with {rc}; the last lines of {log_path}:")
        for line in _tail(log_path):
            say(f"  | {line}")
    return rc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="make airflow", description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8793, help="loopback port of UI + API (default 8793)")
    ap.add_argument("--home", type=Path, help="AIRFLOW_HOME (default: <project>/airflow_home)")
    args = ap.parse_args(argv)
    from pipeline.config import project_root

    root = project_root()
    home = (args.home or root / "airflow_home").resolve()
    log_path = standalone_log(home)
    log_path.parent.mkdir(parents=True, exist_ok=True)

    def say(line: str) -> None:
        print(line, flush=True)

    pw, new = ensure_password(home)
    say(f"Airflow for recflow: http://127.0.0.1:{args.port}   (AIRFLOW_HOME={home})")
    if new:
        say(f"  login: {USER} / {pw}   ← shown once; kept in {home / PASSWORDS_FILE}")
    else:
        say(f"  login: {USER}, password in {home / PASSWORDS_FILE}")
    say(f"  airflow's own output (scheduler, API access log): {log_path}")
    proc = start(root, home, args.port, log_path)
    say(f"  starting (process group {proc.pid}); the UI is up after about a minute. "
        "Ctrl-C stops everything.")

    def _interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)  # `kill <make's pid>` stops the group too
    try:
        return watch(proc, args.port, log_path, say)
    except KeyboardInterrupt:
        say(f"\nstopping airflow (process group {proc.pid})…")
        stop(proc)
        return 0


if __name__ == "__main__":
    sys.exit(main())
