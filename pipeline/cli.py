"""``recflow``: one sub-command per stage, plus recommend / summary / models / rollback.

Output is for people: one summary line per stage; library logs go to logs/recflow.log;
user mistakes end with one line on stderr and exit code 2 (config) or 1 (data), no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.errors import ConfigError, RecflowError
from pipeline.settings import ROOT_ENV
from pipeline.stages.registry import STAGES, Stage


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage + line)
        sys.stderr.write(f"recflow: {message} (see 'recflow --help')\n")
        sys.exit(2)


def _fmt(d: dict) -> str:
    def v(x):
        return f"{x:.4f}" if isinstance(x, float) else str(x)
    return ", ".join(f"{k}={v(x)}" for k, x in d.items() if not isinstance(x, (dict, list)))


def _stage(stage: Stage) -> Callable[[argparse.Namespace], int]:
    name = stage.name

    def run(args: argparse.Namespace) -> int:
        from pipeline.config import load_params, paths
        from pipeline.io import write_json

        p = paths()
        params = load_params(p.params)
        t0 = time.perf_counter()
        if getattr(args, "forget", None):
            r = stage.module().forget(params, p, args.forget)
            print(f"✓ {name} --forget {time.perf_counter() - t0:5.1f}s  {_fmt(r)}")
            return 0
        result = stage.module().run(params, p)
        secs = time.perf_counter() - t0
        write_json(p.stage_summary(name), {"seconds": round(secs, 2), "result": result})
        line = result.get("reason") if name == "promote" else _fmt(result)
        if name == "evaluate":
            from pipeline.evaluation.results import MODELS

            k = result["k"]
            fam = result.get("candidate_family")
            line = "  ".join(f"{m}{f' ({fam})' if m == 'candidate' and fam else ''} "
                             f"p@{k}={result[m][f'precision@{k}']:.4f}"
                             for m in MODELS if result.get(m))
        if name == "train":
            line = (f"chosen on validation: {result['chosen']} ({result['metric']}: "
                    + ", ".join(f"{f} {result[f]:.4f}" for f in ("lightfm", "als", "ease", "blend", "popularity")
                                if result.get(f) is not None)
                    + f"); {result['trials']} trials"
                    + "".join(f"; {f} skipped: {why}" for f, why in result["skipped"].items()))
        print(f"✓ {name:<11} {secs:6.1f}s  {line}")
        return 0
    return run


def _recommend(args: argparse.Namespace) -> int:
    from pipeline.config import load_params, paths
    from pipeline.registry import versions

    if not 1 <= args.k <= 100:
        raise ConfigError(f"-k {args.k}: must be between 1 and 100.")
    p = paths()
    versions.champion(p.registry)  # a corrupt pointer: say so now, not after ~15 s of imports
    from pipeline.serving.recommender import Recommender

    r = Recommender(load_params(p.params), p).recommend(args.user_id, args.k)
    print(f"user {r.user_id}  model {r.model_version}  features={r.features_source}  cold_start={r.cold_start}")
    for i, (it, s) in enumerate(zip(r.items, r.scores, strict=True), 1):
        print(f"  {i:>2}. {it}  {s:.3f}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from pipeline.config import load_params, paths
    from pipeline.registry import versions

    p = paths()
    versions.champion(p.registry)  # a corrupt pointer: say so before the imports
    from pipeline.serving.export import export, read_users

    users = read_users(args.users) if args.users else None
    r = export(load_params(p.params), p, args.k, args.out, users,
               to_online_store=args.to_online_store)
    print(f"✓ export      {r['seconds']:6.1f}s  {_fmt(r)}")
    return 0


def _summary(args: argparse.Namespace) -> int:
    from pipeline.summary import render

    print(render())
    return 0


def _models(args: argparse.Namespace) -> int:
    from pipeline.config import paths
    from pipeline.registry import versions as registry

    reg = paths().registry
    champ = registry.champion(reg)
    listed = registry.list_versions(reg)
    if not listed:
        print("no models registered yet; run 'dvc repro'")
        return 0
    for v in listed:
        c = registry.card(reg, v)
        m = c.get("metrics", {})
        p = next((f"{k}={x:.4f}" for k, x in m.items() if k.startswith("precision@")), "")
        data = c.get("data") or {}
        h = (data.get("md5") or data.get("sha256") or "")[:10]
        # both lineages: pairs the judged artifact was fit on / judged on, and the served refit's
        pairs = (f"  fit={(c.get('trained_on') or {}).get('pairs', '?')}"
                 f" held={(c.get('judged_on') or {}).get('holdout_pairs', '?')}"
                 f" served={(c.get('served') or {}).get('pairs', 'same')}")
        fam = (c.get("model") or {}).get("family") or "?"
        print(f"{'*' if v == champ else ' '} {v}  {c.get('registered_at', '')[:19]}  {fam:<10}  {p}  "
              f"data={h or '?'}  git={(c.get('git_rev') or '?')[:8]}{pairs}")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from pipeline.config import paths
    from pipeline.registry import versions

    v = versions.rollback(paths().registry, args.version)
    print(f"champion is now {v}")
    return 0


def _push_events(args: argparse.Namespace) -> int:
    from pipeline.config import load_params, paths
    from pipeline.features.push import run_file

    p = paths()
    t0 = time.perf_counter()
    r = run_file(load_params(p.params), p, args.file)
    print(f"✓ push-events {time.perf_counter() - t0:6.1f}s  {_fmt(r)}")
    return 0


def _backfill(args: argparse.Namespace) -> int:
    from pipeline.config import paths
    from pipeline.feature_store.planning import run_backfill

    t0 = time.perf_counter()
    r = run_backfill(paths(), args.start, args.end)
    print(f"✓ backfill    {time.perf_counter() - t0:6.1f}s  {_fmt(r)}")
    return 0


def _tune_signals(args: argparse.Namespace) -> int:
    from pipeline.config import load_params, paths
    from pipeline.evaluation.signal_tuning import run

    if args.trials < 2 or args.minutes <= 0:
        raise ConfigError(f"--trials {args.trials} / --minutes {args.minutes}: need at least 2 "
                          "trials (defaults, binary) and a positive time budget.")
    p = paths()
    t0 = time.perf_counter()
    r = run(load_params(p.params), p, args.trials, args.minutes, args.objective, args.seed)
    print(f"✓ tune-signals {time.perf_counter() - t0:6.1f}s  {_fmt(r)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="recflow", description="Recommender pipeline for implicit feedback. "
                 "Run the whole chain with 'dvc repro'; each stage also runs alone.")
    ap.add_argument("--root", type=Path, help="project root (default: nearest folder with params.yaml)")
    ap.add_argument("-v", "--verbose", action="store_true", help="library logs on the console too")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for st in STAGES:
        sp = sub.add_parser(st.name, help=st.help, description=st.help)
        sp.set_defaults(func=_stage(st))
        if st.name == "ingest":
            sp.add_argument("--forget", action="append", metavar="FILE|BATCH",
                            help="drop a batch (refused or unwanted) from data/events/, by batch "
                            "name or landing file; the file is then skipped while it stays in "
                            "the landing folder (repeatable)")
    rp = sub.add_parser("recommend", help="top-k for one user through the Feast online store")
    rp.add_argument("user_id")
    rp.add_argument("-k", type=int, default=10, help="how many items (1..100, default 10)")
    rp.set_defaults(func=_recommend)
    ex = sub.add_parser("export", help="every user's (or --users') top-k from the champion to "
                        "parquet, by the serving path")
    ex.add_argument("--k", type=int, default=50, help="items per user (1..serving.max_k, default 50)")
    ex.add_argument("--users", type=Path, help="user ids: a text file (one per line) or csv/parquet "
                    "with a user_id column (default: every user of the feature store)")
    ex.add_argument("--out", type=Path, help="the parquet file to write")
    ex.add_argument("--to-online-store", action="store_true",
                    help="also write each list into the online store (Feast view user_recs), "
                    "which serving answers from when serving.cache_first is on")
    ex.set_defaults(func=_export)
    sub.add_parser("summary", help="what the last run did: stage times, counts, metrics, samples").set_defaults(func=_summary)
    sub.add_parser("models", help="list registered model versions (* = champion)").set_defaults(func=_models)
    rb = sub.add_parser("rollback", help="make an earlier version the champion again")
    rb.add_argument("version", nargs="?", help="version to restore (default: the previous champion)")
    rb.set_defaults(func=_rollback)
    pe = sub.add_parser("push-events", help="validate fresh events and push the affected users' "
                        "features to the online store now")
    pe.add_argument("file", type=Path, help="canonical events (.csv or .parquet)")
    pe.set_defaults(func=_push_events)
    ts = sub.add_parser("tune-signals", help="search signal weights on the validation slice; "
                        "write a params patch; print binary vs defaults vs tuned on the holdout")
    ts.add_argument("--trials", type=int, default=20, help="at most this many trials (default 20)")
    ts.add_argument("--minutes", type=float, default=10.0,
                    help="stop starting new trials after this many minutes (default 10)")
    ts.add_argument("--objective", choices=("both", "lightfm", "als"), default="both",
                    help="validation gain to maximise: LightFM, ALS or their mean (default)")
    ts.add_argument("--seed", type=int, default=42, help="seed of the search (default 42)")
    ts.set_defaults(func=_tune_signals)
    bf = sub.add_parser("backfill", help="materialize an explicit window (default: all feature rows)")
    bf.add_argument("--start", help="ISO date/time (UTC), inclusive")
    bf.add_argument("--end", help="ISO date/time (UTC), exclusive")
    bf.set_defaults(func=_backfill)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.root:
        os.environ[ROOT_ENV] = str(args.root.resolve())  # read back through pipeline.settings
    from pipeline import logs
    from pipeline.config import paths

    logs.setup(paths().logs, args.verbose)
    try:
        return args.func(args)
    except RecflowError as e:
        sys.stderr.write(f"recflow {args.command}: {e}\n")
        return e.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("recflow: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
