"""Implicit signals → one confidence per (user, item): LightFM's ``sample_weight``.

Each event adds its type's weight; a play adds ``weight·watch_fraction`` plus a bonus when
watched past ``strong_threshold`` or a penalty when abandoned before ``abandon_threshold``;
a rating (MovieLens stars) adds ``per_star·(stars − neutral)`` on top of its weight; every
repeat of a play or purchase adds ``repeat_bonus``; with a half-life, an event ``age`` days
older than the newest event (or ``as_of``) counts ``0.5**(age/half_life)``. A pair is a positive only when its net signal is > 0, and then
``confidence = 1 + alpha·log(1 + net/epsilon)``. Pairs never seen are unknown, not negative.

Example (defaults): view + click + purchase = 1 + 2 + 5 = 8 → 1 + log(9) ≈ 3.20;
a lone skip = -1.5 → not a positive.
"""

from __future__ import annotations

from datetime import datetime

from pipeline.columns import Columns as C
from pipeline.config import SignalParams
from pipeline.io import sql_str


def event_weight_sql(sp: SignalParams) -> str:
    """SQL expression: the signal one event row contributes (before decay)."""
    cases = " ".join(f"WHEN {sql_str(t)} THEN {float(w)}" for t, w in sp.weights.items())
    base = f"(CASE {C.event} {cases} ELSE 0.0 END)"
    w = sp.watch
    play = (
        f"(CASE WHEN {C.event} = 'play' AND {C.value} IS NOT NULL THEN "
        f"{base} * ({C.value} - 1.0)"  # weight·fraction instead of the flat weight
        f" + (CASE WHEN {C.value} >= {w.strong_threshold} THEN {w.strong_bonus} ELSE 0 END)"
        f" + (CASE WHEN {C.value} < {w.abandon_threshold} THEN {w.abandon_penalty} ELSE 0 END)"
        " ELSE 0 END)"
    )
    r = sp.rating
    rating = (
        f"(CASE WHEN {C.event} = 'rating' AND {C.value} IS NOT NULL THEN "
        f"{r.per_star} * ({C.value} - {r.neutral}) ELSE 0 END)"
    )
    return f"({base} + {play} + {rating})"


def confidence_sql(sp: SignalParams, source: str, as_of: datetime | None = None) -> str:
    """SQL over ``source`` (a table expression of canonical events) giving per pair:
    user_id, item_id, net, confidence, n_events, last_ts. Only net > 0 rows are returned.
    Decay (when ``half_life_days`` is set) is measured from ``as_of``, else the newest event."""
    decay = "1.0"
    if sp.half_life_days:
        ref = (f"epoch(TIMESTAMPTZ {sql_str(as_of.isoformat())})" if as_of is not None
               else f"(SELECT epoch(max({C.ts})) FROM {source})")
        decay = (
            f"pow(0.5, greatest(0, {ref} - epoch({C.ts}))"
            f" / ({sp.half_life_days} * 86400.0))"
        )
    return f"""
    WITH e AS (
        SELECT {C.user}, {C.item}, {C.event}, {C.ts},
               {event_weight_sql(sp)} * {decay} AS w
        FROM {source}
    ), p AS (
        SELECT {C.user}, {C.item},
               sum(w) + {sp.repeat_bonus} * greatest(0,
                   count(*) FILTER (WHERE {C.event} = 'play') - 1)
                      + {sp.repeat_bonus} * greatest(0,
                   count(*) FILTER (WHERE {C.event} = 'purchase') - 1) AS net,
               count(*) AS n_events,
               max({C.ts}) AS last_ts
        FROM e GROUP BY ALL
    )
    SELECT {C.user}, {C.item}, net,
           1 + {sp.alpha} * ln(1 + net / {sp.epsilon}) AS {C.confidence},
           n_events, last_ts
    FROM p WHERE net > 0
    """
