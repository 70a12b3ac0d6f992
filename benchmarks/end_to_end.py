"""`dvc repro` from scratch at 1M and 10M synthetic events (50M with ``--with-50m``): each
stage's wall time and peak RSS, beside a bare ``LightFM.fit`` of the same pairs for the same
epochs measured in the same run (train / bare = "pipeline overhead").

For each size a fresh copy of the project gets the default ``params.yaml`` with only the
generator's size changed (about 50 events per user; the catalogue grows with it), then every
stage runs as ``dvc repro --single-item <stage>`` in order, in a child whose
``RUSAGE_CHILDREN`` peak RSS is the stage's. Afterwards, in another child on the same
training set: the bare fit (LightFM alone on the train pairs and identity + token matrices of
the winning LightFM setting, its refit's ``best_epoch`` epochs, no validation, no I/O) beside
the train stage's own record of the time spent inside LightFM (``lightfm_learn_seconds``:
every search trial's epochs + the refit), so "overhead" = train stage / that learning, and the
bare refit shows what the session tokens and short-history copies add to LightFM's own cost
(the in-stage figure times LightFM's epochs on the stage's exact matrices); and on sizes ≤ ``--exact-up-to`` the candidate's holdout metrics by
their slow definitions (full sort, rank AUC) against the stage's figures.

Other engineers' jobs share this 2-core machine: the ratios are the figure to read.
Usage::

    python benchmarks/end_to_end.py                       # 1M and 10M
    python benchmarks/end_to_end.py --sizes 1000000       # 1M only
    python benchmarks/end_to_end.py --with-50m
    python benchmarks/end_to_end.py --sizes 10000000 --bare-epochs 2   # bare fits sampled
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.conftest import copy_project, run_env  # noqa: E402

STAGES = ("ingest", "validate", "features", "materialize", "train", "evaluate", "promote")
#: events → (users, items): ~50 events per user, the catalogue of the issue's figures
SHAPES = {1_000_000: (20_000, 20_000), 10_000_000: (200_000, 50_000),
          50_000_000: (1_000_000, 200_000)}

STAGE_CHILD = r"""
import json, os, resource, subprocess, sys, time
t, load0 = time.perf_counter(), os.getloadavg()[0]
p = subprocess.run(sys.argv[1:], capture_output=True, text=True)
secs = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 ** 2
print(json.dumps({"rc": p.returncode, "seconds": secs, "peak_gib": rss,
                  "load": [load0, os.getloadavg()[0]], "tail": (p.stdout + p.stderr)[-2000:]}))
