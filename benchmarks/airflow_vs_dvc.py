"""Wall time of one full Airflow-triggered run next to `dvc repro` of the same data.

Both run from scratch on their own fresh copy of the project with the same params (tiny by
default), one after the other in the same process, so the ratio compares like with like:
- baseline: `dvc repro` (all 7 stages);
- Airflow: `airflow standalone` (started first; its start-up is reported but not counted),
  feature_pipeline triggered through /api/v2, training_pipeline started by the features Asset,
  timed from the trigger until the training run succeeded.

    .venv/bin/python benchmarks/airflow_vs_dvc.py [--events 20000]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.orchestration import airflow_local as af  # noqa: E402
from tests.conftest import TINY, copy_project, deep_update, run_env  # noqa: E402


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dvc_repro(project: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "dvc"), "repro"], cwd=project,
                   env=run_env(project), check=True, capture_output=True, timeout=3600)
    return time.perf_counter() - t0


def airflow_run(project: Path, tmp: Path) -> dict[str, float]:
    home, port = tmp / "airflow_home", _port()
    t0 = time.perf_counter()
    proc = af.start(project, home, port, tmp / "standalone.log", log_ports=(_port(), _port()))
    try:
        api = af.Api(port)
        api.wait_ready(300, proc)
        api.login("admin", json.loads((home / af.PASSWORDS_FILE).read_text())["admin"])
        for d in ("feature_pipeline", "training_pipeline"):
            api.wait_dag(d, 180)
            api.unpause(d)
        startup = time.perf_counter() - t0
        t1 = time.perf_counter()
        rid = api.trigger("feature_pipeline")
        if api.wait_run("feature_pipeline", rid, 3600)["state"] != "success":
            raise SystemExit(f"feature_pipeline failed; see {tmp / 'standalone.log'}")
        features = time.perf_counter() - t1
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            runs = [r for r in api.runs("training_pipeline") if r["run_type"] == "asset_triggered"]
            state = runs[0]["state"] if runs else None
            if state == "failed":
                raise SystemExit("training_pipeline failed")
            if state == "success":
                break
            time.sleep(1)
        total = time.perf_counter() - t1
    finally:
        af.stop(proc)
    return {"startup": startup, "features": features, "total": total}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=TINY["synthetic"]["n_events"])
    args = ap.parse_args()
    params = deep_update(json.loads(json.dumps(TINY)), {"synthetic": {"n_events": args.events}})
    with tempfile.TemporaryDirectory(prefix="recflow-bench-") as d:
        tmp = Path(d)
        a, b = tmp / "dvc", tmp / "airflow"
        a.mkdir()
        b.mkdir()
        copy_project(a, params)
        copy_project(b, params)
        base = dvc_repro(a)
        air = airflow_run(b, tmp)
    print(f"\nAirflow-triggered run vs `dvc repro`, {args.events:,} synthetic events, from scratch\n")
    print("| run | wall time (s) | ratio vs dvc repro |")
    print("|---|---:|---:|")
    print(f"| `dvc repro` (7 stages) | {base:.1f} | 1.00 |")
    print(f"| Airflow: feature_pipeline (REST trigger → success) | {air['features']:.1f} | – |")
    print(f"| Airflow: trigger → Asset → training_pipeline success | {air['total']:.1f} | "
          f"{air['total'] / base:.2f} |")
    print(f"| (not counted) `airflow standalone` start-up until the API answers | {air['startup']:.1f} | – |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
