"""The serving path shared by the CLI and the API: online features → user vector → top-k."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import pandas as pd

from pipeline import registry, store
from pipeline.config import Params, Paths
from pipeline.errors import RecflowError
from pipeline.hybrid import user_tokens
from pipeline.model import LightFMRecommender

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


class Recommender:
    """Holds the champion model and a Feast store; ``reload()`` swaps the model atomically."""

    def __init__(self, params: Params, paths: Paths, feature_store=None) -> None:
        self.params, self.paths = params, paths
        self.store = feature_store or store.open_store(paths)
        self.version: str | None = None
        self.model: LightFMRecommender | None = None
        self.reload()

    def reload(self) -> bool:
        """Load the current champion if it changed; returns whether a new model was loaded."""
        version = registry.champion(self.paths.registry)
        if version is None:
            raise RecflowError(f"{self.paths.registry}: no champion yet. Run 'dvc repro' first.")
        if version == self.version:
            return False
        model = LightFMRecommender.load(registry.versions_dir(self.paths.registry) / version)
        self.model, self.version = model, version  # one assignment each; readers see old or new
        log.debug("serving model %s", version)
        return True

    def online_features(self, users: list[str]) -> tuple[pd.DataFrame | None, str]:
        try:
            return store.online_users(self.store, users), "online"
        except Exception as e:  # noqa: BLE001 - an unreachable store must not fail the request
            log.warning("online store unavailable (%s); serving popularity", type(e).__name__)
            return None, "fallback"

    def recommend(self, user_id: str, k: int) -> Recommendation:
        return self.recommend_many([user_id], k)[0]

    def recommend_many(self, users: list[str], k: int) -> list[Recommendation]:
        model, version = self.model, self.version
        assert model is not None and version is not None
        t0 = time.perf_counter()
        feats, source = self.online_features(users)
        t1 = time.perf_counter()
        tokens: dict[str, list[str]] = {}
        exclude: dict[str, set[str]] = {}
        has_features: dict[str, bool] = {u: False for u in users}
        if feats is not None:
            present = feats[feats["n_events"].notna()] if "n_events" in feats else feats.iloc[0:0]
            tokens = user_tokens(present, self.params.model.user_features)
            for u, rec in zip(present["user_id"], present.get("recent_items", pd.Series(dtype=str)), strict=False):
                exclude[u] = set(filter(None, str(rec or "").split(",")))
                has_features[u] = True
        recs = model.recommend(users, k, exclude=exclude, user_tokens=tokens)
        t2 = time.perf_counter()
        out = []
        by_user = dict(tuple(recs.groupby("user_id", sort=False)))
        for u in users:
            r = by_user.get(u)
            out.append(Recommendation(
                user_id=u,
                items=[] if r is None else r["item_id"].tolist(),
                scores=[] if r is None else [float(s) for s in r["score"]],
                model_version=version,
                features_source=source,
                cold_start=not model.known(u),
                timings_ms={"lookup": (t1 - t0) * 1e3, "scoring": (t2 - t1) * 1e3},
            ))
        return out
