"""Serving latency and throughput: bare Feast lookup vs `feast serve` vs recflow's API, then
the product goals of issue 17 in the same run.

Usage: `make demo` first (a built project with a champion), then
    .venv/bin/python benchmarks/serving.py [--root PROJECT] [--requests 3000] [--concurrency 1 8 32]
Prints markdown tables. (a) is in-process (no HTTP, threads for concurrency);
(b) and (c) are real servers on loopback, one worker each, driven by benchmarks/_loadgen.py.
(d)-(g), through `python -m pipeline.serving.run` (what `make serve WORKERS=N` runs): a
category filter vs the unfiltered call, similar items at concurrency 1, one vs two workers at
concurrency 32 (with the load generator's own CPU, since it shares the cores, and each server
process's CPU; also two workers in their own sessions, and uvicorn's own --workers), and
`recflow export --k 50` (users/s and peak RSS). `--skip-baselines` leaves out (a)-(c).
The machine may be shared with other work: compare the ratios, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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


def in_process(root: Path, users: list[str], concurrency: int, total: int) -> dict:
    fs = store.open_store(paths(root))
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


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux /proc)."""
    out, todo = [], [pid]
    while todo:
        q = todo.pop()
        out.append(q)
        try:
            todo += [int(c) for c in Path(f"/proc/{q}/task/{q}/children").read_text().split()]
        except OSError:
            pass
    return out


def _cpu_seconds(pids: list[int]) -> dict[int, float]:
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for q in pids:
        try:
            f = Path(f"/proc/{q}/stat").read_text().rsplit(")", 1)[1].split()
            out[q] = (int(f[11]) + int(f[12])) / tick  # utime + stime
        except (OSError, IndexError, ValueError):
            pass
    return out


def timed(host: str, port: int, reqs: list[bytes], c: int, n: int, server: int | None = None
          ) -> tuple[dict, float]:
    """(summary, load generator CPU as a share of one core over the run); with ``server`` (a
    pid) the summary's ``server_cpu`` lists each busy server process's share of a core."""
    pids = _tree(server) if server else []
    s0 = _cpu_seconds(pids)
    cpu0, t0 = time.process_time(), time.perf_counter()
    r = _loadgen.run(host, port, reqs, c, n)
    wall = time.perf_counter() - t0
    out = summarise(r)
    if server:
        s1 = _cpu_seconds(pids)
        shares = sorted(((s1[q] - s0[q]) / wall for q in s1 if q in s0), reverse=True)
        out["server_cpu"] = [x for x in shares if x >= 0.02]
    return out, (time.process_time() - cpu0) / wall


