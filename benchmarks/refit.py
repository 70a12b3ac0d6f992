"""What the refit for serving costs: promote's refit of the promoted configuration on all data,
beside the train stage's fit of the same configuration (the baseline, measured in the same run).

For each data set, a throw-away copy of the project runs ``dvc repro evaluate``, then
``recflow promote`` alone (timed); the figures come from ``reports/train.json`` (the train
stage's fit: early stopping, then the refit on the train part) and the promotion record's
``served`` lineage (the refit on all data: pairs read, features read, fit, checks, artifact).

    .venv/bin/python benchmarks/refit.py [--tiny] [--skip-default] [--skip-movielens]
                                         [--movielens DIR] [--preset FILE]

Data sets: the embedded default (``params.yaml`` as it is: 300k synthetic events, time split),
with ``--tiny`` the integration tests' project (``tests.conftest.TINY``: what the refit adds to
every ``dvc repro`` of the suite) and, when present, ``../shared/datasets/ml-latest-small``
(leave-10-out; ``--preset`` overrides its ``model`` section, e.g.
``benchmarks/params.movielens.yaml``). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import DATASETS, TINY, copy_project, sh  # noqa: E402


def run(name: str, overrides: dict, tmp: Path) -> dict:
    project = copy_project(tmp / name, overrides)
    t0 = time.perf_counter()
    sh(["dvc", "repro", "evaluate"], project, timeout=3600)
    upstream = time.perf_counter() - t0
    t0 = time.perf_counter()
    sh(["recflow", "promote"], project, timeout=3600)
    promote = time.perf_counter() - t0
    train = json.loads((project / "reports/train.json").read_text())
    rec = json.loads((project / "reports/promotion.json").read_text())
    served = rec.get("served") or {}
    return {"data": name, "train_pairs": train["train_pairs"], "served_pairs": served.get("pairs"),
            "epochs": f"{train['epochs_run']} run, best {train['best_epoch']}",
            "train_s": train["seconds"], "refit_s": served.get("seconds"),
            "promote_s": round(promote, 1), "upstream_s": round(upstream, 1),
            "promoted": rec.get("promoted_model") if rec.get("promoted") else rec.get("verdict")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--movielens", type=Path, default=DATASETS / "ml-latest-small")
    ap.add_argument("--preset", type=Path, help="YAML whose model section overrides MovieLens'")
    ap.add_argument("--skip-default", action="store_true")
    ap.add_argument("--skip-movielens", action="store_true")
    ap.add_argument("--tiny", action="store_true", help="add the integration tests' project")
    args = ap.parse_args()
    # {"model": {}} changes nothing; an empty dict would make copy_project use the test params
    sets: list[tuple[str, dict]] = [] if args.skip_default else [("synthetic default", {"model": {}})]
    if args.tiny:
        sets.append(("integration fixture (TINY)", TINY))
    if args.skip_movielens:
        pass
    elif (args.movielens / "ratings.csv").exists():
        ml = {"ingest": {"source": "movielens", "path": str(args.movielens.resolve())},
              "split": {"strategy": "leave_n_out", "n_out": 10}}
        if args.preset:
            ml["model"] = yaml.safe_load(args.preset.read_text())["model"]
        sets.append(("ml-latest-small leave-10-out", ml))
    else:
        print(f"{args.movielens}: not present, MovieLens row skipped", file=sys.stderr)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in sets:
            rows.append(run(name.split()[0], overrides, Path(tmp)) | {"data": name})
            print(f"{name}: done", file=sys.stderr)
    print("| data set | train pairs | served pairs | train stage epochs | train stage fit s "
          "(baseline) | refit for serving s | refit / train | recflow promote s | promoted |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['refit_s'] / r['train_s']:.2f}" if r["refit_s"] and r["train_s"] else "–"
        print(f"| {r['data']} | {r['train_pairs']:,} | {r['served_pairs'] or 0:,} | {r['epochs']} "
              f"| {r['train_s']} | {r['refit_s']} | {ratio} | {r['promote_s']} | {r['promoted']} |")
    print("\nOther engineers' test runs shared this 2-core machine: compare the ratio, not the "
          "seconds.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
