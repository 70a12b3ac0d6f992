"""Implicit signals → one confidence per (user, item): LightFM's ``sample_weight``.

Each event adds its type's weight; a play adds ``weight·watch_fraction`` plus a bonus when
watched past ``strong_threshold`` or a penalty when abandoned before ``abandon_threshold``;
a rating (MovieLens stars) adds ``per_star·(stars − neutral)`` on top of its weight; every
repeat of a play or purchase adds ``repeat_bonus``; with a half-life, an event ``age`` days
older than the newest event (or ``as_of``) counts ``0.5**(age/half_life)``; a count-valued
type (``signals.value_kind``) stands for ``value`` events in one row (weight and repeats). A pair is a positive only when its net signal is > 0, and then
``confidence = 1 + alpha·log(1 + net/epsilon)``. Pairs never seen are unknown, not negative.

Example (defaults): view + click + purchase = 1 + 2 + 5 = 8 → 1 + log(9) ≈ 3.20;
a lone skip = -1.5 → not a positive.
"""

from __future__ import annotations

from datetime import datetime

from pipeline.columns import Columns as C
from pipeline.config import SignalParams
from pipeline.io import sql_str


def _kind_in(sp: SignalParams, kind: str) -> str:
    """SQL: the event's type is one whose value means ``kind`` (FALSE when none does)."""
    types = [t for t, k in sp.value_kind.items() if k == kind]
    return f"{C.event} IN ({', '.join(sql_str(t) for t in types)})" if types else "FALSE"


def event_weight_sql(sp: SignalParams) -> str:
    """SQL expression: the signal one event row contributes (before decay).

    The value of an event means what ``signals.value_kind`` says for its type: a watch
    fraction (the watch rules), stars (the rating rule) or a count (``n`` events in one row:
    ``n·weight``; repeats below)."""
    cases = " ".join(f"WHEN {sql_str(t)} THEN {float(w)}" for t, w in sp.weights.items())
    base = f"(CASE {C.event} {cases} ELSE 0.0 END)"
    w = sp.watch
    play = (
        f"(CASE WHEN {_kind_in(sp, 'fraction')} AND {C.value} IS NOT NULL THEN "
        f"{base} * ({C.value} - 1.0)"  # weight·fraction instead of the flat weight
        f" + (CASE WHEN {C.value} >= {w.strong_threshold} THEN {w.strong_bonus} ELSE 0 END)"
        f" + (CASE WHEN {C.value} < {w.abandon_threshold} THEN {w.abandon_penalty} ELSE 0 END)"
        " ELSE 0 END)"
    )
    r = sp.rating
    rating = (
        f"(CASE WHEN {_kind_in(sp, 'stars')} AND {C.value} IS NOT NULL THEN "
        f"{r.per_star} * ({C.value} - {r.neutral}) ELSE 0 END)"
    )
    count = (f"(CASE WHEN {_kind_in(sp, 'count')} AND {C.value} IS NOT NULL THEN "
             f"{base} * ({C.value} - 1.0) ELSE 0 END)")  # n·weight instead of the flat weight
    return f"({base} + {play} + {rating} + {count})"


def _times_sql(sp: SignalParams) -> str:
    """SQL: how many events one row stands for (its count for count-valued types, else 1)."""
    return f"(CASE WHEN {_kind_in(sp, 'count')} THEN coalesce({C.value}, 1.0) ELSE 1.0 END)"


def confidence_sql(sp: SignalParams, source: str, as_of: datetime | None = None,
                   flags: dict[str, str] | None = None) -> str:
    """SQL over ``source`` (a table expression of canonical events) giving per pair:
    user_id, item_id, net, confidence, n_events, last_ts. Only net > 0 rows are returned.
    Decay (when ``half_life_days`` is set) is measured from ``as_of``, else the newest event.
    ``flags``: name → a per-event boolean SQL expression; each becomes a per-pair column, true
    when any of the pair's events satisfies it (the evaluation target uses one)."""
    flags = flags or {}
    flag_cols = "".join(f", bool_or({expr}) AS {name}" for name, expr in flags.items())
    flag_out = "".join(f", {name}" for name in flags)
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
        SELECT *, {event_weight_sql(sp)} * {decay} AS w, {_times_sql(sp)} AS times
        FROM {source}
    ), p AS (
        SELECT {C.user}, {C.item},
               sum(w) + {sp.repeat_bonus} * greatest(0,
                   coalesce(sum(times) FILTER (WHERE {C.event} = 'play'), 0) - 1)
                      + {sp.repeat_bonus} * greatest(0,
                   coalesce(sum(times) FILTER (WHERE {C.event} = 'purchase'), 0) - 1) AS net,
               count(*) AS n_events,
               max({C.ts}) AS last_ts{flag_cols}
        FROM e GROUP BY {C.user}, {C.item}
    )
    SELECT {C.user}, {C.item}, net,
           1 + {sp.alpha} * ln(1 + net / {sp.epsilon}) AS {C.confidence},
           n_events, last_ts{flag_out}
    FROM p WHERE net > 0
    """
