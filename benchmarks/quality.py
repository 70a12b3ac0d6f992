"""Model quality on every data set this checkout can reach, one run: popularity, LightFM with
its documentation defaults, ALS, EASE, the project's searched LightFM and the model the
pipeline promotes, each with its training time, all on the same holdout.

Each data set runs the real stages in a throw-away project folder (ingest → validate →
features → materialize → train → evaluate → promote, in-process, no DVC): the family rows are
what ``evaluate`` scored, "promoted" is what the gate registered (the family validation chose,
or popularity when it does not clear the floor). Everything is chosen on the validation slice
carved from training; the holdout only scores.

Data sets (``--datasets``, default all reachable):
  synthetic    the embedded default (params.yaml as it is: time split, last 7 days held out)
  ml-l10o      ../shared/datasets/ml-latest-small, leave-10-out (seed 42), every rating a
               positive of equal weight (the folder's README protocol)
  ml-time      the same ratings, the last 730 days held out: most test users are cold
  user         ``--user PATH`` (a folder or file; ``--user-preset generic|movielens|ecommerce``)

    .venv/bin/python benchmarks/quality.py [--datasets synthetic,ml-l10o] [--set key=value ...]

``benchmarks/params.movielens.yaml`` overlays params.yaml for the MovieLens data sets (the
search grid, EASE's limit); ``--set a.b=v`` overrides one key everywhere. Prints one markdown
table per data set and the goals' figures.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import logs  # noqa: E402
from pipeline.columns import Columns as C  # noqa: E402
from pipeline.config import Paths, load_params  # noqa: E402
from pipeline.evaluation.holdout import score  # noqa: E402
from pipeline.io import read_json, write_json  # noqa: E402
from pipeline.models.hybrid import LightFMRecommender  # noqa: E402
from pipeline.stages.registry import STAGES  # noqa: E402

DATASETS_DIR = next((d for d in (ROOT.parent / "shared" / "datasets",
                                 ROOT.parent.parent / "shared" / "datasets") if d.is_dir()),
                    ROOT.parent / "shared" / "datasets")
ML = DATASETS_DIR / "ml-latest-small"
PRESET = ROOT / "benchmarks" / "params.movielens.yaml"
EVERY_RATING = {"signals": {"rating": {"per_star": 0.0}}}   # every rating a positive, weight 1
DOCS_DEFAULTS = {"no_components": 10, "learning_rate": 0.05, "epochs": 10, "max_sampled": 10,
                 "item_alpha": 0.0, "user_alpha": 0.0, "user_features": [], "item_features": []}


def deep_update(d: dict, u: dict) -> dict:
    for k, v in u.items():
        d[k] = deep_update(dict(d.get(k) or {}), v) if isinstance(v, dict) else v
    return d


def dotted(sets: list[str]) -> dict:
    out: dict = {}
    for s in sets:
        key, _, value = s.partition("=")
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    return out


def movielens(split: dict) -> dict:
    return deep_update(deep_update(yaml.safe_load(PRESET.read_text()), EVERY_RATING),
                       {"ingest": {"source": "movielens", "path": str(ML)}, "split": split})


def datasets(user: Path | None, preset: str) -> dict[str, dict]:
    out: dict[str, dict] = {"synthetic": {}}
    if (ML / "ratings.csv").exists():
        out["ml-l10o"] = movielens({"strategy": "leave_n_out", "n_out": 10, "seed": 42})
        out["ml-time"] = deep_update(movielens({"strategy": "time", "test_days": 730}),
                                     {"model": {"validation_days": 365}})
    if user is not None:
        out["user"] = {"ingest": {"source": "file", "path": str(user.resolve()),
                                  "loader": {"preset": preset}}}
    return out


def project(root: Path, overrides: dict) -> Paths:
    """A throw-away project: params.yaml with ``overrides``, the feature repo's definitions."""
    (root / "feature_repo").mkdir(parents=True)
    for f in ("definitions.py", "feature_store.yaml"):
        shutil.copy2(ROOT / "feature_repo" / f, root / "feature_repo" / f)
    (root / "data" / "pushed").mkdir(parents=True)
    raw = deep_update(yaml.safe_load((ROOT / "params.yaml").read_text()), overrides)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return Paths(root)


