"""The gate's decision table: a seeded paired bootstrap over per-user precision@k against the
champion (popularity when there is none), min_delta on the interval's lower end, the recall /
coverage guardrails, the unchanged-rerun rule and popularity as the floor."""

import numpy as np
import pytest

from pipeline.config import GateParams
from pipeline.registry.gate import decide, decision, paired_bootstrap

GATE = GateParams(confidence=0.95, resamples=2000, seed=42, min_delta=0.001,
                  max_recall_drop=0.02, max_coverage_drop=0.05)
N = 2000   # holdout users


def users_precision(mean: float, seed: int, n: int = N) -> np.ndarray:
    """Per-user precision@10 values (multiples of 0.1) with the given mean."""
    rng = np.random.default_rng(seed)
    return rng.binomial(10, mean, n) / 10.0


def ev(cand: tuple, champ: tuple | None, pop: float = 0.05, **kw) -> dict:
    def m(t):
        return {"precision@10": t[0], "recall@10": t[1], "coverage": t[2]}
    return {"k": 10, "candidate": m(cand), "champion": m(champ) if champ else None,
            "champion_version": "v0001" if champ else None,
            "popularity": {"precision@10": pop, "recall@10": pop, "coverage": 0.01}, **kw}


def noisy_copy(base: np.ndarray, swaps: int, up: int, seed: int) -> np.ndarray:
    """``base`` with ``swaps`` users moved by one hit (``up`` of them up, the rest down): what
    a retrain of the same configuration looks like user by user."""
    rng = np.random.default_rng(seed)
    out = base.copy()
    idx = rng.choice(np.flatnonzero(base > 0), swaps, replace=False)
    out[idx[:up]] += 0.1
    out[idx[up:]] -= 0.1
    return out


def test_paired_bootstrap_known_answers():
    a = users_precision(0.2, 0)
    same = paired_bootstrap(a, a, 0.95, 500, 1)
    assert same["gain"] == same["low"] == same["high"] == 0.0 and same["users"] == N
    shifted = paired_bootstrap(a + 0.1, a, 0.95, 500, 1)
    assert shifted["low"] == pytest.approx(0.1) and shifted["high"] == pytest.approx(0.1)
    b = noisy_copy(a, 400, 210, 3)
    t1, t2 = paired_bootstrap(b, a, 0.95, 500, 7), paired_bootstrap(b, a, 0.95, 500, 7)
    assert t1 == t2                                            # seeded
    assert t1["low"] < t1["gain"] < t1["high"]
    wider = paired_bootstrap(b, a, 0.99, 500, 7)
    assert wider["low"] < t1["low"] and wider["high"] > t1["high"]
    assert paired_bootstrap(np.array([]), np.array([]), 0.95, 100, 1)["gain"] == 0.0


def test_a_retrain_within_noise_is_refused_a_clearly_better_model_promoted():
    champ = users_precision(0.2, 0)
    rerun = noisy_copy(champ, 400, 212, 3)          # +0.0012 on average: run-to-run noise
    gain = rerun.mean() - champ.mean()
    assert gain >= GATE.min_delta                    # the old rule (≥ champion + min_delta) passed it
    e = ev((rerun.mean(), 0.2, 0.5), (champ.mean(), 0.2, 0.5))
    d = decide(e, {"candidate": rerun, "champion": champ, "popularity": champ}, GATE)
    assert d["promote"] is None and "min_delta 0.001" in d["reason"]
    assert d["test"]["low"] < 0 < d["test"]["high"]

    better = noisy_copy(champ, 400, 360, 3)         # +0.016: 9 of 10 changed users gain a hit
    e = ev((better.mean(), 0.2, 0.5), (champ.mean(), 0.2, 0.5))
    d = decide(e, {"candidate": better, "champion": champ, "popularity": champ}, GATE)
    assert d["promote"] == "candidate" and d["test"]["low"] > GATE.min_delta


def test_an_unchanged_rerun_is_never_promoted():
    champ = users_precision(0.2, 0)
    lucky = champ + 0.1                               # even a huge "gain"
    e = ev((lucky.mean(), 0.2, 0.5), (champ.mean(), 0.2, 0.5),
           candidate_inputs="abc", champion_inputs="abc")
    d = decide(e, {"candidate": lucky, "champion": champ, "popularity": champ}, GATE)
    assert d["promote"] is None and d["reason"].startswith("unchanged rerun")


@pytest.mark.parametrize(("cand", "champ", "promoted", "word"), [
    ((0.30, 0.17, 0.5), (0.2, 0.2, 0.5), None, "guardrail: recall"),
    ((0.30, 0.2, 0.44), (0.2, 0.2, 0.5), None, "guardrail: coverage"),
    ((0.30, 0.19, 0.46), (0.2, 0.2, 0.5), "candidate", "above min_delta"),   # inside both
])
def test_guardrails(cand, champ, promoted, word):
    a, b = users_precision(0.3, 1), users_precision(0.2, 2)
    d = decide(ev(cand, champ), {"candidate": a, "champion": b, "popularity": b}, GATE)
    assert d["promote"] == promoted and word in d["reason"]


