"""The model contract every recommender satisfies (RecTools' ``ModelBase``, implicit's
``RecommenderBase``): public ``fit`` → private ``_fit``, ``scores``, one ``recommend``, and
``save``/``load`` as arrays (``model.npz``) + JSON (``model.json``), never a pickle.

A family declares its ``FORMAT`` (the artifact tag), the names of its scoring ``ARRAYS``, and
how its JSON config and metadata round-trip; everything else is written here once, so
evaluation and serving treat every family alike.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from pipeline.errors import RecflowError
from pipeline.models.ranking import top_k

TokenMap = dict[str, list[str]]
#: user → the items they interacted with most recently, newest first (the online store's
#: ``recent_items``). Families that can fold a user in from their items (ALS, EASE, a
#: session-aware hybrid) use it; the others ignore it.
History = dict[str, list[str]]
#: an artifact folder: the scoring arrays and the JSON (format, config, ids, extras)
ARRAYS_FILE = "model.npz"
META_FILE = "model.json"

#: FORMAT → family class; filled as family modules are imported (see models.artifact)
FAMILIES: dict[str, type[RecommenderBase]] = {}


class ArtifactError(ValueError):
    """A model folder that is not a readable artifact of the expected family."""


class Unsupported(RecflowError):
    """The family cannot do this (popularity has no item representations, for one)."""


class RecommenderBase:
    """fit → scores → recommend → save/load. Unknown users get the popularity order."""

    FORMAT: ClassVar[str]
    ARRAYS: ClassVar[tuple[str, ...]]
    #: arrays an artifact may lack (written by a later version of the family)
    OPTIONAL_ARRAYS: ClassVar[tuple[str, ...]] = ()

    item_ids: np.ndarray
    popularity: np.ndarray

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if "FORMAT" in cls.__dict__:
            FAMILIES[cls.FORMAT] = cls

    def __init__(self) -> None:
        self.is_fitted = False
        self.meta: dict = {}

    # ---- to implement -------------------------------------------------------------------
    def _fit(self, train: pd.DataFrame, user_tokens: TokenMap, item_tokens: TokenMap,
             **kw: Any) -> None:
        raise NotImplementedError

    def scores(self, users: list[str], user_tokens: TokenMap | None = None,
               history: History | None = None) -> np.ndarray:
        """(len(users) × len(item_ids)) scores, higher is better. ``history`` is what serving
        read from the online store (and evaluation as of the cutoff): recent items per user."""
        raise NotImplementedError

    def item_vectors(self) -> np.ndarray:
        """(n_items × d) item representations aligned with ``item_ids``: what item-to-item
        similarity (cosine) is computed on. Families without any raise :class:`Unsupported`."""
        raise Unsupported(f"{type(self).__name__} has no item representations: item "
                          "similarity needs a factor model (LightFM, ALS, ...).")

    def token_item_vectors(self, item_tokens: TokenMap, items: list[str]) -> np.ndarray:
        """(len(items) × d) representations of items the model was not fitted on, built from
        their attribute tokens (rows of zeros when no token is known to the model). Only a
        family with token embeddings can; the others raise :class:`Unsupported`."""
        raise Unsupported(f"{type(self).__name__} cannot represent an item from its attributes "
                          "alone (no token embeddings).")

    def config(self) -> dict:
        """The unfitted configuration as JSON (``from_config`` builds the same model)."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict) -> Self:
        raise NotImplementedError

    def _meta(self) -> dict:
        """JSON metadata besides the arrays (ids, vocabularies)."""
        return {"item_ids": list(self.item_ids)}

    def _restore(self, meta: dict) -> None:
        self.item_ids = np.asarray(meta["item_ids"], dtype=object)

    # ---- written once -------------------------------------------------------------------
    def fit(self, train: pd.DataFrame, user_tokens: TokenMap | None = None,
            item_tokens: TokenMap | None = None, **kw: Any) -> Self:
        """``train``: positives (user_id, item_id[, confidence]). Returns self."""
        self._fit(train, user_tokens or {}, item_tokens or {}, **kw)
        self.is_fitted = True
        self._iidx_cache: dict[str, int] | None = None
        return self

    @property
    def item_index(self) -> dict[str, int]:
        """item_id → column of the score matrix (built once)."""
        if getattr(self, "_iidx_cache", None) is None:
            self._iidx_cache = {it: j for j, it in enumerate(self.item_ids)}
        return self._iidx_cache  # type: ignore[return-value]

    def known(self, user: str) -> bool:
        """Whether ``user`` had interactions the model was fitted on."""
        return False

    def recommend(self, users: list[str], k: int, exclude: dict[str, set[str]] | None = None,
                  user_tokens: TokenMap | None = None, batch: int = 2048,
                  history: History | None = None) -> pd.DataFrame:
        """Rows (user_id, item_id, score, rank) of each user's k best items not in
        ``exclude[user]``; scored ``batch`` users at a time so memory stays bounded."""
        parts = [top_k(users[s:s + batch], self.item_ids,
                       self.scores(users[s:s + batch], user_tokens, history), k, exclude, self.item_index)
                 for s in range(0, len(users), batch)]
        return (pd.concat(parts, ignore_index=True) if parts
                else top_k([], self.item_ids, np.zeros((0, 0)), k))

    def state(self) -> dict[str, np.ndarray]:
        """A copy of the scoring arrays (to keep the best epoch while training goes on)."""
        return {k: np.array(getattr(self, k), copy=True) for k in self._arrays()}

    def _arrays(self) -> tuple[str, ...]:
        return (*self.ARRAYS, *(k for k in self.OPTIONAL_ARRAYS if hasattr(self, k)))

    def restore(self, state: dict[str, np.ndarray]) -> None:
        for k, v in state.items():
            setattr(self, k, v)

    def save(self, directory: Path, extra: dict | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(directory / ARRAYS_FILE, **{k: getattr(self, k) for k in self._arrays()})
        meta = {"format": self.FORMAT, "config": self.config(), **self._meta(), **(extra or {})}
        (directory / META_FILE).write_text(json.dumps(meta))
        self._save_parts(directory)

    @classmethod
    def load(cls, directory: Path) -> Self:
        meta = read_meta(directory)
        if meta.get("format") != cls.FORMAT:
            raise ArtifactError(f"{directory}: not a {cls.FORMAT} model artifact "
                                f"(format {meta.get('format')!r})")
        self = cls.from_config(meta["config"])
        arrays = np.load(directory / ARRAYS_FILE, allow_pickle=False)
        for k in cls.ARRAYS:
            setattr(self, k, arrays[k])
        for k in cls.OPTIONAL_ARRAYS:
            if k in arrays:
                setattr(self, k, arrays[k])
        self._restore(meta)
        self._load_parts(directory)
        self.meta = meta
        self.is_fitted = True
        return self

    def _save_parts(self, directory: Path) -> None:
        """Artifacts of sub-models inside ``directory`` (a blend's components); none here."""

    def _load_parts(self, directory: Path) -> None:
        """Read what :meth:`_save_parts` wrote."""


class UserRowsModel(RecommenderBase):
    """A family with a row per training user (``user_ids``, kept in the JSON): those users are
    the ones it knows."""

    user_ids: np.ndarray

    def _index_users(self, user_ids) -> None:
        self.user_ids = np.asarray(user_ids, dtype=object)
        self._uidx = {u: j for j, u in enumerate(self.user_ids)}

    def known(self, user: str) -> bool:
        return user in self._uidx

    def _meta(self) -> dict:
        return {"user_ids": list(self.user_ids), **super()._meta()}

    def _restore(self, meta: dict) -> None:
        super()._restore(meta)
        self._index_users(meta["user_ids"])


def read_meta(directory: Path) -> dict:
    f = directory / META_FILE
    try:
        meta = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{f}: not a readable model artifact ({e}).") from None
    if not isinstance(meta, dict):
        raise ArtifactError(f"{f}: not a readable model artifact.")
    if "config" not in meta and "params" in meta:  # LightFM artifacts before the contract
        meta["config"] = meta["params"]
    return meta
