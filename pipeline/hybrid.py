"""Feast feature rows → LightFM feature tokens (``name=value`` strings).

Numbers are bucketed on a log2 scale so a token generalises across users/items of a similar
size; categories are used as they are. Missing features give no token.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.columns import Columns as C


def _log2_bucket(x: pd.Series) -> pd.Series:
    v = pd.to_numeric(x, errors="coerce")
    b = np.floor(np.log2(1.0 + v.clip(lower=0)))
    return b.astype("Int64").astype("string")


def _decile(x: pd.Series) -> pd.Series:
    """Rates in [0, 1] → 0..10 (rates above 1, e.g. repeat purchases, land in 10)."""
    v = pd.to_numeric(x, errors="coerce").clip(0, 1)
    return np.floor(v * 10).astype("Int64").astype("string")


_USER = {
    "top_category": lambda df: df.get("top_category"),
    "activity": lambda df: _log2_bucket(df["n_events"]) if "n_events" in df else None,
    "recency": lambda df: _log2_bucket(df["recency_days"]) if "recency_days" in df else None,
}
_ITEM = {
    "category": lambda df: df.get(C.category),
    "popularity": lambda df: _log2_bucket(df["pop_all"]) if "pop_all" in df else None,
    "conversion": lambda df: _decile(df["conversion_rate"]) if "conversion_rate" in df else None,
}


def _tokens(df: pd.DataFrame, key: str, which: tuple[str, ...], table: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {str(k): [] for k in df[key]}
    ids = df[key].astype(str).to_numpy()
    for name in which:
        col = table[name](df)
        if col is None:
            continue
        vals = col.astype("string")
        for i, v in zip(ids, vals, strict=True):
            if v is not pd.NA and v is not None and v != "" and v != "<NA>":
                out[i].append(f"{name}={v}")
    return out


def user_tokens(features: pd.DataFrame, which: tuple[str, ...]) -> dict[str, list[str]]:
    return _tokens(features, C.user, which, _USER)


def item_tokens(features: pd.DataFrame, which: tuple[str, ...]) -> dict[str, list[str]]:
    return _tokens(features, C.item, which, _ITEM)
