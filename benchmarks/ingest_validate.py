"""Ingest + validate throughput and peak memory on synthetic events, next to a plain pandas read.

For each size, the synthetic generator writes a landing CSV (ISO-8601 timestamps, the generic
loader's default) into a throw-away project; then three fresh child processes each measure
one step and report their own wall time and peak RSS (``ru_maxrss``):

* ``pandas``   — ``pd.read_csv`` of the same file (the baseline, measured in the same run);
* ``ingest``   — ``pipeline.ingest.run`` in landing mode (parse, map, manifest, parquet);
* ``validate`` — ``pipeline.validate.run`` (GX suite, quarantine, reports, Data Docs).

GX's one-off import (seconds, before any data is touched) is excluded from ``validate`` and
shown in its own column. Usage::

    python benchmarks/ingest_validate.py --sizes 1000000 10000000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
step, root, csv = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
sys.path.insert(0, sys.argv[4])
extra = {}
if step == "pandas":
    import pandas as pd
    t = time.perf_counter()
    n = len(pd.read_csv(csv))
else:
    import yaml
    from pipeline.config import Params, Paths
    raw = yaml.safe_load((root / "params.yaml").read_text())
    params, paths = Params.model_validate(raw), Paths(root)
    if step == "ingest":
        from pipeline.stages import ingest as mod
    else:
        t = time.perf_counter()
        import great_expectations  # noqa: F401  (one-off import cost, reported apart)
        extra["gx_import_s"] = time.perf_counter() - t
        from pipeline.stages import validate as mod
    t = time.perf_counter()
    out = mod.run(params, paths)
    n = out.get("events", out.get("rows"))
    extra["result"] = out
secs = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # KiB -> GiB
print(json.dumps({"rows": n, "seconds": secs, "peak_gib": rss, **extra}, default=str))
"""


def _child(step: str, root: Path, csv: Path) -> dict:
    p = subprocess.run([sys.executable, "-c", CHILD, step, str(root), str(csv), str(ROOT)],
                       capture_output=True, text=True, timeout=3600)
    if p.returncode != 0:
        raise SystemExit(f"{step} failed:\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def _make(root: Path, n: int) -> Path:
    """A project root whose landing folder holds ~n synthetic events as one CSV."""
    import yaml

    from pipeline.columns import Columns as C
    from pipeline.config import SyntheticParams
    from pipeline.data.synthetic import generate

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["ingest"] = {**raw["ingest"], "source": "landing"}
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    sp = SyntheticParams(n_events=n, n_users=max(1000, n // 50), n_items=max(2000, n // 200))
    events, _ = generate(sp)
    events[C.ts] = events[C.ts].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    csv = root / "data" / "incoming" / "events.csv"
    csv.parent.mkdir(parents=True)
    events[list(C.EVENT_TABLE)].to_csv(csv, index=False)
    return csv


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    rows = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix="recflow-bench-") as d:
            root = Path(d)
            csv = _make(root, n)
            size_mb = csv.stat().st_size / 1e6
            base = _child("pandas", root, csv)
            ing = _child("ingest", root, csv)
            val = _child("validate", root, csv)
            assert val["result"]["accepted"] + val["result"]["quarantined"] == val["rows"] == ing["rows"]
            total = ing["seconds"] + val["seconds"]
            rows.append((ing["rows"], size_mb, ing["seconds"], val["seconds"], total,
                         ing["rows"] / total, max(ing["peak_gib"], val["peak_gib"]),
                         base["seconds"], base["peak_gib"], total / base["seconds"],
                         val["gx_import_s"]))
            print(f"done {n:,}", file=sys.stderr)
    print("| events | CSV MB | ingest s | validate s | total s | rows/s | peak RSS GiB "
          "| pandas read_csv s | pandas peak GiB | total / pandas | GX import s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r[0]:,} | {r[1]:,.0f} | {r[2]:.1f} | {r[3]:.1f} | {r[4]:.1f} | {r[5]:,.0f} "
              f"| {r[6]:.2f} | {r[7]:.1f} | {r[8]:.2f} | {r[9]:.1f}× | {r[10]:.1f} |")


if __name__ == "__main__":
    main()
