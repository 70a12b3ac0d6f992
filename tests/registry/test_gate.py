"""The gate's decision table: first model against popularity, then champion + min_delta and
the recall / coverage guardrails."""

import pytest

from pipeline.config import GateParams
from pipeline.registry.gate import decide, decision

GATE = GateParams(min_delta=0.01, max_recall_drop=0.02, max_coverage_drop=0.05)


def ev(cand: tuple, champ: tuple | None, pop: float = 0.05) -> dict:
    def m(t):
        return {"precision@10": t[0], "recall@10": t[1], "coverage": t[2]}
    return {"k": 10, "candidate": m(cand), "champion": m(champ) if champ else None,
            "popularity": {"precision@10": pop, "recall@10": pop, "coverage": 0.01}}


@pytest.mark.parametrize(("e", "promoted", "word"), [
    (ev((0.10, 0.1, 0.5), None), True, "beats popularity"),
    (ev((0.04, 0.1, 0.5), None), False, "does not beat popularity"),
    (ev((0.05, 0.1, 0.5), None), False, "does not beat popularity"),     # a tie is not a win
    (ev((0.209, 0.2, 0.5), (0.2, 0.2, 0.5)), False, "min_delta"),
    (ev((0.21, 0.2, 0.5), (0.2, 0.2, 0.5)), True, "≥ champion"),
    (ev((0.30, 0.17, 0.5), (0.2, 0.2, 0.5)), False, "guardrail: recall"),
    (ev((0.30, 0.2, 0.44), (0.2, 0.2, 0.5)), False, "guardrail: coverage"),
    (ev((0.30, 0.19, 0.46), (0.2, 0.2, 0.5)), True, "≥ champion"),     # inside both tolerances
])
def test_decide_table(e, promoted, word):
    ok, reason = decide(e, GATE)
    assert ok is promoted and word in reason




def test_decision_record_names_what_it_compared():
    rec = decision(ev((0.21, 0.2, 0.5), (0.2, 0.2, 0.5)), GATE)
    assert rec["promoted"] and rec["compared_with"] == "champion" and rec["version"] is None
    assert rec["delta"] == pytest.approx(0.01) and rec["min_delta"] == GATE.min_delta
    first = decision(ev((0.10, 0.1, 0.5), None), GATE)
    assert first["compared_with"] == "popularity" and first["champion_score"] is None
