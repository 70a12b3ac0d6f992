"""Validation users cut to a short history: cold users with a few revealed events, made from
warm ones so the validation slice can judge a setting on them (the holdout's
``cold_revealed`` segment is never looked at while choosing).

A copy has done only its 0..n oldest recent items (seeded; 0 is a new user with attributes
only): its history is those items, its
tokens :func:`tokens.short_history_tokens` of the user's own (attributes stay, behaviour is
that of the short history), and it is scored for the user's validation pairs with the user's
fit-part items excluded, as the user is. Its id cannot clash with a real one.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from pipeline.models.base import History, RecommenderBase, TokenMap
from pipeline.models.tokens import short_history_tokens

PREFIX = "\x00short:"


def short_copies(users: list[str], history: History | None, n_users: int, n: int,
                 seed: int) -> dict[str, tuple[str, list[str]]]:
    """copy id → (user, its recent items: the user's 0..``n`` oldest, newest first), for a
    seeded sample of ``n_users`` of the ``users`` with at least two recent items."""
    if n_users <= 0 or not history:
        return {}
    ok = [u for u in users if len(history.get(u, ())) > 1]
    rng = np.random.default_rng(seed + 7907)
    pick = np.sort(rng.choice(len(ok), min(n_users, len(ok)), replace=False)) if ok else []
    out = {}
    for j in pick:
        recent = list(history[ok[j]])
        m = int(rng.integers(0, min(n, len(recent) - 1) + 1))
        out[f"{PREFIX}{ok[j]}"] = (ok[j], recent[-m:] if m else [])
    return out


def with_rows(m: sp.csr_matrix, rows: np.ndarray) -> sp.csr_matrix:
    """``m`` with ``rows`` of it appended (a copy's pairs are its user's)."""
    return sp.vstack([m, m[rows]]).tocsr() if len(rows) else m


def with_short(model: RecommenderBase, copies: dict[str, tuple[str, list[str]]],
               user_tokens: TokenMap | None, history: History | None, n_events: int
               ) -> tuple[TokenMap | None, History]:
    """(tokens, history) with the copies': their history for every family (ALS folds it in),
    their short-history tokens (as of ``n_events`` events) when the model reads user tokens."""
    hist = dict(history or {})
    hist.update({c: items for c, (_, items) in copies.items()})
    if not user_tokens:
        return user_tokens, hist
    which = tuple(model.config().get("user_features", ()))
    items = getattr(model, "item_token_map", None) or {}
    toks = dict(user_tokens)
    toks.update({c: short_history_tokens(user_tokens.get(u, ()), recent, items, which,
                                         n_events) for c, (u, recent) in copies.items()})
    return toks, hist
