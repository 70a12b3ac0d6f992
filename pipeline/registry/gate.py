"""The evaluation gate: promote a challenger only when it beats the champion on the same
holdout, and the guardrails hold; with no champion it must beat popularity."""

from __future__ import annotations

from datetime import UTC, datetime

from pipeline.config import GateParams


def decide(ev: dict, gate: GateParams) -> tuple[bool, str]:
    """Promote iff the challenger beats the champion (re-scored on the same holdout) by
    ``min_delta`` and recall/coverage guardrails hold; with no champion it must beat popularity."""
    k = ev["k"]
    p = f"precision@{k}"
    r = f"recall@{k}"
    cand = ev["candidate"]
    champ = ev.get("champion")
    if not champ:
        pop = ev["popularity"][p]
        if cand[p] > pop:
            return True, f"first model: {p} {cand[p]:.4f} beats popularity {pop:.4f}"
        return False, f"first model: {p} {cand[p]:.4f} does not beat popularity {pop:.4f}"
    need = champ[p] + gate.min_delta
    if cand[p] < need - 1e-12:  # exactly champion + min_delta passes despite float rounding
        return False, (f"{p} {cand[p]:.4f} < champion {champ[p]:.4f} + min_delta {gate.min_delta}")
    if cand[r] < champ[r] - gate.max_recall_drop:
        return False, f"guardrail: {r} {cand[r]:.4f} dropped more than {gate.max_recall_drop} below {champ[r]:.4f}"
    if cand["coverage"] < champ["coverage"] - gate.max_coverage_drop:
        return False, (f"guardrail: coverage {cand['coverage']:.4f} dropped more than "
                       f"{gate.max_coverage_drop} below {champ['coverage']:.4f}")
    return True, f"{p} {cand[p]:.4f} ≥ champion {champ[p]:.4f} + min_delta {gate.min_delta}"


def decision(ev: dict, gate: GateParams) -> dict:
    """The gate's record of one decision (``reports/promotion.json`` and the history line);
    ``version`` is filled in by the caller once the candidate is registered."""
    promote, reason = decide(ev, gate)
    p = f"precision@{ev['k']}"
    # Against the champion when there is one, else against popularity (the first-model rule).
    ref = ev.get("champion") or ev["popularity"]
    return {
        "at": datetime.now(UTC).isoformat(),
        "promoted": promote,
        "reason": reason,
        "metric": p,
        "challenger_score": ev["candidate"][p],
        "champion_score": ev["champion"][p] if ev.get("champion") else None,
        "compared_with": "champion" if ev.get("champion") else "popularity",
        "delta": ev["candidate"][p] - ref[p],
        "min_delta": gate.min_delta,
        "candidate": ev["candidate"],
        "champion": ev.get("champion"),
        "champion_version": ev.get("champion_version"),
        "popularity": ev["popularity"],
        "als": ev.get("als"),
        "version": None,
    }