def product_goals(root: Path, users: list[str], n: int, host: str = "127.0.0.1") -> list[str]:
    """(d)-(g): filters, similar items, workers, export; returns the printed lines."""
    p = paths(root)
    items = pd.read_parquet(p.validated_items)
    cat_of = dict(zip(items["item_id"].astype(str), items["category"].astype(str), strict=True))
    model_items = json.loads((p.registry / "versions" / json.loads(
        (p.registry / "champion.json").read_text())["version"] / "model.json").read_text())["item_ids"]
    cats = items["category"].astype(str).value_counts()
    cat = cats.index[len(cats) // 2]  # a middling category, not the largest
    share = sum(cat_of.get(i) == cat for i in model_items) / len(model_items)
    rows: list[tuple[str, int, dict, float]] = []

    def serve(workers: int, *extra: str) -> tuple[subprocess.Popen, int]:
        port = free_port()
        return start([sys.executable, "-m", "pipeline.serving.run", "--workers", str(workers),
                      "--port", str(port), *extra], f"http://{host}:{port}/readyz", root), port

    plain = [_loadgen.get(f"/recommendations/{u}?k=10", host) for u in users]
    filt = [_loadgen.get(f"/recommendations/{u}?k=10&categories={cat}", host) for u in users]
    sim = [_loadgen.get(f"/items/{i}/similar?k=10", host) for i in model_items[:: max(1, len(model_items) // 500)]]
    srv, port = serve(1)
    try:
        for reqs in (plain, filt, sim):
            _loadgen.run(host, port, reqs, 4, 300)  # warm up
        for c in (1, 32):  # unfiltered and filtered alternate, twice, so drift hits both
            for rnd in range(2):
                for name, reqs in (("(d) /recommendations unfiltered", plain),
                                   (f"(d) /recommendations categories={cat}", filt)):
                    res, cpu = timed(host, port, reqs, c, n // 2)
                    rows.append((f"{name} #{rnd + 1}", c, res, cpu))
        res, cpu = timed(host, port, sim, 1, n)
        rows.append(("(e) /items/{id}/similar (k=10)", 1, res, cpu))
        res, cpu = timed(host, port, plain, 32, n, srv.pid)
        rows.append(("(f) /recommendations, 1 worker", 32, res, cpu))
    finally:
        stop(srv)
    for label, extra in (("2 workers", ()), ("2 workers, own sessions", ("--worker-sessions",))):
        srv, port = serve(2, *extra)
        try:
            _loadgen.run(host, port, plain, 32, 600)
            res, cpu = timed(host, port, plain, 32, n, srv.pid)
            rows.append((f"(f) /recommendations, {label}", 32, res, cpu))
        finally:
            stop(srv)
    # the same two workers started by uvicorn's own --workers: one listening socket shared
    port = free_port()
    srv = start([sys.executable, "-m", "uvicorn", "pipeline.serving.app:app_from_env", "--factory",
                 "--workers", "2", "--host", host, "--port", str(port), "--log-level", "warning",
                 "--no-access-log"], f"http://{host}:{port}/readyz", root)
    try:
        _loadgen.run(host, port, plain, 32, 600)
        res, cpu = timed(host, port, plain, 32, n, srv.pid)
        rows.append(("(f) /recommendations, 2 workers, uvicorn --workers (shared socket)", 32, res, cpu))
    finally:
        stop(srv)

    out = root / "logs" / "bench_export.parquet"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    # the CLI in a child that reports its own peak RSS (ru_maxrss, kB on Linux) when done
    code = ("import resource, sys; from pipeline.cli import main; rc = main(sys.argv[1:]); "
            "print(f'peak_rss_kb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}'); sys.exit(rc)")
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, "--root", str(root), "export", "--k", "50",
                           "--out", str(out)], cwd=root, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"recflow export failed: {done.stderr.strip()}")
    got = dict(re.findall(r"(\w+)=([^,\s]+)", done.stdout))
    rss = int(got.get("peak_rss_kb", 0)) / 1024
    out.unlink(missing_ok=True)

    lines = [f"\nProduct goals — catalogue {len(model_items):,} items, filter category {cat} "
             f"({share:.1%} of the items), {n} requests per cell (/2 for the alternating (d) rounds)\n",
             f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
             "(other work runs on the machine: compare ratios)\n",
             "| path | concurrency | p50 ms | p99 ms | req/s | errors | load generator CPU "
             "| server CPU per process | server lookup + scoring ms (p50) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, c, r, cpu in rows:
        st = f"{r['lookup'] + r['scoring']:.2f}" if "scoring" in r else ""
        sc = " + ".join(f"{x:.0%}" for x in r.get("server_cpu", []))
        lines.append(f"| {name} | {c} | {r['p50']:.2f} | {r['p99']:.2f} | {r['rps']:.0f} | "
                     f"{r['errors']} | {cpu:.0%} | {sc} | {st} |")
    by: dict[tuple[str, int], list[dict]] = {}
    for name, c, r, _ in rows:
        by.setdefault((name.split(" #")[0], c), []).append(r)

    def p99(name: str, c: int) -> float:
        return statistics.median(x["p99"] for x in by[(name, c)])

    lines += ["", "| goal | measured | target |", "|---|---:|---:|"]
    for c in (1, 32):
        ratio = p99(f"(d) /recommendations categories={cat}", c) / p99("(d) /recommendations unfiltered", c)
        lines.append(f"| filtered / unfiltered p99, c={c} (median of 2 rounds) | {ratio:.2f}x | <= 1.2x |")
    srv = {n: statistics.median(x["lookup"] + x["scoring"] for x in by[(n, 1)])
           for n in ("(d) /recommendations unfiltered", f"(d) /recommendations categories={cat}")}
    lines.append(f"| filtered / unfiltered server time p50, c=1 | "
                 f"{srv[f'(d) /recommendations categories={cat}'] / srv['(d) /recommendations unfiltered']:.2f}x "
                 "| (the filter's own cost) |")
    lines.append(f"| similar items p99, c=1 | {p99('(e) /items/{id}/similar (k=10)', 1):.2f} ms | < 2 ms |")
    one, two = by[("(f) /recommendations, 1 worker", 32)][0], by[("(f) /recommendations, 2 workers", 32)][0]
    lines.append(f"| 2 workers / 1 worker req/s, c=32 | {two['rps'] / one['rps']:.2f}x "
                 f"({two['errors']} errors) | >= 1.3x, 0 errors |")
    own = by[("(f) /recommendations, 2 workers, own sessions", 32)][0]
    lines.append(f"| 2 workers in own sessions / 1 worker req/s, c=32 | {own['rps'] / one['rps']:.2f}x "
                 f"({own['errors']} errors) | (autogroup: a CPU share per worker) |")
    shared = by[("(f) /recommendations, 2 workers, uvicorn --workers (shared socket)", 32)][0]
    lines.append(f"| uvicorn --workers 2 / 1 worker req/s, c=32 | {shared['rps'] / one['rps']:.2f}x "
                 f"({shared['errors']} errors) | (before: one shared socket) |")
    lines.append(f"| export --k 50: users/s (in the loop) | {got.get('users_per_s', '?')} "
                 f"({got.get('users', '?')} users, {wall:.1f} s wall with start-up) | >= 20000 |")
    lines.append(f"| export peak RSS | {rss:.0f} MB | reported |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--root", type=Path, default=ROOT, help="a built project (default: this checkout)")
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--skip-baselines", action="store_true", help="only the product goals (d)-(g)")
    a = ap.parse_args()
    root = a.root.resolve()
    p = paths(root)
    if not (p.registry / "champion.json").exists():
        raise SystemExit("no champion: run `make demo` first")
    feats = pd.read_parquet(p.feature_data / "user_features.parquet", columns=["user_id"])
    users = sorted(feats["user_id"].unique())[:500]
    n_items = len(json.loads((p.registry / "versions" / json.loads(
        (p.registry / "champion.json").read_text())["version"] / "model.json").read_text())["item_ids"])
    host = "127.0.0.1"
    if a.skip_baselines:
        print("\n".join(product_goals(root, users, a.requests, host)))
        return
    rows = []
    for c in a.concurrency:
        rows.append(("(a) in-process get_online_features", c, in_process(root, users, c, a.requests)))

    port = free_port()
    fsrv = start([sys.executable, "-m", "feast.cli.cli", "-c", str(p.feature_repo), "serve", "-p", str(port),
                  "--no-access-log", "--max-requests", "10000000"], f"http://{host}:{port}/health", root)
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
                f"http://{host}:{port}/healthz", root)
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
    print("\n".join(product_goals(root, users, a.requests, host)))


if __name__ == "__main__":
    main()
