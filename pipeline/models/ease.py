"""EASE (Steck 2019, "Embarrassingly Shallow Autoencoders"): a closed-form item-item model.

With X the binary (users × items) training matrix and G = XᵀX, the weights are
B = I − P · diag(1 / diag(P)),  P = (G + λI)⁻¹,  so diag(B) = 0 (an item never explains itself),
and a user's scores are x_u · B: the sum of B's rows of the items the user has.

The inverse is a dense items × items solve (Cholesky, float32): ~n³/3 flops twice, so the
family is for small catalogues (``baselines.ease.max_items``). The artifact keeps B and each
training user's items (CSR arrays), so a known user is scored from their training items plus
whatever ``history`` (the online store's recent items) adds; a user with neither gets the
popularity order.
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pipeline.columns import Columns as C
from pipeline.models.base import History, TokenMap, UserRowsModel
from pipeline.models.popularity import catalogue, popularity_scores


def gram(train: pd.DataFrame, item_ids: np.ndarray) -> tuple[np.ndarray, sp.csr_matrix, np.ndarray]:
    """(G = XᵀX as a dense float32 array, X as CSR, the sorted user ids) of the binary
    (user × item) matrix of ``train``; columns follow ``item_ids``."""
    users = catalogue(train, C.user)
    uidx = {u: j for j, u in enumerate(users)}
    iidx = {i: j for j, i in enumerate(item_ids)}
    pairs = train[[C.user, C.item]].astype(str).drop_duplicates()
    r = pairs[C.user].map(uidx).to_numpy()
    c = pairs[C.item].map(iidx).to_numpy()
    x = sp.csr_matrix((np.ones(len(pairs), dtype=np.float32), (r, c)),
                      shape=(len(users), len(item_ids)))
    x.sort_indices()
    return np.asarray((x.T @ x).toarray(), dtype=np.float32), x, users


def ease_weights(g: np.ndarray, regularization: float) -> np.ndarray:
    """B for the Gram matrix ``g`` (not modified) and λ = ``regularization``.

    G + λI is symmetric positive definite for λ > 0, so a Cholesky factor and its inverse
    (LAPACK potrf + potri) replace a general inverse at a third of the cost. Both run in place
    on one Fortran-ordered copy, so the peak is about two n × n float32 arrays (``g`` and B)."""
    from scipy.linalg import lapack

    n = len(g)
    a = np.array(g, dtype=np.float32, order="F", copy=True)
    a[np.diag_indices(n)] += np.float32(regularization)
    factor, info = lapack.spotrf(a, lower=0, overwrite_a=1, clean=0)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: G + {regularization}·I is not positive definite")
    p, info = lapack.spotri(factor, lower=0, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: G + {regularization}·I cannot be inverted")
    step = 1024   # potri fills the upper triangle only: mirror it, a block at a time
    for i in range(0, n, step):
        blk = p[i:i + step, i:i + step]
        blk[...] = np.triu(blk) + np.triu(blk, 1).T
        p[i:i + step, :i] = p[:i, i:i + step].T
    p = p.T       # P is symmetric: its C-ordered view is P itself, without a copy
    d = np.diag(p).copy()
    p /= -d[None, :]
    np.fill_diagonal(p, 0.0)
    return p


class EASE(UserRowsModel):
    """Closed-form item-item weights; known users keep their training items in the artifact."""

    FORMAT = "recflow-ease-v1"
    ARRAYS = ("weights", "user_indptr", "user_indices", "popularity")

    def __init__(self, regularization: float = 500.0) -> None:
        super().__init__()
        self.regularization = float(regularization)

    def config(self) -> dict:
        return {"regularization": self.regularization}

    @classmethod
    def from_config(cls, config: dict) -> Self:
        return cls(**config)

    def _fit(self, train: pd.DataFrame, user_tokens: TokenMap, item_tokens: TokenMap,
             gram_matrix: tuple[np.ndarray, sp.csr_matrix, np.ndarray] | None = None,
             **kw: Any) -> None:
        """``gram_matrix``: :func:`gram` of ``train`` when the caller already has it (one Gram
        for every λ of a search)."""
        self.item_ids = catalogue(train, C.item)
        g, x, users = gram_matrix if gram_matrix is not None else gram(train, self.item_ids)
        self._index_users(users)
        self.weights = ease_weights(g, self.regularization)
        self.user_indptr = x.indptr.astype(np.int64)
        self.user_indices = x.indices.astype(np.int32)
        self.popularity = popularity_scores(train, self.item_ids)

    def _items_of(self, users: list[str], history: History | None) -> sp.csr_matrix:
        """Binary (users × items): training items ∪ history items (unknown items ignored)."""
        rows, cols = [], []
        index = self.item_index
        for r, u in enumerate(users):
            j = self._uidx.get(u)
            own = self.user_indices[self.user_indptr[j]:self.user_indptr[j + 1]] if j is not None \
                else np.zeros(0, dtype=np.int32)
            extra = [index[i] for i in (history or {}).get(u, ()) if i in index]
            items = np.union1d(own, np.asarray(extra, dtype=np.int32))
            rows.append(np.full(len(items), r, dtype=np.int64))
            cols.append(items)
        r = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        c = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
        return sp.csr_matrix((np.ones(len(r), dtype=np.float32), (r, c.astype(np.int64))),
                             shape=(len(users), len(self.item_ids)))

    def scores(self, users: list[str], user_tokens: TokenMap | None = None,
               history: History | None = None) -> np.ndarray:
        """x_u · B for users with items (training or history), popularity for the others."""
        x = self._items_of(users, history)
        s = np.asarray(x @ self.weights, dtype=np.float32)
        empty = np.diff(x.indptr) == 0
        if empty.any():
            s[empty] = self.popularity[None, :]
        return s

    def item_vectors(self) -> np.ndarray:
        """Row i of B: how strongly item i's presence predicts each other item (the item-item
        weights themselves), so the cosine of two rows compares what the items go with."""
        return self.weights
