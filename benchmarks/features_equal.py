"""Check that the features stage of this tree builds the same values as an older revision.

    python benchmarks/features_equal.py VALIDATED_DIR [--rev GIT_REV]

Loads the feature SQL module (``pipeline/features/snapshots.py``, before the
subpackages ``pipeline/features.py``) as it was at ``--rev`` (default ``HEAD``) beside the current
one, builds both on the same validated events (e.g. a benchmark workdir's
``ev1000000/data/validated``) and compares the parquet outputs row for row after sorting
(floats to 1e-9 relative). Prints a markdown table; exits 1 on any difference. Used to
prove that a faster build did not change a single feature value.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.columns import Columns as C  # noqa: E402
from pipeline.columns import Feast  # noqa: E402
from pipeline.config import load_params  # noqa: E402
from pipeline.features import snapshots as features  # noqa: E402


def old_module(rev: str, tmp: Path):
    for path in ("pipeline/features/snapshots.py", "pipeline/features.py"):
        got = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True,
                             text=True)
        if got.returncode == 0:
            src = got.stdout
            break
    else:
        raise SystemExit(f"no feature module at {rev}")
    (tmp / "features_old.py").write_text(src)
    spec = importlib.util.spec_from_file_location("features_old", tmp / "features_old.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def compare(a: pd.DataFrame, b: pd.DataFrame, key: str) -> str:
    if list(a.columns) != list(b.columns):
        return f"columns differ: {list(a.columns)} vs {list(b.columns)}"
    if len(a) != len(b):
        return f"{len(a)} vs {len(b)} rows"
    a = a.sort_values([C.ts, key]).reset_index(drop=True)
    b = b.sort_values([C.ts, key]).reset_index(drop=True)
    try:
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9, atol=1e-12)
    except AssertionError as e:
        return str(e).replace("\n", " ")[:300]
    return "equal"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("validated", type=Path)
    ap.add_argument("--rev", default="HEAD")
    args = ap.parse_args()
    params = load_params(ROOT / "params.yaml")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        old = old_module(args.rev, tmp)
        rows, ok = [], True
        outs = {}
        for label, mod in ((f"old ({args.rev})", old), ("new (worktree)", features)):
            t = time.perf_counter()
            mod.write(args.validated, tmp / label, params)
            rows.append({"build": label, "seconds": time.perf_counter() - t})
            outs[label] = tmp / label
        (o, n) = outs.values()
        print("| file | rows | result |\n|---|---|---|")
        for f, key in ((Feast.user_file, C.user), (Feast.item_file, C.item)):
            a, b = pd.read_parquet(o / f), pd.read_parquet(n / f)
            res = compare(a, b, key)
            ok &= res == "equal"
            print(f"| {f} | {len(a):,} | {res} |")
        print("\n| build | seconds |\n|---|---|")
        for r in rows:
            print(f"| {r['build']} | {r['seconds']:.2f} |")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
