"""Feature-store benchmarks: feature build, materialization, online lookup. Prints markdown.

    python benchmarks/feature_store.py [--events 1000000 10000000] [--workdir DIR]
                                       [--sections build materialize lookup]
                                       [--plain-max-events 1000000]

* build: ``features.write`` (the stage: 2 snapshots, every feature) vs a plain DuckDB
  aggregation of the same events into user, item and pair tables (the reference point), each
  in its own process; wall time and peak RSS.
* materialize: the stage's first run (``pipeline.feature_store.planning``) vs a plain ``feast
  materialize START END`` CLI run over the same views, into SQLite and into a real Redis
  (the CLI baseline only up to ``--plain-max-events``: at 10M it takes ~2-3 min per store);
  then, on the same store, a rerun with nothing changed (the content comparison alone) and a
  backfill of every row over the full store.
* lookup: warm lookups of the whole serving feature service, 1 and 100 users, SQLite and
  Redis: the serving path (``pipeline.feature_store.reader``) vs the SDK's ``get_online_features`` of
  the same service (and of one feature), measured in the same process.
Synthetic events come from ``pipeline.data.synthetic.generate`` (users/items scale with events).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PY = sys.executable


def _child(code: str, env: dict | None = None) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON line; add its peak RSS."""
    wrapped = (f"import json, resource, sys, time\nsys.path.insert(0, {str(ROOT)!r})\n"
               + code + "\nout['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF)"
               ".ru_maxrss / 1024\nprint(json.dumps(out))")
    p = subprocess.run([PY, "-c", wrapped], capture_output=True, text=True,
                       env={**os.environ, **(env or {})}, cwd=ROOT)
    if p.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def scale(n: int) -> dict:
    """Synthetic sizes: 10M events ≈ 200k users × 50k items (DESIGN's reference)."""
    return {"n_events": n, "n_users": max(1000, n // 50), "n_items": max(1000, n // 200),
            "n_categories": 20}


def prepare(work: Path, n: int) -> Path:
    """A project skeleton with ``n`` validated synthetic events (cached in ``work``)."""
    root = work / f"ev{n}"
    if (root / "data/validated/events.parquet").exists():
        return root
    (root / "feature_repo").mkdir(parents=True, exist_ok=True)
    for f in ("definitions.py", "feature_store.yaml"):
        shutil.copy(ROOT / "feature_repo" / f, root / "feature_repo" / f)
    _child(f"""
from pathlib import Path
from pipeline.config import load_params
from pipeline.data.synthetic import generate
p = load_params(Path({str(ROOT / 'params.yaml')!r}))
ev, it = generate(p.synthetic.model_copy(update={scale(n)!r}))
d = Path({str(root / 'data/validated')!r}); d.mkdir(parents=True, exist_ok=True)
ev.to_parquet(d / 'events.parquet', index=False); it.to_parquet(d / 'items.parquet', index=False)
out = {{'rows': len(ev)}}
""")
    return root


def bench_build(root: Path) -> list[dict]:
    val = root / "data/validated"
    stage = _child(f"""
from pathlib import Path
from pipeline.config import load_params
from pipeline.features import snapshots as features
p = load_params(Path({str(ROOT / 'params.yaml')!r}))
t = time.perf_counter()
r = features.write(Path({str(val)!r}), Path({str(root / 'feature_repo/data')!r}), p)
out = {{'seconds': time.perf_counter() - t, 'rows': r['user_rows'] + r['item_rows']}}
""")
    plain = _child(f"""
import duckdb
con = duckdb.connect()
t = time.perf_counter()
ev = "read_parquet('{val}/events.parquet')"
n = 0
for key in ('user_id', 'item_id', 'user_id, item_id'):
    con.execute(f"CREATE TABLE t AS SELECT {{key}}, count(*) n, max(event_timestamp) last "
                f"FROM {{ev}} GROUP BY {{key}}")
    n += con.execute("SELECT count(*) FROM t").fetchall()[0][0]
    con.execute("DROP TABLE t")
out = {{'seconds': time.perf_counter() - t, 'rows': n}}
""")
    return [{"what": "features stage (2 snapshots, all features → parquet)", **stage},
            {"what": "baseline: plain DuckDB user/item/pair aggregates", **plain}]


def _copy_for_store(root: Path, name: str) -> Path:
    dst = root.parent / f"{root.name}-{name}"
    shutil.rmtree(dst, ignore_errors=True)
    (dst / "feature_repo/data").mkdir(parents=True)
    for f in ("definitions.py", "feature_store.yaml"):
        shutil.copy(root / "feature_repo" / f, dst / "feature_repo" / f)
    for f in ("user_features.parquet", "item_features.parquet"):
        os.link(root / "feature_repo/data" / f, dst / "feature_repo/data" / f)
    return dst


def _plain_feast_yaml(plain: Path, redis_url: str | None) -> None:
    """Point a copied repo's feature_store.yaml at Redis (the plain CLI reads only the yaml)."""
    if redis_url is None:
        return
    from pipeline.feature_store.store import redis_config

    cfg = (plain / "feature_repo/feature_store.yaml").read_text().replace(
        "  type: sqlite\n  path: data/online_store.db\n",
        f"  type: redis\n  connection_string: \"{redis_config(redis_url)['connection_string']}\"\n")
    (plain / "feature_repo/feature_store.yaml").write_text(cfg)


def bench_materialize(root: Path, redis_url: str | None, plain: bool = True) -> list[dict]:
    """First run of the stage vs a plain ``feast materialize START END`` of the same views and
    window, per online store, each in a fresh repo copy and a flushed Redis DB. Seconds are
    the online write (the stage's report) and, for the CLI, the whole command."""
    import redis

    rows = []
    for online in ["sqlite", redis_url] if redis_url else ["sqlite"]:
        kind = "sqlite" if online == "sqlite" else "redis"
        ours = _copy_for_store(root, f"ours-{kind}")
        if kind == "redis":
            redis.Redis.from_url(redis_url).flushdb()
        r = _child(f"""
from pathlib import Path
from pipeline.config import Paths
from pipeline.feature_store import planning as materialize
paths = Paths(Path({str(ours)!r}))
t = time.perf_counter()
rep = materialize.materialize(paths, {online!r})
out = {{'seconds': rep['seconds'], 'rows': rep['entity_rows'], 'stage_total_s': time.perf_counter() - t,
        'writer': sorted({{v['writer'] for v in rep['views']}})}}
t = time.perf_counter()
again = materialize.materialize(paths, {online!r})  # nothing changed: compare, write nothing
out['rerun_unchanged_s'] = time.perf_counter() - t
back = materialize.backfill(paths, online={online!r})  # every row again over a full store
out['backfill_all_s'] = back['seconds']
""")
        ours_row = {"what": f"recflow materialize (first run) → {kind}", **r}
        ours_row["writer"] = ",".join(ours_row["writer"])
        rows.append(ours_row)
        if not plain:
            continue
        base = _copy_for_store(root, f"plain-{kind}")
        if kind == "redis":
            redis.Redis.from_url(redis_url).flushdb()
        _plain_feast_yaml(base, redis_url if kind == "redis" else None)
        win = _child(f"""
import duckdb
from datetime import timedelta
from pathlib import Path
from pipeline.config import Paths
from pipeline.feature_store import planning as materialize, store
paths = Paths(Path({str(base)!r}))
fs = store.open_store(paths, 'sqlite')
store.apply(fs, paths.feature_repo)
from pipeline.io import sql_path
con = duckdb.connect()
lo, hi, n = con.execute(
    "SELECT min(t0), max(t1), sum(n) FROM ("
    f"SELECT min(event_timestamp) t0, max(event_timestamp) t1, count(DISTINCT user_id) n "
    f"FROM read_parquet({{sql_path(paths.user_features)}}) UNION ALL "
    f"SELECT min(event_timestamp), max(event_timestamp), count(DISTINCT item_id) "
    f"FROM read_parquet({{sql_path(paths.item_features)}}))").fetchall()[0]
out = {{'start': lo.isoformat(), 'end': (hi + timedelta(microseconds=1)).isoformat(),
        'rows': int(n)}}
""")
        t = time.perf_counter()
        p = subprocess.run([str(Path(PY).parent / "feast"), "materialize", win["start"], win["end"]],
                           cwd=base / "feature_repo", capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(f"feast materialize failed:\n{p.stderr[-3000:]}")
        secs = time.perf_counter() - t
        rows.append({"what": f"baseline: `feast materialize` CLI → {kind} (incl. ~CLI start)",
                     "seconds": secs, "rows": win["rows"]})
        rows[-2]["speedup vs CLI"] = secs / rows[-2]["seconds"]
    return rows


def bench_lookup(root: Path, redis_url: str | None, reps: int = 2000) -> list[dict]:
    """The serving lookup (``OnlineReader``) next to the SDK's ``get_online_features`` for the
    same serving feature service, and for one feature, in the same process."""
    out = []
    for online in ["sqlite", redis_url] if redis_url else ["sqlite"]:
        kind = "sqlite" if online == "sqlite" else "redis"
        proj = root.parent / f"{root.name}-ours-{kind}"
        r = _child(f"""
import numpy as np, pandas as pd
from pathlib import Path
from pipeline.config import Paths
from pipeline.feature_store import store
from pipeline.columns import Feast
from pipeline.feature_store.reader import OnlineReader
paths = Paths(Path({str(proj)!r}))
fs = store.open_store(paths, {online!r})
users = pd.read_parquet(paths.feature_data / 'user_features.parquet', columns=['user_id'])['user_id'].unique()
rng = np.random.default_rng(0)
svc = fs.get_feature_service(Feast.serving_service)
reader = OnlineReader(fs, Feast.serving_service)
paths_ = {{
    'recflow OnlineReader (serving path)': lambda us: reader.read(us),
    'SDK get_online_features, serving service': lambda us: fs.get_online_features(
        features=svc, entity_rows=[{{'user_id': u}} for u in us]).to_dict(),
    'SDK get_online_features, 1 feature': lambda us: fs.get_online_features(
        features=['user_activity:n_events'], entity_rows=[{{'user_id': u}} for u in us]).to_dict(),
}}
out = {{}}
for label, f in paths_.items():
    for k in (1, 100):
        for _ in range(20):
            f(list(rng.choice(users, k, replace=False)))
        ts = []
        for _ in range({reps} if k == 1 else {reps // 20}):
            us = list(rng.choice(users, k, replace=False))
            t = time.perf_counter()
            f(us)
            ts.append((time.perf_counter() - t) * 1000)
        out[f'{{label}}|{{k}}'] = [float(np.percentile(ts, 50)), float(np.percentile(ts, 99))]
""")
        sdk = {k: r[f"SDK get_online_features, serving service|{k}"][0] for k in (1, 100)}
        for key, v in r.items():
            if "|" not in key:  # peak_rss_mb
                continue
            (label, k), (p50, p99) = key.split("|"), v
            out.append({"store": kind, "path": label, "entities": int(k), "p50 ms": p50,
                        "p99 ms": p99, "p50 / SDK serving": p50 / sdk[int(k)]})
    return out


def table(rows: list[dict]) -> str:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    def f(v):
        return f"{v:,.2f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(f(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--sections", nargs="+", default=["build", "materialize", "lookup"])
    ap.add_argument("--workdir", type=Path, default=None, help="keep data here (default: temp)")
    ap.add_argument("--plain-max-events", type=int, default=1_000_000,
                    help="run the plain `feast materialize` baseline only up to this many events "
                         "(~2-3 min per store at 10M)")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="recflow-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    from tests.redis_server import redis_server

    with redis_server(work / "redis") as url:
        for n in args.events:
            root = prepare(work, n)
            print(f"\n### {n:,} events\n")
            if "build" in args.sections or not (root / "feature_repo/data/user_features.parquet").exists():
                rows = bench_build(root)
                for r in rows:
                    r["events/s"] = n / r["seconds"]
                print("Feature build (own process each; peak RSS of that process)\n")
                print(table(rows))
                print(f"\nratio stage / baseline: {rows[0]['seconds'] / rows[1]['seconds']:.2f}× time\n")
            if "materialize" in args.sections:
                rows = bench_materialize(root, url, plain=n <= args.plain_max_events)
                for r in rows:
                    r["entity rows/s"] = r["rows"] / r["seconds"]
                print("Materialization (first run: every user and item)\n")
                print(table(rows))
                print()
            if "lookup" in args.sections:
                print("Online lookup, warm, in-process, whole serving feature service\n")
                print(table(bench_lookup(root, url)))
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