def measure(name: str, overrides: dict, keep: Path | None,
            reuse: Path | None = None) -> tuple[list[dict], dict]:
    """Run the stages in a fresh project (or read a kept one, ``reuse``) and the rows."""
    root = reuse or Path(tempfile.mkdtemp(prefix=f"quality-{name}-", dir=keep))
    paths = Paths(root) if reuse else project(root, overrides)
    params = load_params(paths.params)
    logs.setup(paths.logs)
    seconds = {}
    for stage in STAGES if reuse is None else ():
        t0 = time.perf_counter()
        stage.module().run(params, paths)
        seconds[stage.name] = time.perf_counter() - t0
    timings = root / "stage_seconds.json"
    if reuse is None:
        write_json(timings, seconds)
    seconds = read_json(timings) if timings.exists() else {"train": float("nan")}
    ev = read_json(paths.evaluation_details)
    search = read_json(paths.model_search)
    promo = read_json(paths.promotion_report)
    k = ev["k"]
    fit_s = {f: sum(t["seconds"] for t in search["trials"] if t["family"] == f)
             + b.get("refit_seconds", 0.0) for f, b in search["best"].items()}
    rows = []

    def row(family: str, label: str, m: dict, secs: float | None, how: str) -> None:
        rows.append({"family": family, "model": label, "p": m[f"precision@{k}"], "r": m[f"recall@{k}"],
                     "ndcg": m[f"ndcg@{k}"], "cov": m["coverage"], "cold": m["cold"][f"precision@{k}"],
                     "warm": m["warm"][f"precision@{k}"], "fit_s": secs, "how": how})

    def setting(f: str) -> str:
        b = search["best"].get(f)
        return "" if b is None else (", ".join(f"{a} {v}" for a, v in b["setting"].items())
                                     + f" (val p@{k} {b[f'val_precision@{k}']:.4f})")

    row("popularity", "popularity", ev["popularity"], fit_s.get("popularity"), "distinct users per item")
    # LightFM as its documentation starts it: identity only, 10 components, 10 epochs
    train = pd.read_parquet(paths.train_pairs)
    hold = pd.read_parquet(paths.holdout_pairs)
    t0 = time.perf_counter()
    docs = LightFMRecommender(params.model.model_copy(update=DOCS_DEFAULTS)).fit(train)
    secs = time.perf_counter() - t0
    m, _ = score(docs, hold, train, {}, k, train[C.item].nunique())
    row("docs", "LightFM WARP, docs defaults", m, secs, "10 comps, lr 0.05, 10 epochs, identity only")
    for f, label in (("als", "implicit ALS"), ("ease", "EASE"), ("lightfm", "recflow LightFM (searched)"),
                     ("blend", "blend (weights chosen on validation)")):
        if ev.get(f):
            how = setting(f) + ("; fit s: choosing the weights (its components are the rows above)"
                                if f == "blend" else "")
            row(f, label, ev[f], fit_s.get(f), how)
        elif f in search["skipped"]:
            rows.append({"family": f, "model": label, "skipped": search["skipped"][f]})
    which = promo["promoted_model"]
    fam = ev["candidate_family"] if which == "candidate" else which
    if which:
        row("promoted:" + fam, f"**promoted: {fam}**",
            ev["candidate" if which == "candidate" else "popularity"], search["seconds"], f"validation chose {search['chosen']}; gate: {promo['verdict']}")
    info = {"k": k, "train_s": seconds["train"], "search_s": search["seconds"], "root": root,
            "search_cpu_s": search.get("cpu_seconds", 0.0),
            "holdout_users": ev["holdout_users"], "trials": len(search["trials"]),
            "reason": promo["reason"], "skipped_trials": search["skipped"].get("lightfm")}
    if keep is None and reuse is None:
        shutil.rmtree(root, ignore_errors=True)
    return rows, info


def _f(x: float | None) -> str:
    return "–" if x is None else f"{x:.4f}"   # no cold users in leave-N-out