"""

BARE_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
root, exact_up_to, bare_epochs = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[4])
sys.path.insert(0, sys.argv[3])
import numpy as np, pandas as pd, scipy.sparse as sp
from lightfm import LightFM
from pipeline.columns import Columns as C
from pipeline.config import load_params, Paths
from pipeline.models.hybrid import _features
from pipeline.models.popularity import catalogue
from pipeline.models.tokens import item_tokens, user_tokens
params, paths = load_params(root / "params.yaml"), Paths(root)
p, report = params.model, json.loads(paths.train_report.read_text())
uf_df, if_df = pd.read_parquet(paths.train_user_features), pd.read_parquet(paths.train_item_features)
utok, itok = user_tokens(uf_df, p.user_features), item_tokens(if_df, p.item_features)

def matrices(pairs):
    users, items = catalogue(pairs, C.user), catalogue(pairs, C.item)
    uidx, iidx = {u: j for j, u in enumerate(users)}, {i: j for j, i in enumerate(items)}
    uv = {t: j for j, t in enumerate(sorted({t for u in users for t in utok.get(u, ())}))}
    iv = {t: j for j, t in enumerate(sorted({t for i in items for t in itok.get(i, ())}))}
    r = pairs[C.user].astype(str).map(uidx).to_numpy()
    c = pairs[C.item].astype(str).map(iidx).to_numpy()
    w = pairs[C.confidence].to_numpy(dtype=np.float32)
    shape = (len(users), len(items))
    return (sp.coo_matrix((np.ones_like(w), (r, c)), shape=shape), sp.coo_matrix((w, (r, c)), shape=shape),
            _features(list(users), uidx, utok, uv, True, p.token_weight),
            _features(list(items), iidx, itok, iv, True, p.token_weight))

def bare(pairs, epochs):
    # seconds of `epochs` epochs; with --bare-epochs N (< epochs), N timed and scaled
    inter, weights, uf, itf = matrices(pairs)
    m = LightFM(no_components=p.no_components, loss=p.loss, learning_rate=p.learning_rate,
                learning_schedule=p.learning_schedule, item_alpha=p.item_alpha,
                user_alpha=p.user_alpha, max_sampled=p.max_sampled, random_state=p.seed)
    timed = min(epochs, bare_epochs) if bare_epochs else epochs
    t = time.perf_counter()
    m.fit(inter, user_features=uf, item_features=itf, sample_weight=weights, epochs=timed,
          num_threads=p.num_threads)
    return (time.perf_counter() - t) * epochs / timed

import os
load0 = os.getloadavg()[0]
search = json.loads(paths.model_search.read_text())
lfm = search["best"].get("lightfm", {})
trials = [t for t in search["trials"] if t["family"] == "lightfm" and t.get("learn_seconds") is not None]
out = {"lightfm_trials": len(trials), "trial_users": lfm.get("trial_users"),
       "fit_part_users": lfm.get("fit_part_users"),
       "in_stage_learn_s": sum(t["learn_seconds"] for t in trials) + lfm.get("refit_learn_seconds", 0.0),
       "refit_epochs": lfm.get("best_epoch") or 0, "in_stage_refit_s": lfm.get("refit_learn_seconds")}
out["bare_timed_epochs"] = bare_epochs
if out["refit_epochs"]:
    # the winner's refit on all of train, as a bare LightFM.fit (identity + its tokens)
    best = lfm["setting"]
    if best.get("tokens") == "none":
        utok, itok = {}, {}
    p = p.model_copy(update={k: v for k, v in best.items() if k in type(p).model_fields})
    out["bare_refit_s"] = bare(pd.read_parquet(paths.train_pairs), out["refit_epochs"])
out["load"] = [load0, os.getloadavg()[0]]
events = params.synthetic.n_events
if events <= exact_up_to:
    from pipeline.evaluation.holdout import options, score_exact, score_users
    from pipeline.evaluation.champion import Data, tokens_for
    from pipeline.models.artifact import load_model
    data, model = Data.load(paths), load_model(paths.candidate)
    n_cat, k = data.train[C.item].nunique(), params.evaluate.k
    t = time.perf_counter()
    ref = score_exact(model, data.holdout, data.train, tokens_for(model, data), k, n_cat).metrics
    out["exact_s"] = time.perf_counter() - t
    t = time.perf_counter()
    new = score_users(model, data.holdout, data.train, tokens_for(model, data), k, n_cat, **options(params)).metrics
    out["fast_s"] = time.perf_counter() - t
    out["max_diff"] = max(abs(new[f"{m}@{k}"] - ref[f"{m}@{k}"]) for m in ("precision", "recall", "ndcg", "map"))
    out["max_diff"] = max(out["max_diff"], abs(new["coverage"] - ref["coverage"]))
    out["auc_diff"], out["auc_bound"] = abs(new["auc"] - ref["auc"]), new["auc_bound"]
out["peak_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
print(json.dumps(out))
"""


