"""Cold start, measured by replaying the push path: the goal table of issue 15.

Runs the real stages (ingest → validate → features → materialize → train → evaluate) in a
throw-away copy of the project and prints, per segment, precision@10 of the hybrid beside
popularity, the "popular in the categories of the revealed events" rule, ALS and ALS with
fold-in, all from the same run (so the ratios hold whatever else the machine is doing; other
engineers' tests were running on the same 2 cores when the README figures were taken).

    .venv/bin/python benchmarks/cold_start.py [--data embedded|movielens|both] [--keep DIR]
        [--set model.session_weight=2 ...]

``embedded``: the default synthetic data set, time split, ``evaluate.reveal_n: 3``.
``movielens``: ../shared/datasets/ml-latest-small (ratings.csv + movies.csv genres and year),
time split with the last 730 days held out (the last 90 days hold only 28 users).

``--latency DIR`` (a project this script built with ``--keep``): the API's p50/p99 at
concurrency 32 with the candidate as champion, session tokens on, then the same artifact
with ``session_items: 0`` (today's behaviour), alternated twice, in one run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import DATASETS, copy_project, deep_update  # noqa: E402

K = 10
SETS = {
    "embedded": {},
    "movielens": {
        "ingest": {"source": "movielens", "path": str(DATASETS / "ml-latest-small")},
        "split": {"test_days": 730},
        "model": {"user_features": ["top_category", "activity", "recency"],
                  "item_features": ["category", "popularity", "conversion", "genres", "year"]},
    },
}
STAGES = ("ingest", "validate", "features", "materialize", "train", "evaluate")
MODELS = ("candidate", "category_rule", "als", "popularity")


def run(name: str, keep: Path | None, overrides: dict | None = None) -> dict:
    base = keep or Path(tempfile.mkdtemp(prefix=f"coldstart-{name}-"))
    root = base / name
    root.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    copy_project(root, deep_update(deep_update(params, SETS[name]), overrides or {}))
    env_bin = Path(sys.executable).parent
    t0 = time.perf_counter()
    for s in STAGES:
        p = subprocess.run([str(env_bin / "recflow"), s], cwd=root, capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(f"{name}: recflow {s} failed:\n{p.stderr[-2000:]}")
    details = json.loads((root / "reports/evaluation_details.json").read_text())
    details["_seconds"] = time.perf_counter() - t0
    details["_val"] = validation_of(root)
    return details


def validation_of(root: Path) -> float:
    """The chosen family's validation p@k (``reports/train.json``: one score per family)."""
    tr = json.loads((root / "reports/train.json").read_text())
    return float(tr.get(f"val_precision@{K}", tr.get(tr.get("chosen", ""), float("nan"))))


def from_dir(root: Path) -> dict:
    """The details of a project this script already ran (``--table DIR``)."""
    details = json.loads((root / "reports/evaluation_details.json").read_text())
    details["_seconds"] = float(json.loads((root / "reports/train.json").read_text())
                                .get("seconds", float("nan")))
    details["_val"] = validation_of(root)
    return details


def table(name: str, d: dict) -> str:
    seg = d["segments"]
    p = f"precision@{K}"
    lines = [f"### {name} (time split, reveal_n={seg['reveal_n']}; {d['_seconds']:.0f} s; "
             f"validation p@{K} {d.get('_val', float('nan')):.4f})", "",
             f"| model | warm p@{K} ({seg['users']['warm']}) | cold+revealed p@{K} "
             f"({seg['users']['cold_revealed']}) | cold p@{K} ({seg['users']['cold']}) | "
             f"cold-item recall@{K} | warm-item recall@{K} |", "|---|---|---|---|---|---|"]
    for m in MODELS:
        r = seg.get(m)
        if not r:
            continue
        lines.append(f"| {m} | {r['warm'][p] or 0:.4f} | {r['cold_revealed'][p] or 0:.4f} | "
                     f"{r['cold'][p] or 0:.4f} | {r['cold_items'][f'recall@{K}'] or 0:.4f} | "
                     f"{r['warm_items'][f'recall@{K}'] or 0:.4f} |")
    c, rule, pop = seg["candidate"], seg["category_rule"], seg["popularity"]
    als = seg["als"]   # ALS folds unknown users in from their history

    def ratio(a, b):
        return (a or 0) / b if b else float("nan")

    cr = c["cold_revealed"][p]
    lines += ["", f"- cold+revealed: hybrid / rule = {ratio(cr, rule['cold_revealed'][p]):.2f}× "
              f"(goal ≥ 1.15), hybrid / popularity = {ratio(cr, pop['cold_revealed'][p]):.2f}×, "
              f"rule / popularity = {ratio(rule['cold_revealed'][p], pop['cold_revealed'][p]):.2f}×, "
              f"hybrid / ALS fold-in = {ratio(cr, als['cold_revealed'][p]):.2f}× (goal ≥ 1)",
              f"- cold-item recall / warm-item recall = "
              f"{ratio(c['cold_items'][f'recall@{K}'], c['warm_items'][f'recall@{K}']):.2f} "
              "(goal > 0 and ≥ 0.5)",
              f"- warm: hybrid / popularity = {ratio(c['warm'][p], pop['warm'][p]):.2f}×", ""]
    return "\n".join(lines)


