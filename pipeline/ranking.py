"""Vectorised top-k over a (users × items) score matrix with per-user exclusions."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.columns import Columns as C


def exclusion_mask(users: list[str], item_index: dict[str, int], exclude: dict[str, set[str]] | None,
                   n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) coordinates of excluded (user, item) cells."""
    rows: list[int] = []
    cols: list[int] = []
    if exclude:
        for r, u in enumerate(users):
            for it in exclude.get(u, ()):
                j = item_index.get(it)
                if j is not None:
                    rows.append(r)
                    cols.append(j)
    return np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)


def top_k(users: list[str], item_ids: np.ndarray, scores: np.ndarray, k: int,
          exclude: dict[str, set[str]] | None = None) -> pd.DataFrame:
    """Rows (user_id, item_id, score, rank) for the k best non-excluded items of each user."""
    n_items = len(item_ids)
    if not users or n_items == 0:
        return pd.DataFrame({C.user: [], C.item: [], C.score: [], C.rank: []})
    s = np.array(scores, dtype=np.float32, copy=True)
    index = {it: j for j, it in enumerate(item_ids)}
    r, c = exclusion_mask(users, index, exclude, n_items)
    s[r, c] = -np.inf
    kk = min(k, n_items)
    part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
    ps = np.take_along_axis(s, part, axis=1)
    order = np.argsort(-ps, axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1)
    sc = np.take_along_axis(ps, order, axis=1)
    keep = np.isfinite(sc)
    u = np.repeat(np.asarray(users, dtype=object), kk).reshape(len(users), kk)
    ranks = np.tile(np.arange(1, kk + 1), (len(users), 1))
    return pd.DataFrame({
        C.user: u[keep], C.item: np.asarray(item_ids, dtype=object)[idx[keep]],
        C.score: sc[keep], C.rank: ranks[keep],
    })


def recommend_batched(model, users: list[str], k: int, exclude: dict[str, set[str]] | None = None,
                      user_tokens: dict[str, list[str]] | None = None,
                      batch: int = 2048) -> pd.DataFrame:
    """The model contract's ``recommend`` from its ``scores``: batches keep memory bounded."""
    parts = [top_k(users[s:s + batch], model.item_ids, model.scores(users[s:s + batch], user_tokens),
                   k, exclude) for s in range(0, len(users), batch)]
    return pd.concat(parts, ignore_index=True) if parts else top_k([], model.item_ids,
                                                                      np.zeros((0, 0)), k)
