"""The evaluation gate: promote a challenger only when its gain over the champion on the same
holdout is larger than the noise, and the guardrails hold; popularity is the floor.

The noise is measured, not assumed: a seeded paired bootstrap over the holdout users'
precision@k (candidate minus reference, user by user, resampled ``gate.resamples`` times)
gives the gain's two-sided interval at ``gate.confidence``. The candidate wins only when the
interval's lower end clears ``gate.min_delta``. Two runs of unchanged params differ by training
noise that a user bootstrap does not see, so a candidate whose configuration and training data
equal the champion's (the same ``inputs_sha256``) is refused outright.

With no champion the reference is popularity; a candidate that does not clear it leaves
popularity itself as the champion, so serving always has one.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import numpy as np

from pipeline.config import GateParams

CANDIDATE, CHAMPION, POPULARITY = "candidate", "champion", "popularity"


def paired_bootstrap(a: np.ndarray, b: np.ndarray, confidence: float, resamples: int,
                     seed: int) -> dict:
    """The mean of ``a - b`` (paired per user) and its percentile-bootstrap interval.

    ``a`` and ``b`` hold one value per user, in the same (sorted) user order. Resampling draws
    users with replacement, so the interval shows how much the gain depends on which users
    happened to be held out. Example: a = [1, 0, 1, 1], b = [0, 0, 1, 0] → gain 0.5, and every
    resample's mean lies in [0, 1]. No users → gain 0 and a [0, 0] interval.
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = len(d)
    out = {"confidence": confidence, "resamples": resamples, "seed": seed, "users": n}
    if n == 0:
        return {**out, "gain": 0.0, "low": 0.0, "high": 0.0}
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    step = max(1, 2_000_000 // n)   # bounded memory: at most ~2M indices at once
    for s in range(0, resamples, step):
        c = min(step, resamples - s)
        means[s:s + c] = d[rng.integers(0, n, size=(c, n))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return {**out, "gain": float(d.mean()), "low": float(low), "high": float(high)}


def _interval(t: dict) -> str:
    return (f"gain {t['gain']:+.4f}, {t['confidence']:.0%} interval "
            f"[{t['low']:+.4f}, {t['high']:+.4f}] over {t['users']} users")


def decide(ev: dict, per_user: Mapping[str, np.ndarray], gate: GateParams) -> dict:
    """The verdict on ``ev`` (the evaluation details) and each model's per-user precision@k.

    Returns {"promote": "candidate" | "popularity" | None, "reason": one line, "test": the
    paired test}. Rules, in order: the candidate must clear min_delta with the lower end of its
    interval over the champion (over popularity when there is none); an unchanged rerun of the
    champion is refused even then; recall and coverage may not drop by more than their
    guardrails. A first candidate that does not clear popularity, or fails the cold-start
    guardrail, makes popularity the champion.
    """
    p = f"precision@{ev['k']}"
    r = f"recall@{ev['k']}"
    cand, champ = ev[CANDIDATE], ev.get(CHAMPION)
    version = ev.get("champion_version")
    ref = CHAMPION if champ else POPULARITY
    test = paired_bootstrap(per_user[CANDIDATE], per_user[ref], gate.confidence, gate.resamples,
                            gate.seed)
    fam, champ_fam = ev.get("candidate_family"), ev.get("champion_family")
    against = (f"champion {version}{f' ({champ_fam})' if champ_fam else ''} {champ[p]:.4f}"
               if champ else f"popularity {ev[POPULARITY][p]:.4f}")
    head = f"{f'{fam} ' if fam else ''}{p} {cand[p]:.4f} vs {against}: {_interval(test)}"
    rerun = bool(champ and ev.get("candidate_inputs")
                 and ev.get("candidate_inputs") == ev.get("champion_inputs"))
    if test["low"] <= gate.min_delta:
        if not champ:
            why = ("no learned family beat it on the validation slice" if fam == POPULARITY
                   else "no learned model beats it")
            return {"promote": POPULARITY, "test": test,
                    "reason": f"popularity is the floor: {why} ({head}, lower "
                              f"end not above min_delta {gate.min_delta}); popularity becomes the "
                              "champion"}
        return {"promote": None, "test": test,
                "reason": f"{head}; lower end not above min_delta {gate.min_delta}"
                          + (f" (and an unchanged rerun of {version})" if rerun else "")}
    if rerun:
        return {"promote": None, "test": test,
                "reason": f"unchanged rerun: same configuration and training data as champion "
                          f"{version}, so the gain is training noise ({head})"}
    if champ and cand[r] < champ[r] - gate.max_recall_drop:
        return {"promote": None, "test": test,
                "reason": f"guardrail: {r} {cand[r]:.4f} dropped more than "
                          f"{gate.max_recall_drop} below {champ[r]:.4f} ({head})"}
    if champ and cand["coverage"] < champ["coverage"] - gate.max_coverage_drop:
        return {"promote": None, "test": test,
                "reason": f"guardrail: coverage {cand['coverage']:.4f} dropped more than "
                          f"{gate.max_coverage_drop} below {champ['coverage']:.4f} ({head})"}
    cold = cold_guardrail(ev, gate)
    if cold and not champ:
        # the floor: serving must have a champion after any successful run
        return {"promote": POPULARITY, "test": test,
                "reason": f"popularity is the floor: the candidate failed the cold-start {cold} "
                          f"({head}); popularity becomes the champion"}
    if cold:
        return {"promote": None, "test": test, "reason": f"{cold} ({head})"}
    return {"promote": CANDIDATE, "test": test,
            "reason": f"{head}; lower end above min_delta {gate.min_delta}"}


def cold_guardrail(ev: dict, gate: GateParams) -> str | None:
    """Why the candidate fails the cold-start guardrail, or None: in the replay's
    ``cold_revealed`` segment its precision@k may not fall more than ``gate.max_cold_drop``
    below popularity's (the list a cold user got before the hybrid could read their events)."""
    p = f"precision@{ev['k']}"
    seg = ev.get("segments") or {}
    cand, pop = (seg.get(m, {}).get("cold_revealed", {}).get(p) for m in (CANDIDATE, POPULARITY))
    if cand is None or pop is None or cand >= pop - gate.max_cold_drop:
        return None
    return (f"guardrail: cold users with revealed events {p} {cand:.4f} dropped more than "
            f"{gate.max_cold_drop} below popularity's {pop:.4f}")


def decision(ev: dict, per_user: Mapping[str, np.ndarray], gate: GateParams) -> dict:
    """The gate's record of one decision (``reports/promotion.json`` and the history line);
    ``version`` is filled in by the caller once the promoted model is registered."""
    verdict = decide(ev, per_user, gate)
    p = f"precision@{ev['k']}"
    champ = ev.get(CHAMPION)
    promoted = verdict["promote"]
    ref = champ or ev[POPULARITY]
    test = verdict["test"]
    return {
        "at": datetime.now(UTC).isoformat(),
        "promoted": promoted is not None,
        "promoted_model": promoted,
        "verdict": {CANDIDATE: "promote", POPULARITY: "popularity floor", None: "refuse"}[promoted],
        "reason": verdict["reason"],
        "metric": p,
        "target": ev.get("target", "all positives"),   # which held-out pairs were relevant
        "challenger_score": ev[CANDIDATE][p],
        "champion_score": champ[p] if champ else None,
        "compared_with": CHAMPION if champ else POPULARITY,
        "delta": ev[CANDIDATE][p] - ref[p],
        "gain": test["gain"] if test else None,
        "interval": [test["low"], test["high"]] if test else None,
        "test": {**test, "method": f"paired bootstrap over per-user {p}"} if test else None,
        "min_delta": gate.min_delta,
        "candidate": ev[CANDIDATE],
        "candidate_family": ev.get("candidate_family"),
        "champion": champ,
        "champion_version": ev.get("champion_version"),
        "champion_scoring": ev.get("champion_scoring"),
        "popularity": ev[POPULARITY],
        "als": ev.get("als"),
        "families": {f: ev[f] for f in ("lightfm", "als", "ease", "blend") if ev.get(f)},
        "version": None,
    }
