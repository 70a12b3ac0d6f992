"""Feast feature rows → LightFM feature tokens (``name=value`` strings).

Numbers are bucketed on a log2 scale so a token generalises across users/items of a similar
size; categories are used as they are. Missing features give no token. Works on a DataFrame
or on the column dict Feast's ``get_online_features(...).to_dict()`` returns, so training and
serving tokenise with the same code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pipeline.columns import Columns as C
from pipeline.columns import Features as F


def _missing(v: Any) -> bool:
    return v is None or v == "" or (isinstance(v, float) and math.isnan(v)) or str(v) == "<NA>"


def _number(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def _log2_bucket(v: Any) -> str | None:
    x = _number(v)
    return None if x is None else str(int(math.floor(math.log2(1.0 + max(x, 0.0)))))


def _decile(v: Any) -> str | None:
    """Rates in [0, 1] → 0..10 (rates above 1, e.g. repeat purchases, land in 10)."""
    x = _number(v)
    return None if x is None else str(int(math.floor(min(max(x, 0.0), 1.0) * 10)))


# token name → (source column, value → token value)
_USER: dict[str, tuple[str, Callable[[Any], str | None]]] = {
    "top_category": (F.top_category, str),
    "activity": (F.n_events, _log2_bucket),
    "recency": (F.recency_days, _log2_bucket),
}
_ITEM: dict[str, tuple[str, Callable[[Any], str | None]]] = {
    "category": (F.category, str),
    "popularity": (F.pop_all, _log2_bucket),
    "conversion": (F.conversion_rate, _decile),
}


def _tokens(rows: Mapping[str, Sequence], key: str, which: tuple[str, ...], table: dict) -> dict[str, list[str]]:
    ids = [str(k) for k in rows[key]]
    out: dict[str, list[str]] = {i: [] for i in ids}
    for name in which:
        col, fn = table[name]
        if col not in rows:
            continue
        for i, v in zip(ids, list(rows[col]), strict=True):
            if not _missing(v):
                t = fn(v)
                if t is not None:
                    out[i].append(f"{name}={t}")
    return out


def user_columns(which: tuple[str, ...]) -> list[str]:
    """The feature columns :func:`user_tokens` reads for the token names ``which``."""
    return [_USER[name][0] for name in which]


def user_tokens(rows: Mapping[str, Sequence], which: tuple[str, ...]) -> dict[str, list[str]]:
    return _tokens(rows, C.user, which, _USER)


def item_tokens(rows: Mapping[str, Sequence], which: tuple[str, ...]) -> dict[str, list[str]]:
    return _tokens(rows, C.item, which, _ITEM)