def latency(root: Path, requests: int = 3000, concurrency: int = 32) -> str:
    """p50 / p99 of GET /recommendations with and without session tokens (same artifact)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import _loadgen
    import serving as sv

    from pipeline.registry import versions

    reg, cand = root / "models/registry", root / "models/candidate"
    off = root / "models/.candidate-no-session"
    if not off.exists():
        shutil.copytree(cand, off)
        meta = json.loads((off / "model.json").read_text())
        meta["config"]["session_items"] = 0
        (off / "model.json").write_text(json.dumps(meta))
    ids = {"on": versions.register(reg, cand, {}), "off": versions.register(reg, off, {})}
    users = sorted(pd.read_parquet(root / "data/trainset/holdout.parquet")["user_id"]
                   .astype(str).unique())[:500]
    rows = []
    for which in ("off", "on", "off", "on"):
        versions.set_champion(reg, ids[which], "latency benchmark")
        port = sv.free_port()
        api = sv.start([sys.executable, "-m", "uvicorn", "pipeline.serving.app:app_from_env",
                        "--factory", "--host", "127.0.0.1", "--port", str(port),
                        "--log-level", "warning", "--no-access-log"],
                       f"http://127.0.0.1:{port}/healthz", root)
        try:
            reqs = [_loadgen.get(f"/recommendations/{u}?k=10", "127.0.0.1") for u in users]
            _loadgen.run("127.0.0.1", port, reqs, 4, 200)
            r = sv.summarise(_loadgen.run("127.0.0.1", port, reqs, concurrency, requests))
        finally:
            sv.stop(api)
        rows.append((which, r))
    out = [f"| session tokens | p50 ms | p99 ms | req/s (concurrency {concurrency}) |",
           "|---|---:|---:|---:|"]
    out += [f"| {w} | {r['p50']:.2f} | {r['p99']:.2f} | {r['rps']:.0f} |" for w, r in rows]
    p99 = {w: min(r["p99"] for x, r in rows if x == w) for w in ("on", "off")}
    out.append(f"\np99 on / off (best of two each) = {p99['on'] / p99['off']:.2f} (goal ≤ 1.5)")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=("embedded", "movielens", "both"), default="both")
    ap.add_argument("--keep", type=Path, help="build the projects here and keep them")
    ap.add_argument("--set", action="append", default=[], metavar="GROUP.KEY=VALUE",
                    help="override a params.yaml key (YAML value), e.g. model.session_weight=2")
    ap.add_argument("--latency", type=Path, metavar="DIR",
                    help="measure serving latency on a project built with --keep, and stop")
    ap.add_argument("--table", type=Path, metavar="DIR",
                    help="print the table of a project this script ran (its <data> folder)")
    a = ap.parse_args()
    if a.table:
        print(table(a.table.name, from_dir(a.table)))
        return
    if a.latency:
        print(latency(a.latency))
        return
    over: dict = {}
    for kv in a.set:
        key, _, val = kv.partition("=")
        node = over
        *head, last = key.split(".")
        for h in head:
            node = node.setdefault(h, {})
        node[last] = yaml.safe_load(val)
    names = ["embedded", "movielens"] if a.data == "both" else [a.data]
    if "movielens" in names and not (DATASETS / "ml-latest-small" / "ratings.csv").exists():
        print(f"{DATASETS / 'ml-latest-small'} not present: movielens skipped")
        names.remove("movielens")
    for n in names:
        print(table(n, run(n, a.keep, over)), flush=True)


if __name__ == "__main__":
    main()
