"""What serving knows about items besides the model: which ids exist, their categories, and
the champion's item vectors normalised for cosine similarity.

Built once per champion (at reload), so a request only indexes arrays: business filters are
boolean masks over the model's item axis, similar items one (n × d) @ (d × items) product.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.columns import Columns as C
from pipeline.config import Params, Paths
from pipeline.models.base import RecommenderBase, Unsupported


@dataclass(frozen=True)
class Filters:
    """The business rules of one request; ``None`` = not given. Applied before top-k."""

    exclude: tuple[str, ...] | None = None             # item ids never to return
    categories: tuple[str, ...] | None = None          # only items in these categories
    exclude_categories: tuple[str, ...] | None = None  # no item in these categories
    allowed_items: tuple[str, ...] | None = None       # only these items (a candidate list)

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.exclude, self.categories,
                                           self.exclude_categories, self.allowed_items))


def _category_table(paths: Paths) -> pd.DataFrame:
    """(item_id, category) of every catalogued item: the validated items table, plus items
    that only the item features know (latest snapshot); empty when neither exists."""
    parts = []
    if paths.validated_items.exists():
        parts.append(pd.read_parquet(paths.validated_items, columns=[C.item, C.category]))
    if paths.item_features.exists():
        f = pd.read_parquet(paths.item_features, columns=[C.item, C.category, C.ts])
        parts.append(f.sort_values(C.ts).drop_duplicates(C.item, keep="last")[[C.item, C.category]])
    if not parts:
        return pd.DataFrame({C.item: pd.Series([], dtype=object), C.category: pd.Series([], dtype=object)})
    t = pd.concat(parts, ignore_index=True)
    t[C.item] = t[C.item].astype(str)
    t[C.category] = t[C.category].astype(object).where(t[C.category].notna(), None)
    return t.drop_duplicates(C.item, keep="first")


class Catalogue:
    """Items of one champion: ids events may name, category codes, normalised vectors."""

    def __init__(self, model: RecommenderBase, params: Params, paths: Paths) -> None:
        self.item_ids = model.item_ids
        self.index = model.item_index
        #: the same ids as a hash index: a batch's item lists are looked up in one call
        self.positions = pd.Index(np.asarray(self.item_ids, dtype=object))
        table = _category_table(paths)
        self.category: dict[str, str | None] = dict(zip(table[C.item], table[C.category], strict=True))
        #: every item id an event may name: the model's, the catalogue's, the features'
        self.known: frozenset[str] = frozenset(self.category) | frozenset(map(str, self.item_ids))
        cats = sorted({c for c in self.category.values() if c is not None})
        self.codes = {c: j for j, c in enumerate(cats)}
        self.cat_codes = np.asarray([self.codes.get(self.category.get(str(i)) or "", -1)
                                     for i in self.item_ids], dtype=np.int32)
        self._model = model
        self._masks: dict[tuple, np.ndarray] = {}
        self._item_features = params.model.item_features
        try:
            v = np.asarray(model.item_vectors(), dtype=np.float32)
            n = np.linalg.norm(v, axis=1, keepdims=True)
            self.vectors: np.ndarray | None = v / np.where(n > 0, n, 1.0)
            #: (d × items), contiguous: a query is one gemv over it (no transposed view)
            self.vectors_t: np.ndarray | None = np.ascontiguousarray(self.vectors.T)
            self.vectors_error: str | None = None
        except Unsupported as e:
            self.vectors = self.vectors_t = None
            self.vectors_error = str(e)

    # ---- filters ------------------------------------------------------------------------
    def _in(self, items: tuple[str, ...]) -> np.ndarray:
        cols = [j for j in map(self.index.get, items) if j is not None]
        return np.asarray(cols, dtype=np.int64)

    def mask(self, f: Filters | None) -> np.ndarray | None:
        """Boolean mask over the model's items of what ``f`` lets through (None: no filter)."""
        if not f:
            return None
        m = self._category_mask(f.categories, f.exclude_categories).copy()
        if f.allowed_items is not None:
            keep = np.zeros_like(m)
            keep[self._in(f.allowed_items)] = True
            m &= keep
        if f.exclude is not None:
            m[self._in(f.exclude)] = False
        return m

    def _category_mask(self, categories: tuple[str, ...] | None,
                       exclude_categories: tuple[str, ...] | None) -> np.ndarray:
        """The category part of a filter; the same few category sets recur, so it is kept
        (per champion, at most 256 sets; a dict write is atomic, threads may race harmlessly)."""
        key = (categories, exclude_categories)
        hit = self._masks.get(key)
        if hit is not None:
            return hit
        m = np.ones(len(self.item_ids), dtype=bool)
        if categories is not None:
            m &= np.isin(self.cat_codes, [self.codes[c] for c in categories if c in self.codes])
        if exclude_categories is not None:
            m &= ~np.isin(self.cat_codes, [self.codes[c] for c in exclude_categories
                                           if c in self.codes])
        if len(self._masks) < 256:
            self._masks[key] = m
        return m

    # ---- similar items ------------------------------------------------------------------
    def query_vectors(self, items: list[str]) -> tuple[np.ndarray, dict[str, str]]:
        """(normalised vectors of ``items``, {id: why it has none}). A catalogued item the
        model was not fitted on gets a vector from its attribute tokens when the family can."""
        if self.vectors is None:
            raise Unsupported(self.vectors_error or "no item vectors")
        out = np.zeros((len(items), self.vectors.shape[1]), dtype=np.float32)
        new = []
        for r, it in enumerate(items):
            j = self.index.get(it)
            if j is not None:
                out[r] = self.vectors[j]
            elif it in self.known:
                new.append(r)
        missing = {it: "not in the catalogue" for it in items if it not in self.known}
        if new:
            ids = [items[r] for r in new]
            tokens = {it: ([f"category={self.category[it]}"] if "category" in self._item_features
                           and self.category.get(it) is not None else []) for it in ids}
            why = "new to the model and it has no attribute token the model knows"
            try:
                v = self._model.token_item_vectors(tokens, ids)
            except Unsupported as e:
                v, why = np.zeros((len(ids), out.shape[1]), dtype=np.float32), f"new to the model ({e})"
            n = np.linalg.norm(v, axis=1, keepdims=True)
            out[new] = v / np.where(n > 0, n, 1.0)
            missing.update({ids[i]: why for i in np.flatnonzero(n.ravel() == 0)})
        return out, missing
