"""The short report ``make demo`` ends with, read from what the stages left behind."""

from __future__ import annotations

from pipeline.columns import Columns as C
from pipeline.config import load_params, paths
from pipeline.io import read_json
from pipeline.registry import versions
from pipeline.stages.registry import NAMES as STAGES


def render(n_samples: int = 3) -> str:
    p = paths()
    params = load_params(p.params)
    out = ["", "recflow — last run", "=" * 60, f"{'stage':<12}{'seconds':>8}"]
    total = 0.0
    results: dict = {}
    for s in STAGES:
        f = p.stage_summary(s)
        if not f.exists():
            out.append(f"{s:<12}{'—':>8}  (not run)")
            continue
        d = read_json(f)
        results[s] = d["result"]
        total += d["seconds"]
        out.append(f"{s:<12}{d['seconds']:>8.1f}")
    out.append(f"{'total':<12}{total:>8.1f}")
    out.append("-" * 60)
    if "ingest" in results:
        r = results["ingest"]
        out.append(f"events generated/loaded : {r['events']:,} ({r['users']:,} users, {r['items']:,} items, source {r['source']})")
    if "validate" in results:
        r = results["validate"]
        out.append(f"validation              : {r['accepted']:,} accepted, {r['quarantined']:,} quarantined")
    if "materialize" in results:
        r = results["materialize"]
        counts = ", ".join(f"{k.replace('_', ' ')} {r[k]:,}" for k in
                           ("new", "changed", "unchanged", "removed", "kept_newer") if k in r)
        out.append(f"features materialized   : {r['users']:,} users, {r['items']:,} items written "
                   f"to the online store" + (f" ({counts})" if counts else ""))
    if "evaluate" in results:
        r = results["evaluate"]
        k = r["k"]
        out.append(f"evaluation target       : {r.get('target', 'all positives')}")
        fam = r.get("candidate_family")
        line = (f"precision@{k}            : model{f' ({fam})' if fam else ''} "
                f"{r['candidate'][f'precision@{k}']:.4f}  vs popularity {r['popularity'][f'precision@{k}']:.4f}")
        for f, shown in (("lightfm", "LightFM"), ("als", "ALS"), ("ease", "EASE"), ("blend", "blend")):
            if r.get(f) and f != fam:
                line += f"  vs {shown} {r[f][f'precision@{k}']:.4f}"
        if r.get("champion"):
            line += f"  vs champion {r['champion'][f'precision@{k}']:.4f}"
        out.append(line)
        seg = r.get("segments")
        if seg:
            for name in ("warm", "cold_revealed", "cold"):
                vals = "  ".join(f"{m} {seg[m][name][f'precision@{k}']:.4f}" for m in
                                 ("candidate", "category_rule", "als", "popularity")
                                 if seg.get(m) and seg[m][name][f"precision@{k}"] is not None)
                out.append(f"  {name:<14} ({seg['users'][name]} users) p@{k}: {vals}")
            cr = seg["candidate"]
            out.append(f"  cold items      recall@{k}: {cr['cold_items'][f'recall@{k}'] or 0:.4f} "
                       f"(warm items {cr['warm_items'][f'recall@{k}'] or 0:.4f})")
    if "promote" in results:
        r = results["promote"]
        what = r.get("promoted_model") or "candidate"
        verdict = f"PROMOTED {r['version']} ({what})" if r["promoted"] else "refused"
        out.append(f"gate                    : {verdict} — {r['reason']}")
    champ = versions.champion(p.registry)
    out.append(f"champion                : {champ or 'none'}")
    if champ:
        from pipeline.serving.recommender import Recommender

        rec = Recommender(params, p)
        users = _sample_users(p, n_samples)
        out.append("-" * 60)
        out.append("sample recommendations (Feast online store → champion):")
        for r in rec.recommend_many(users, 5):
            out.append(f"  {r.user_id} [{r.features_source}{', cold start' if r.cold_start else ''}]: {', '.join(r.items)}")
    return "\n".join(out)


def _sample_users(p, n: int) -> list[str]:
    import pandas as pd

    f = p.holdout_pairs
    users = sorted(pd.read_parquet(f, columns=[C.user])[C.user].unique()) if f.exists() else []
    step = max(1, len(users) // n)
    return users[::step][:n] or ["u0000001"]
