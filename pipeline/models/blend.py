"""Blend: a weighted sum of the per-user-normalised scores of several tuned families.

Each component scores the user as it would alone (LightFM from tokens, ALS from its factors or
a fold-in of ``history``, EASE from training items ∪ ``history``); each row is normalised per
user (:func:`normalise`: z-score over the component's catalogue, so families whose raw scores
live on different scales add up), multiplied by the component's weight and summed. The
weights are chosen on the validation slice (:mod:`pipeline.evaluation.blend`), never on the
holdout.

Items: the blend's catalogue is the union of its components'; an item a component does not
know gets 0 from it — the user's mean after normalisation, "no opinion" — so a LightFM cold
item (scored from its tokens) stays rankable. A user no component knows gets each
component's popularity fallback, blended: a popularity order.

The artifact is the usual ``model.npz`` + ``model.json`` (format, weights, the components'
configurations) and each component's own artifact in ``components/<family>/``, so nothing is
pickled and each part loads with its family's ``load``. The configuration names every
component's settings (LightFM's with early stopping's best epoch count), so
``Blend.from_config(config).fit(...)`` refits every component — the serving refit and the
champion's refit on another split go through it like any family. The feature keys a caller
reads to build tokens (``user_features``, ``item_features``, ``buckets``, ...) are those of
the component that reads features, lifted to the top of the configuration.

Item similarity (``item_vectors``) comes from one component: the highest-weighted one that
has item representations (``similar_from`` in the JSON); item vectors from attribute tokens
only when that component is LightFM.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd

from pipeline.models import als, ease, hybrid, popularity  # noqa: F401 - component families register
from pipeline.models.base import (
    FAMILIES,
    ArtifactError,
    History,
    RecommenderBase,
    TokenMap,
    Unsupported,
    read_meta,
)
from pipeline.models.popularity import popularity_scores

COMPONENTS_DIR = "components"
#: configuration keys that tell a caller which features to build tokens from (lifted from the
#: component that reads features)
FEATURE_KEYS = ("user_features", "item_features", "buckets", "session_items", "cold_items")


def normalise(s: np.ndarray) -> np.ndarray:
    """Each row as z-scores, (s − mean) / std over its items, in float32 (a new array); a row
    whose scores are all equal becomes zeros. E.g. [1, 2, 3] → [−1.22, 0, 1.22]."""
    out = np.array(s, dtype=np.float32, copy=True)
    if out.size == 0:
        return out
    out -= out.mean(axis=1, keepdims=True)
    std = out.std(axis=1, keepdims=True)
    out /= np.where(std > 0, std, 1.0)
    return out


class Blend(RecommenderBase):
    """Σ_c w_c · normalise(component_c.scores); components fitted or loaded as their family."""

    FORMAT = "recflow-blend-v1"
    ARRAYS = ("popularity",)

    def __init__(self, components: dict[str, dict], weights: dict[str, float]) -> None:
        """``components``: name → {"format", "config"} (what ``from_config`` of that family
        takes); ``weights``: name → weight ≥ 0. Components of weight 0 are dropped."""
        super().__init__()
        unknown = set(weights) - set(components)
        if unknown:
            raise ValueError(f"blend weights name no component: {sorted(unknown)}")
        self.weights = {n: float(w) for n, w in weights.items() if w > 0}
        if not self.weights:
            raise ValueError("a blend needs at least one component of positive weight")
        self.components_config = {n: {"format": components[n]["format"],
                                      "config": dict(components[n]["config"])}
                                  for n in self.weights}
        self.parts: dict[str, RecommenderBase] = {}
        self.similar_from: str | None = None

    # ---- configuration ------------------------------------------------------------------
    def config(self) -> dict:
        lifted: dict[str, Any] = {}
        for c in self.components_config.values():
            if any(c["config"].get(k) for k in ("user_features", "item_features", "session_items")):
                lifted = {k: c["config"][k] for k in FEATURE_KEYS if k in c["config"]}
                break
        return {**lifted, "weights": dict(self.weights), "components": self.components_config}

    @classmethod
    def from_config(cls, config: dict) -> Self:
        return cls(config["components"], config["weights"])

    @classmethod
    def of(cls, models: dict[str, RecommenderBase], weights: dict[str, float],
           configs: dict[str, dict] | None = None) -> Blend:
        """A blend of already fitted ``models`` (no fit). ``configs`` overrides a component's
        configuration (LightFM's epoch count: early stopping's best, not the maximum)."""
        configs = configs or {}
        spec = {n: {"format": m.FORMAT, "config": configs.get(n, m.config())}
                for n, m in models.items()}
        self = cls(spec, weights)
        self._attach({n: models[n] for n in self.weights})
        self.popularity = np.zeros(len(self.item_ids), dtype=np.float32)
        for n, m in self.parts.items():   # the components' popularity on the union catalogue
            src, pos = self._columns[n]
            self.popularity[pos] = np.maximum(self.popularity[pos],
                                              np.asarray(m.popularity, dtype=np.float32)[src])
        self.is_fitted = True
        return self

    # ---- fitting ------------------------------------------------------------------------
    def _fit(self, train: pd.DataFrame, user_tokens: TokenMap, item_tokens: TokenMap,
             history: History | None = None, **kw: Any) -> None:
        """Each component fitted on ``train`` with its own configuration (tokens and history
        go to every component; the families that read none ignore them)."""
        parts = {n: FAMILIES[c["format"]].from_config(c["config"]).fit(
                     train, user_tokens, item_tokens, history=history)
                 for n, c in self.components_config.items()}
        self._attach(parts)
        self.popularity = popularity_scores(train, self.item_ids)

    def _attach(self, parts: dict[str, RecommenderBase]) -> None:
        self.parts = parts
        ids = sorted({str(i) for m in parts.values() for i in m.item_ids})
        self.item_ids = np.asarray(ids, dtype=object)
        self._iidx_cache = None
        index = pd.Index(self.item_ids)
        # per component: (its columns present in the union, their union positions)
        self._columns: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for n, m in parts.items():
            pos = index.get_indexer(np.asarray(m.item_ids, dtype=object).astype(str))
            self._columns[n] = (np.arange(len(pos)), pos)
        self.similar_from = self._similarity_component()

    def _similarity_component(self) -> str | None:
        for n in sorted(self.parts, key=lambda n: -self.weights[n]):
            try:
                self.parts[n].item_vectors()
            except Unsupported:
                continue
            return n
        return None

    # ---- scoring ------------------------------------------------------------------------
    def known(self, user: str) -> bool:
        return any(m.known(user) for m in self.parts.values())

    def component_scores(self, users: list[str], user_tokens: TokenMap | None = None,
                         history: History | None = None) -> dict[str, np.ndarray]:
        """name → (len(users) × len(item_ids)) normalised scores of each component, 0 where it
        does not know the item: what the weights multiply (the validation search weighs one
        set of these many ways)."""
        out = {}
        n = len(self.item_ids)
        for name, m in self.parts.items():
            z = normalise(m.scores(users, user_tokens, history))
            src, pos = self._columns[name]
            if len(pos) == n and (pos == np.arange(n)).all():
                out[name] = z
                continue
            full = np.zeros((len(users), n), dtype=np.float32)
            full[:, pos] = z[:, src]
            out[name] = full
        return out

    def scores(self, users: list[str], user_tokens: TokenMap | None = None,
               history: History | None = None) -> np.ndarray:
        """The weighted sum of the components' normalised scores. A user no component knows
        (and who brings no history) gets each component's popularity fallback, so the sum is a
        popularity order too."""
        return combine(self.component_scores(users, user_tokens, history), self.weights,
                       (len(users), len(self.item_ids)))

    def item_vectors(self) -> np.ndarray:
        """The item vectors of ``similar_from`` (rows of zeros for items it does not know)."""
        if self.similar_from is None:
            raise Unsupported("no component of this blend has item representations.")
        m = self.parts[self.similar_from]
        v = np.asarray(m.item_vectors(), dtype=np.float32)
        src, pos = self._columns[self.similar_from]
        if len(pos) == len(self.item_ids) and (pos == np.arange(len(pos))).all():
            return v
        out = np.zeros((len(self.item_ids), v.shape[1]), dtype=np.float32)
        out[pos] = v[src]
        return out

    def token_item_vectors(self, item_tokens: TokenMap, items: list[str]) -> np.ndarray:
        """From the similarity component's token embeddings (LightFM only), so new items land
        in the same space as ``item_vectors``."""
        if self.similar_from is None:
            return super().token_item_vectors(item_tokens, items)
        return self.parts[self.similar_from].token_item_vectors(item_tokens, items)

    # ---- persistence --------------------------------------------------------------------
    def _meta(self) -> dict:
        return {**super()._meta(), "similar_from": self.similar_from,
                "token_edges": getattr(self, "token_edges", {})}

    def _restore(self, meta: dict) -> None:
        super()._restore(meta)
        self.similar_from = meta.get("similar_from")
        self.token_edges = meta.get("token_edges", {})

    def _save_parts(self, directory: Path) -> None:
        root = directory / COMPONENTS_DIR
        shutil.rmtree(root, ignore_errors=True)
        edges = getattr(self, "token_edges", {})
        for name, m in self.parts.items():
            m.token_edges = edges
            epochs = self.components_config[name]["config"].get("epochs")
            m.save(root / name, extra={"best_epoch": epochs} if epochs else None)

    def _load_parts(self, directory: Path) -> None:
        parts = {}
        for name, spec in self.components_config.items():
            sub = directory / COMPONENTS_DIR / name
            family = FAMILIES.get(read_meta(sub).get("format"))  # type: ignore[arg-type]
            if family is None or family.FORMAT != spec["format"]:
                raise ArtifactError(f"{sub}: not the {spec['format']} component the blend names")
            parts[name] = family.load(sub)
        ids = list(self.item_ids)
        self._attach(parts)
        if list(self.item_ids) != ids:
            raise ArtifactError(f"{directory}: its components' items are not the blend's")


def combine(parts: dict[str, np.ndarray], weights: dict[str, float],
            shape: tuple[int, int]) -> np.ndarray:
    """Σ weights[name] · parts[name] (float32, a new array); components missing from
    ``weights`` or of weight 0 are skipped."""
    out = np.zeros(shape, dtype=np.float32)
    for name, s in parts.items():
        w = weights.get(name, 0.0)
        if w:
            out += np.float32(w) * s
    return out