def _json_child(code: str, args: list[str], cwd: Path) -> dict:
    p = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=run_env(cwd),
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def run_size(events: int, tmp: Path, exact_up_to: int, bare_epochs: int) -> dict:
    users, items = SHAPES.get(events, (max(1000, events // 50), max(2000, events // 200)))
    project = copy_project(tmp / f"e{events}", {"synthetic": {"n_events": events, "n_users": users,
                                                              "n_items": items}})
    dvc = str(Path(sys.executable).parent / "dvc")
    stages = {}
    for stage in STAGES:
        r = _json_child(STAGE_CHILD, [dvc, "repro", "--single-item", stage], project)
        if r["rc"] != 0:
            raise SystemExit(f"{events:,} events: stage {stage} failed:\n{r['tail']}")
        stages[stage] = r
        print(f"  {events:,} events: {stage} {r['seconds']:.1f} s, peak {r['peak_gib']:.2f} GiB",
              file=sys.stderr, flush=True)
    bare = _json_child(BARE_CHILD, [str(project), str(exact_up_to), str(ROOT), str(bare_epochs)], project)
    train = json.loads((project / "reports" / "train.json").read_text())
    ev = json.loads((project / "reports" / "evaluation_details.json").read_text())
    return {"events": events, "users": users, "items": items, "stages": stages, "bare": bare,
            "train": train, "candidate": ev.get("candidate", {}), "k": ev.get("k")}


def table(results: list[dict]) -> str:
    lines = ["| stage | " + " | ".join(f"{r['events'] / 1e6:g}M: wall s | peak RSS GiB | load avg"
                                        for r in results) + " |",
             "|---|" + "---:|---:|---:|" * len(results)]

    def load(x: dict) -> str:
        return f"{x['load'][0]:.1f}→{x['load'][1]:.1f}"

    for stage in STAGES:
        lines.append(f"| {stage} | " + " | ".join(
            f"{r['stages'][stage]['seconds']:.1f} | {r['stages'][stage]['peak_gib']:.2f} | "
            f"{load(r['stages'][stage])}" for r in results) + " |")
    lines.append("| **whole `dvc repro`** | " + " | ".join(
        f"**{sum(s['seconds'] for s in r['stages'].values()):.0f}** | "
        f"**{max(s['peak_gib'] for s in r['stages'].values()):.2f}** | " for r in results) + " |")
    lines.append("| LightFM learning inside train (every trial + refit) | " + " | ".join(
        f"{r['bare']['in_stage_learn_s']:.1f} | | " for r in results) + " |")
    lines.append("| bare LightFM.fit, the winner's refit epochs, identity + tokens, no session tokens (own child) | " + " | ".join(
        f"{r['bare'].get('bare_refit_s', float('nan')):.1f} | {r['bare']['peak_gib']:.2f} | "
        f"{load(r['bare'])}" for r in results) + " |")
    lines.append("")
    lines.append("| size | users × items | LightFM trials (users per trial / fit part) | LightFM "
                 "learning in train | train stage | overhead (train / learning) | refit: in stage "
                 "vs bare without session tokens | evaluate | candidate p@k | AUC ± bound |")
    lines.append("|---|---|---|---:|---:|---:|---|---:|---:|---|")
    for r in results:
        b, tr, c, k = r["bare"], r["stages"]["train"]["seconds"], r["candidate"], r["k"]
        refit = (f"{b['in_stage_refit_s']:.1f} s vs {b['bare_refit_s']:.1f} s ({b['refit_epochs']} epochs"
                 f"{'; ' + str(b['bare_timed_epochs']) + ' timed, scaled' if b.get('bare_timed_epochs') else ''})"
                 if b.get("bare_refit_s") and b.get("in_stage_refit_s") is not None else "–")
        lines.append(
            f"| {r['events'] / 1e6:g}M | {r['users']:,} × {r['items']:,} | {b['lightfm_trials']} "
            f"({b['trial_users']:,} / {b['fit_part_users']:,}) | {b['in_stage_learn_s']:.1f} s | "
            f"{tr:.1f} s | {tr / max(b['in_stage_learn_s'], 1e-9):.2f}× | {refit} | "
            f"{r['stages']['evaluate']['seconds']:.1f} s | {c.get(f'precision@{k}', float('nan')):.4f} | "
            f"{c.get('auc', float('nan')):.4f} ± {c.get('auc_bound', float('nan')):.4f} |")
    exact = [r for r in results if "max_diff" in r["bare"]]
    for r in exact:
        b = r["bare"]
        lines.append(f"\n{r['events'] / 1e6:g}M, candidate on the holdout: scalable vs by-definition "
                     f"metrics (precision/recall/NDCG/MAP@k, coverage) max |diff| {b['max_diff']:.2e}; "
                     f"AUC |diff| {b['auc_diff']:.5f} (stated bound {b['auc_bound']:.5f}); "
                     f"scoring {b['fast_s']:.1f} s vs {b['exact_s']:.1f} s by definition.")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--with-50m", action="store_true", help="also 50M events (1M users × 200k items)")
    ap.add_argument("--exact-up-to", type=int, default=1_000_000,
                    help="check the metrics against their definitions up to this many events")
    ap.add_argument("--bare-epochs", type=int, default=0,
                    help="above 1M events, time this many bare epochs of each fit and scale to "
                         "the epochs run (0 = time them all)")
    ap.add_argument("--json", type=Path, help="also write the raw figures here")
    args = ap.parse_args()
    sizes = args.sizes + ([50_000_000] if args.with_50m else [])
    results = []
    with tempfile.TemporaryDirectory(prefix="recflow-e2e-") as d:
        for events in sizes:
            results.append(run_size(events, Path(d), args.exact_up_to,
                                    args.bare_epochs if events > 1_000_000 else 0))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print("\n`dvc repro` from scratch, default params.yaml, synthetic events "
          "(other engineers' jobs were running on this 2-core machine)\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