def test_first_model_against_popularity_and_the_floor():
    pop = users_precision(0.05, 1)
    good = pop + np.where(np.arange(N) % 5 == 0, 0.1, 0.0)
    d = decide(ev((good.mean(), 0.1, 0.5), None, pop.mean()),
               {"candidate": good, "popularity": pop}, GATE)
    assert d["promote"] == "candidate" and "popularity" in d["reason"]
    tie = noisy_copy(pop, 100, 52, 4)                     # level with popularity
    d = decide(ev((tie.mean(), 0.1, 0.5), None, pop.mean()),
               {"candidate": tie, "popularity": pop}, GATE)
    assert d["promote"] == "popularity"
    assert d["reason"].startswith("popularity is the floor") and "\n" not in d["reason"]


def test_decision_record_holds_gain_interval_and_verdict():
    champ = users_precision(0.2, 0)
    better = noisy_copy(champ, 400, 380, 3)
    rec = decision(ev((better.mean(), 0.2, 0.5), (champ.mean(), 0.2, 0.5)),
                   {"candidate": better, "champion": champ, "popularity": champ}, GATE)
    assert rec["promoted"] and rec["verdict"] == "promote" and rec["compared_with"] == "champion"
    assert rec["gain"] == pytest.approx(better.mean() - champ.mean())
    lo, hi = rec["interval"]
    assert lo < rec["gain"] < hi and rec["test"]["confidence"] == 0.95
    assert rec["version"] is None and rec["min_delta"] == GATE.min_delta
    pop = users_precision(0.05, 1)
    first = decision(ev((pop.mean(), 0.1, 0.5), None, pop.mean()),
                     {"candidate": pop, "popularity": pop}, GATE)
    assert first["compared_with"] == "popularity" and first["champion_score"] is None
    assert first["promoted"] and first["promoted_model"] == "popularity"
    assert first["verdict"] == "popularity floor"


def test_the_reason_names_the_families_and_a_popularity_candidate_is_the_floor():
    """The candidate may be any family: the line names it (and the champion's); when
    validation chose popularity itself, the floor says no learned family beat it there."""
    champ = users_precision(0.2, 0)
    better = noisy_copy(champ, 400, 380, 3)
    d = decide(ev((better.mean(), 0.2, 0.5), (champ.mean(), 0.2, 0.5), candidate_family="ease",
                  champion_family="lightfm"),
               {"candidate": better, "champion": champ, "popularity": champ}, GATE)
    assert d["promote"] == "candidate" and d["reason"].startswith("ease precision@10")
    assert "champion v0001 (lightfm)" in d["reason"]
    pop = users_precision(0.05, 1)
    d = decide(ev((pop.mean(), 0.1, 0.5), None, pop.mean(), candidate_family="popularity"),
               {"candidate": pop, "popularity": pop}, GATE)
    assert d["promote"] == "popularity" and "\n" not in d["reason"]
    assert d["reason"].startswith("popularity is the floor: no learned family beat it on the "
                                  "validation slice")


@pytest.mark.parametrize(("cold", "promoted"), [(0.20, None), (0.235, "candidate")])
def test_cold_start_guardrail_on_the_replay_segment(cold, promoted):
    """A better model overall is still refused when cold users with revealed events get a
    list worse than popularity's by more than gate.max_cold_drop."""
    a, b = users_precision(0.3, 1), users_precision(0.2, 2)
    seg = {"candidate": {"cold_revealed": {"precision@10": cold}},
           "popularity": {"cold_revealed": {"precision@10": 0.25}}}
    gate = GATE.model_copy(update={"max_cold_drop": 0.02})
    d = decide(ev((0.3, 0.2, 0.5), (0.2, 0.2, 0.5), segments=seg),
               {"candidate": a, "champion": b, "popularity": b}, gate)
    assert d["promote"] == promoted
    if promoted is None:
        assert "guardrail: cold users with revealed events" in d["reason"]


def test_a_first_candidate_refused_by_the_cold_guardrail_leaves_popularity_the_champion():
    """With no champion yet, the floor still gets promoted: serving always has a model."""
    a, b = users_precision(0.3, 1), users_precision(0.2, 2)
    seg = {"candidate": {"cold_revealed": {"precision@10": 0.15}},
           "popularity": {"cold_revealed": {"precision@10": 0.25}}}
    d = decide(ev((0.3, 0.2, 0.5), None, segments=seg), {"candidate": a, "popularity": b},
               GATE.model_copy(update={"max_cold_drop": 0.02}))
    assert d["promote"] == "popularity" and "\n" not in d["reason"]
    assert d["reason"].startswith("popularity is the floor: the candidate failed the cold-start")
