"""The serving path shared by the CLI and the API: online features → user vector → top-k."""

from __future__ import annotations

import logging
import time
import zipfile
from dataclasses import dataclass, field

import numpy as np

from pipeline.columns import Columns as C
from pipeline.columns import Feast
from pipeline.columns import Features as F
from pipeline.config import Params, Paths
from pipeline.errors import RecflowError
from pipeline.feature_store import store
from pipeline.feature_store.reader import OnlineReader
from pipeline.features import recent
from pipeline.models.artifact import load_model
from pipeline.models.base import RecommenderBase
from pipeline.models.ranking import exclusion_cells, top_k_indices
from pipeline.models.tokens import model_tokens
from pipeline.registry import versions

log = logging.getLogger("recflow.serving")


@dataclass
class Recommendation:
    user_id: str
    items: list[str]
    scores: list[float]
    model_version: str
    features_source: str  # "online" | "fallback"
    cold_start: bool
    timings_ms: dict[str, float] = field(default_factory=dict)


class NoModel(RecflowError):
    """No champion could be loaded (none promoted yet, or the pointer is corrupt)."""


class Recommender:
    """Holds the champion model and a Feast store; ``reload()`` swaps the model atomically.

    ``load=False`` builds it without a model (the API starts degraded when the champion cannot
    be loaded, and picks it up on a later ``reload()``); ``recommend`` then raises
    :class:`NoModel`.
    """

    def __init__(self, params: Params, paths: Paths, feature_store=None, load: bool = True) -> None:
        self.params, self.paths = params, paths
        self.store = feature_store or store.open_store(paths)
        self.version: str | None = None
        self.model: RecommenderBase | None = None
        self._reader: OnlineReader | None = None
        self.store_error: str | None = None  # why the last online read fell back, if it did
        self.reload_error: str | None = None  # why the last reload() failed, if it did
        if load:
            self.reload()

    def reload(self) -> bool:
        """Load the current champion if it changed; returns whether a new model was loaded.

        Raises a :class:`RecflowError` (the model in use stays; ``reload_error`` keeps the
        message until a reload succeeds) when there is no champion, the pointer is corrupt or
        the version it names cannot be loaded."""
        try:
            changed = self._load_champion()
        except RecflowError as e:
            self.reload_error = str(e)
            raise
        self.reload_error = None
        return changed

    def _load_champion(self) -> bool:
        version = versions.champion(self.paths.registry)
        if version is None:
            raise NoModel(f"{self.paths.registry}: no champion yet. Run 'dvc repro' first.")
        if version == self.version:
            return False
        where = versions.versions_dir(self.paths.registry) / version
        try:
            model = load_model(where)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:  # missing/garbled files
            raise RecflowError(f"{where}: champion {version} cannot be loaded ({type(e).__name__}: "
                               f"{e}); roll back with 'recflow rollback'.") from None
        self.model, self.version = model, version  # one assignment each; readers see old or new
        log.debug("serving model %s", version)
        return True

    def online_features(self, users: list[str]) -> tuple[dict[str, list] | None, str]:
        """The serving service's online features as a column dict, or (None, "fallback") when
        the online store cannot be read (missing, emptied, replaced, corrupt, unreachable).
        Whether it can is decided afresh on every call, so all threads agree and recover
        together; the log gets one line when it fails and one when it is back."""
        try:
            if self._reader is None:  # resolving the service from the registry costs ~20 ms: once
                self._reader = OnlineReader(self.store, Feast.serving_service)
            feats = self._reader.read(users)
        except Exception as e:  # noqa: BLE001 - an unreachable store must not fail the request
            why = str(e) if isinstance(e, store.StoreUnavailable) else f"{type(e).__name__}: {e}"
            if why != self.store_error:
                log.warning("online store unavailable (%s); serving popularity", why)
            self.store_error = why
            return None, "fallback"
        if self.store_error is not None:
            log.warning("online store readable again (was: %s)", self.store_error)
            self.store_error = None
        return feats, "online"

    def recommend(self, user_id: str, k: int) -> Recommendation:
        return self.recommend_many([user_id], k)[0]

    def recommend_many(self, users: list[str], k: int) -> list[Recommendation]:
        model, version = self.model, self.version  # one consistent pair even if reload() runs
        if model is None or version is None:
            raise NoModel(f"{self.paths.registry}: no model loaded; the champion pointer is "
                          "checked every few seconds (see /readyz).")
        t0 = time.perf_counter()
        feats, source = self.online_features(users)
        t1 = time.perf_counter()
        tokens: dict[str, list[str]] = {}
        history: dict[str, list[str]] = {}
        if feats is not None:
            tokens = model_tokens(model, feats)
            for u, seen in zip(feats[C.user], feats.get(F.recent_items) or [], strict=False):
                if seen:
                    history[u] = recent.decode(seen)
        exclude = {u: set(items) for u, items in history.items()}
        idx, sc = top_k_indices(model.scores(users, tokens, history), k,
                                exclusion_cells(users, model.item_index, exclude))
        t2 = time.perf_counter()
        timings = {"lookup_ms": (t1 - t0) * 1e3, "scoring_ms": (t2 - t1) * 1e3}
        out = []
        for r, u in enumerate(users):
            ok = np.isfinite(sc[r])
            out.append(Recommendation(
                user_id=u, items=model.item_ids[idx[r][ok]].tolist(), scores=sc[r][ok].tolist(),
                model_version=version, features_source=source, cold_start=not model.known(u),
                timings_ms=timings))
        return out
