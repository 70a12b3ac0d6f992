"""Vectorised top-k over a (users × items) score matrix with per-user exclusions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from pipeline.columns import Columns as C


def exclusion_cells(users: list[str], item_index: dict[str, int],
                    exclude: Mapping[str, Iterable[str]] | None) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) coordinates of excluded (user, item) cells; unknown items are ignored."""
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


#: below this many cells a plain argpartition is as fast as the candidate pass
_LARGE = 1 << 21


def top_k_indices(scores: np.ndarray, k: int, excluded: tuple[np.ndarray, np.ndarray] | None = None,
                  allowed: np.ndarray | None = None, fast: bool = False
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(item indices, scores), each (n_users × min(k, n_items)), best first; excluded cells
    and items outside ``allowed`` (a boolean mask over the item axis) score -inf and sort
    last. ``scores`` is not modified.

    ``fast`` (serving batches, the export): a large matrix takes :func:`_top_k_candidates`,
    the same items about twice as fast; ties at the k-th score may be broken differently, so
    evaluation keeps the plain partition (its figures stay comparable across versions)."""
    s = np.array(scores, dtype=np.float32, copy=True)
    if allowed is not None:
        np.copyto(s, -np.inf, where=~allowed)  # broadcast over the rows, no index arrays
    if excluded is not None and len(excluded[0]):
        s[excluded] = -np.inf
    kk = min(k, s.shape[1])
    if fast and s.size >= _LARGE and 0 < kk * 16 <= s.shape[1]:
        got = _top_k_candidates(s, kk)
        if got is not None:
            return got
    part = np.argpartition(-s, kk - 1, axis=1)[:, :kk] if kk < s.shape[1] else np.tile(np.arange(kk), (len(s), 1))
    ps = np.take_along_axis(s, part, axis=1)
    order = np.argsort(-ps, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(ps, order, axis=1)


def _top_k_candidates(s: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Exact top-k without partitioning every full row: the k-th best score among a strided
    eighth of the columns is a lower bound of the row's k-th best, so every item of the true
    top k scores at least that much. One comparison per row (in cache) keeps those
    candidates (~8k), and only they are partitioned. None when ties make the candidates too
    many (the caller then partitions every row)."""
    n_rows = s.shape[0]
    sample = s[:, ::8]
    thr = np.partition(sample, sample.shape[1] - kk, axis=1)[:, sample.shape[1] - kk]
    idx = np.empty((n_rows, kk), dtype=np.int64)
    val = np.empty((n_rows, kk), dtype=np.float32)
    for r in range(n_rows):
        row = s[r]
        c = np.flatnonzero(row >= thr[r])
        if len(c) > 64 * kk:
            return None
        v = row[c]
        top = np.argpartition(-v, kk - 1)[:kk] if len(c) > kk else np.arange(len(c))
        o = top[np.lexsort((c[top], -v[top]))]  # best first, then by column
        idx[r], val[r] = c[o], v[o]
    return idx, val


def top_k(users: list[str], item_ids: np.ndarray, scores: np.ndarray, k: int,
          exclude: dict[str, set[str]] | None = None,
          item_index: dict[str, int] | None = None) -> pd.DataFrame:
    """Rows (user_id, item_id, score, rank) for the k best non-excluded items of each user."""
    if not users or len(item_ids) == 0:
        return pd.DataFrame({C.user: pd.Series([], dtype=object), C.item: pd.Series([], dtype=object),
                             C.score: pd.Series([], dtype=np.float32),
                             C.rank: pd.Series([], dtype=np.int64)})   # typed: merges on ids work
    index = item_index if item_index is not None else {it: j for j, it in enumerate(item_ids)}
    idx, sc = top_k_indices(scores, k, exclusion_cells(users, index, exclude))
    kk = idx.shape[1]
    keep = np.isfinite(sc)
    u = np.repeat(np.asarray(users, dtype=object), kk).reshape(len(users), kk)
    ranks = np.tile(np.arange(1, kk + 1), (len(users), 1))
    return pd.DataFrame({
        C.user: u[keep], C.item: np.asarray(item_ids, dtype=object)[idx[keep]],
        C.score: sc[keep], C.rank: ranks[keep],
    })
