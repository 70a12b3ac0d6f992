"""Serving latency and throughput: bare Feast lookup vs `feast serve` vs recflow's API.

Usage: `make demo` first (a built project with a champion), then
    .venv/bin/python benchmarks/serving.py [--requests 3000] [--concurrency 1 8 32]
Prints one markdown table. (a) is in-process (no HTTP, threads for concurrency);
(b) and (c) are real servers on loopback, one worker each, driven by benchmarks/_loadgen.py.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _loadgen  # noqa: E402

from pipeline.columns import Feast  # noqa: E402
from pipeline.config import paths  # noqa: E402
from pipeline.feature_store import store  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], url: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "RECFLOW_ROOT": str(cwd)}
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return p
        except httpx.HTTPError:
            time.sleep(0.5)
    stop(p)
    raise SystemExit(f"server did not start: {' '.join(cmd)}")


def stop(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(15)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(5)


def in_process(users: list[str], concurrency: int, total: int) -> dict:
    fs = store.open_store(paths(ROOT))
    svc = fs.get_feature_service(Feast.serving_service)
    fs.get_online_features(features=svc, entity_rows=[{"user_id": users[0]}]).to_dict()  # warm

    def one(i: int) -> float:
        t0 = time.perf_counter()
        fs.get_online_features(features=svc, entity_rows=[{"user_id": users[i % len(users)]}]).to_dict()
        return (time.perf_counter() - t0) * 1e3

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as ex:
        lat = list(ex.map(one, range(total)))
    secs = time.perf_counter() - t0
    lat.sort()
    return {"p50": lat[len(lat) // 2], "p99": lat[int(0.99 * len(lat))], "rps": total / secs, "errors": 0}


def summarise(r: _loadgen.Result) -> dict:
    out = {"p50": r.pct(50), "p99": r.pct(99), "rps": r.rps, "errors": r.errors}
    if r.server_timing:
        for key in ("lookup", "scoring"):
            out[key] = statistics.median(t.get(key, 0.0) for t in r.server_timing)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    a = ap.parse_args()
    p = paths(ROOT)
    if not (p.registry / "champion.json").exists():
        raise SystemExit("no champion: run `make demo` first")
    feats = pd.read_parquet(p.feature_data / "user_features.parquet", columns=["user_id"])
    users = sorted(feats["user_id"].unique())[:500]
    n_items = len(json.loads((p.registry / "versions" / json.loads(
        (p.registry / "champion.json").read_text())["version"] / "model.json").read_text())["item_ids"])
    host = "127.0.0.1"
    rows = []
    for c in a.concurrency:
        rows.append(("(a) in-process get_online_features", c, in_process(users, c, a.requests)))

    port = free_port()
    fsrv = start([sys.executable, "-m", "feast.cli.cli", "-c", str(p.feature_repo), "serve", "-p", str(port),
                  "--no-access-log", "--max-requests", "10000000"], f"http://{host}:{port}/health", ROOT)
    try:
        reqs = [_loadgen.post_json("/get-online-features", json.dumps(
            {"feature_service": Feast.serving_service, "entities": {"user_id": [u]}}).encode(), host) for u in users]
        _loadgen.run(host, port, reqs, 4, 200)  # warm up
        for c in a.concurrency:
            rows.append(("(b) feast serve /get-online-features", c, summarise(_loadgen.run(host, port, reqs, c, a.requests))))
    finally:
        stop(fsrv)

    port = free_port()
    api = start([sys.executable, "-m", "uvicorn", "pipeline.serving.app:app_from_env", "--factory",
                 "--host", host, "--port", str(port), "--log-level", "warning", "--no-access-log"],
                f"http://{host}:{port}/healthz", ROOT)
    try:
        reqs = [_loadgen.get(f"/recommendations/{u}?k=10", host) for u in users]
        _loadgen.run(host, port, reqs, 4, 200)
        for c in a.concurrency:
            rows.append(("(c) recflow /recommendations (k=10)", c, summarise(_loadgen.run(host, port, reqs, c, a.requests))))
    finally:
        stop(api)

    print(f"\nServing benchmark — {len(users)} users cycled, catalogue {n_items:,} items, "
          f"{a.requests} requests per cell, 1 server worker, loopback\n")
    print("| path | concurrency | p50 ms | p99 ms | req/s | errors | lookup ms (p50) | scoring ms (p50) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, c, r in rows:
        lk = f"{r['lookup']:.2f}" if "lookup" in r else ""
        sc = f"{r['scoring']:.2f}" if "scoring" in r else ""
        print(f"| {name} | {c} | {r['p50']:.2f} | {r['p99']:.2f} | {r['rps']:.0f} | {r['errors']} | {lk} | {sc} |")
    by = {(n[:3], c): r for n, c, r in rows}
    print("\n| concurrency | (c)/(b) p99 | (c)/(b) req/s |")
    print("|---:|---:|---:|")
    for c in a.concurrency:
        b, cc = by[("(b)", c)], by[("(c)", c)]
        print(f"| {c} | {cc['p99'] / b['p99']:.2f} | {cc['rps'] / b['rps']:.2f} |")


if __name__ == "__main__":
    main()