def table(name: str, rows: list[dict], info: dict) -> str:
    k = info["k"]
    out = [f"\n### {name} — {info['holdout_users']} holdout users, k={k}, search "
           f"{info['search_s']:.0f} s wall / {info['search_cpu_s']:.0f} s CPU ({info['trials']} "
           f"trials), train stage {info['train_s']:.0f} s\n",
           f"| model | precision@{k} | recall@{k} | ndcg@{k} | coverage | cold p@{k} | warm p@{k} "
           "| × best other | fit s | setting |", "|---|---|---|---|---|---|---|---|---|---|"]
    scored = [r for r in rows if "p" in r]
    for r in rows:
        if "p" not in r:
            out.append(f"| {r['model']} | – | – | – | – | – | – | – | – | skipped: {r['skipped']} |")
            continue
        others = [o["p"] for o in scored if _family(o) != _family(r)]
        ratio = r["p"] / max(others) if others and max(others) > 0 else float("nan")
        fit = "–" if r["fit_s"] is None else f"{r['fit_s']:.1f}"
        out.append(f"| {r['model']} | {r['p']:.4f} | {r['r']:.4f} | {r['ndcg']:.4f} | {r['cov']:.3f} "
                   f"| {_f(r['cold'])} | {_f(r['warm'])} | {ratio:.2f} | {fit} | {r['how']} |")
    out.append(f"\ngate: {info['reason']}")
    if info.get("skipped_trials"):
        out.append(f"search budget: {info['skipped_trials']}")
    return "\n".join(out)


def _family(r: dict) -> str:
    """The model a row measures: the promoted row is its family's row again."""
    return r["family"].removeprefix("promoted:")


def goals(name: str, rows: list[dict]) -> str:
    scored = [r for r in rows if "p" in r]
    promoted = next((r for r in scored if r["family"].startswith("promoted:")), None)
    lightfm = next((r for r in scored if r["family"] == "lightfm"), None)
    best_row = max(r["p"] for r in scored)
    if promoted is None:
        out = [f"{name}: nothing promoted (the gate refused; see its line above) → MISSED"]
        if lightfm:
            out.append(f"{name}: LightFM alone {lightfm['p']:.4f} = ×{lightfm['p'] / best_row:.3f} of "
                       f"the best row → {'met' if lightfm['p'] >= 0.95 * best_row else 'MISSED'}")
        return "\n".join(out)
    best_other = max(r["p"] for r in scored if _family(r) != _family(promoted))
    singles = [r["p"] for r in scored if r["family"] in ("popularity", "docs", "als", "ease", "lightfm")]
    best_single = max(singles)
    out = [f"{name}: promoted {promoted['p']:.4f} vs best other row {best_other:.4f} → "
           f"{'met' if promoted['p'] >= best_other else 'MISSED'} (×{promoted['p'] / best_other:.3f})",
           f"{name}: moonshot: promoted ×{promoted['p'] / best_single:.3f} of the best single family "
           f"({best_single:.4f}) → {'met' if promoted['p'] >= 1.05 * best_single else 'MISSED'} (goal ≥ 1.05)"]
    if lightfm:
        out.append(f"{name}: LightFM alone {lightfm['p']:.4f} = ×{lightfm['p'] / best_row:.3f} of the best "
                   f"row → {'met' if lightfm['p'] >= 0.95 * best_row else 'MISSED'} (goal ≥ 0.95)")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default=None, help="comma-separated subset (default: all reachable)")
    ap.add_argument("--user", type=Path, help="a user-supplied events folder or file")
    ap.add_argument("--user-preset", default="generic", choices=["generic", "movielens", "ecommerce"])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a params.yaml key (dotted) on every data set")
    ap.add_argument("--keep", type=Path, help="keep each throw-away project under this folder")
    ap.add_argument("--reuse", type=Path, metavar="DIR",
                    help="print the rows of a project kept by --keep (one data set) again")
    args = ap.parse_args()
    available = datasets(args.user, args.user_preset)
    wanted = args.datasets.split(",") if args.datasets else list(available)
    unknown = [d for d in wanted if d not in available]
    if unknown:
        print(f"unknown or unreachable data set(s): {', '.join(unknown)}; available: "
              f"{', '.join(available)}", file=sys.stderr)
        return 2
    extra = dotted(args.set)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    lines = []
    for name in wanted:
        t0 = time.perf_counter()
        rows, info = measure(name, deep_update(available[name], extra), args.keep, args.reuse)
        logging.getLogger("recflow").info("%s measured in %.0f s", name, time.perf_counter() - t0)
        print(table(name, rows, info), flush=True)
        lines.append(goals(name, rows))
        if name == "ml-l10o":
            promoted = next((r for r in rows if r["family"].startswith("promoted:")), {"p": 0.0})
            lines.append(f"ml-l10o: promoted {promoted['p']:.4f} vs the 0.197 EASE bar → "
                         f"{'met' if promoted['p'] >= 0.197 else 'MISSED'}; search "
                         f"{info['search_s']:.0f} s wall, {info['search_cpu_s']:.0f} s CPU → "
                         f"{'met' if info['search_s'] <= 600 else 'MISSED'} (goal ≤ 600 s)")
    print("\n## goals\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
