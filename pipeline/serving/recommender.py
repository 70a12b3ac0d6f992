"""The serving path shared by the CLI, the API and the batch export: online features →
``model.scores(users, tokens, history)`` → seen items and business filters → top-k.

What is excluded as seen follows ``serving.exclude_seen``: ``all`` is the user's seen set
(``seen_items``, every item they had except the repeatable event types, kept by materialize
and the push path with the same SQL), the set evaluation excludes; ``recent`` only the last
``features.recent_items``; ``none`` nothing."""

from __future__ import annotations

import hashlib
import json
import logging
import time
import zipfile
from dataclasses import dataclass, field

import numpy as np

from pipeline.columns import Columns as C
from pipeline.columns import Feast, Recs
from pipeline.columns import Features as F
from pipeline.config import Params, Paths
from pipeline.errors import RecflowError
from pipeline.feature_store import store
from pipeline.feature_store.reader import OnlineReader
from pipeline.features import recent
from pipeline.models.artifact import load_model
from pipeline.models.base import RecommenderBase
from pipeline.models.ranking import exclusion_rows, top_k_masked
from pipeline.models.tokens import model_tokens, user_columns
from pipeline.registry import versions
from pipeline.serving import metrics
from pipeline.serving.catalogue import Catalogue, Filters

log = logging.getLogger("recflow.serving")


@dataclass
class Recommendation:
    user_id: str
    items: list[str]
    scores: list[float]
    model_version: str
    features_source: str  # "online" | "fallback"
    cold_start: bool
    filtered: int = 0  # catalogue items the request's filters removed
    timings_ms: dict[str, float] = field(default_factory=dict)
    cached: bool = False  # answered from the exported top-k (serving.cache_first)


@dataclass
class Ranked:
    """A batch's top-k as arrays, what :meth:`Recommender.rank` computes for the API and the
    export alike. ``scores`` holds -inf where fewer than k items passed."""

    users: list[str]
    idx: np.ndarray          # (users × k) item columns of the model
    scores: np.ndarray       # (users × k) float32
    version: str
    source: str              # "online" | "fallback"
    filtered: int
    inputs: list[str] | None  # per user, the digest of the features used (see inputs_digest)
    timings_ms: dict[str, float]


def inputs_digest(feats: dict[str, list], columns: list[str], mode: str) -> list[str]:
    """Per user, a digest of everything a recommendation is computed from besides the model:
    the online features serving reads (tokens' sources, recent items, seen set) and the
    seen-items mode. Equal digests and the same champion give the same top-k, so an exported
    list is served only while its digest matches the user's features now: any pushed event
    changes them (recent items, seen set, counts), and so does a re-materialization."""
    cols = [feats.get(c) or [None] * len(feats[C.user]) for c in columns]
    return [hashlib.blake2b(repr((mode, *row)).encode(), digest_size=12).hexdigest()
            for row in zip(*cols, strict=True)] if cols else [mode] * len(feats[C.user])


@dataclass(frozen=True)
class Served:
    """The champion and what is derived from it, swapped together in one assignment."""

    model: RecommenderBase
    version: str
    catalogue: Catalogue


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
        self.served: Served | None = None
        self._reader: OnlineReader | None = None
        self._reader_key: tuple = ()
        self._cache_view: bool | None = None  # whether the registry has the exported view
        self._cache_checked = 0.0
        self.store_error: str | None = None  # why the last online read fell back, if it did
        self.reload_error: str | None = None  # why the last reload() failed, if it did
        if load:
            self.reload()

    def columns(self, model: RecommenderBase | None = None) -> list[str]:
        """The serving features a request reads: the sources of the user tokens ``model`` was
        trained with (its own configuration, else params), the history and the seen set (the
        rest of the service is not decoded)."""
        which = (model.config().get("user_features", ()) if model is not None
                 else self.params.model.user_features)
        return [*user_columns(tuple(which)), F.recent_items, F.seen_items]

    @property
    def model(self) -> RecommenderBase | None:
        return self.served.model if self.served else None

    @property
    def version(self) -> str | None:
        return self.served.version if self.served else None

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
        old = self.version
        self.served = Served(model, version, Catalogue(model, self.params, self.paths))  # one swap
        self._cache_view = None  # an export may have applied the view since: look again
        metrics.set_champion(old, version)
        log.debug("serving model %s", version)
        return True

    def _has_cache_view(self) -> bool:
        """Whether the exported top-k view is applied: once found, until the next champion;
        while absent, looked for again every ``reload_poll_seconds`` (the first export applies
        it while the server runs)."""
        now = time.monotonic()
        if self._cache_view is None or (not self._cache_view and now - self._cache_checked
                                        > self.params.serving.reload_poll_seconds):
            self._cache_checked = now
            try:
                self.store.get_feature_service(Feast.cached_service, allow_cache=False)
                self._cache_view = True
            except Exception:  # noqa: BLE001 - not applied yet (no export): compute every list
                self._cache_view = False
        return self._cache_view

    def online_features(self, users: list[str], model: RecommenderBase | None = None,
                        cached: bool = False) -> tuple[dict[str, list] | None, str]:
        """The serving service's online features as a column dict, or (None, "fallback") when
        the online store cannot be read (missing, emptied, replaced, corrupt, unreachable).
        ``cached``: the exported top-k columns (:class:`Recs`) too, in the same lookup, when
        the view is applied. Whether the store can be read is decided afresh on every call, so
        all threads agree and recover together; the log gets one line when it fails and one
        when it is back."""
        try:
            cols = self.columns(model)
            cached = cached and self._has_cache_view()
            key = (tuple(cols), cached)
            if self._reader is None or self._reader_key != key:
                # resolving the service from the registry costs ~20 ms: once per feature set
                self._reader = (OnlineReader(self.store, Feast.cached_service, [*cols, *Recs.ALL])
                                if cached else OnlineReader(self.store, Feast.serving_service, cols))
                self._reader_key = key
            feats = self._reader.read(users)
        except Exception as e:  # noqa: BLE001 - an unreachable store must not fail the request
            metrics.STORE_ERRORS.inc()
            why = str(e) if isinstance(e, store.StoreUnavailable) else f"{type(e).__name__}: {e}"
            if why != self.store_error:
                log.warning("online store unavailable (%s); serving popularity", why)
            self.store_error = why
            return None, "fallback"
        if self.store_error is not None:
            log.warning("online store readable again (was: %s)", self.store_error)
            self.store_error = None
        return feats, "online"

    def _served(self) -> Served:
        served = self.served  # one consistent champion even if reload() runs meanwhile
        if served is None:
            raise NoModel(f"{self.paths.registry}: no model loaded; the champion pointer is "
                          "checked every few seconds (see /readyz).")
        return served

    def recommend(self, user_id: str, k: int, filters: Filters | None = None) -> Recommendation:
        return self.recommend_many([user_id], k, filters)[0]

    def recommend_many(self, users: list[str], k: int, filters: Filters | None = None
                       ) -> list[Recommendation]:
        """Each user's top-k. With ``serving.cache_first`` and no filters, a user whose exported
        list was computed by the champion from the features they have now (same digest) and
        for at least k items is answered from it; the others are computed."""
        served = self._served()
        cache = self.params.serving.cache_first and not filters
        t0 = time.perf_counter()
        feats, source = self.online_features(users, served.model, cached=cache)
        hits: dict[int, tuple[list[str], list[float]]] = {}
        if cache and feats is not None and Recs.items in feats:
            hits = self._cache_hits(feats, served, k)
            metrics.CACHE.labels(outcome="hit").inc(len(hits))
            metrics.CACHE.labels(outcome="miss").inc(len(users) - len(hits))
        todo = [r for r in range(len(users)) if r not in hits]
        sub = feats if feats is None or not hits else {c: [v[r] for r in todo] for c, v in feats.items()}
        ranked = self._rank(served, [users[r] for r in todo], k, filters, sub, source, t0)
        out: list[Recommendation] = []
        rows = iter(range(len(todo)))
        model = served.model
        for r, u in enumerate(users):
            cold = not model.known(u)
            if r in hits:
                items, scores = hits[r]
                out.append(Recommendation(u, items, scores, served.version, source, cold,
                                          timings_ms=ranked.timings_ms, cached=True))
                continue
            i = next(rows)
            ok = np.isfinite(ranked.scores[i])
            out.append(Recommendation(
                user_id=u, items=model.item_ids[ranked.idx[i][ok]].tolist(),
                scores=ranked.scores[i][ok].tolist(), model_version=served.version,
                features_source=source, cold_start=cold, filtered=ranked.filtered,
                timings_ms=ranked.timings_ms))
        if source != "online":
            metrics.FALLBACK.inc(len(users))
        cold = sum(x.cold_start for x in out)
        if cold:
            metrics.COLD_START.inc(cold)
        return out

    def _cache_hits(self, feats: dict[str, list], served: Served, k: int
                    ) -> dict[int, tuple[list[str], list[float]]]:
        """Rows whose exported list is still what would be computed now (see inputs_digest)."""
        digests = inputs_digest(feats, self.columns(served.model), self.params.serving.exclude_seen)
        out = {}
        for r, (items, scores, kk, version, inputs) in enumerate(
                zip(*(feats[c] for c in Recs.ALL), strict=True)):
            if items is not None and version == served.version and inputs == digests[r] \
                    and kk is not None and k <= kk:
                ids = recent.decode(items)
                out[r] = (ids[:k], [float(x) for x in json.loads(scores)[:k]])
        return out

    def rank(self, users: list[str], k: int, filters: Filters | None = None,
             digests: bool = False) -> Ranked:
        """The top-k of ``users`` as arrays, always computed (never from the exported lists):
        what the export writes. ``digests``: also each user's :func:`inputs_digest`."""
        served = self._served()
        t0 = time.perf_counter()
        feats, source = self.online_features(users, served.model)
        r = self._rank(served, users, k, filters, feats, source, t0)
        if digests and feats is not None:
            r.inputs = inputs_digest(feats, self.columns(served.model), self.params.serving.exclude_seen)
        return r

    def _rank(self, served: Served, users: list[str], k: int, filters: Filters | None,
              feats: dict[str, list] | None, source: str, t0: float) -> Ranked:
        """online features → model scores → seen items and filters → exact top-k."""
        model = served.model
        t1 = time.perf_counter()
        tokens: dict[str, list[str]] = {}
        history: dict[str, list[str]] = {}
        exclude: list[list[str]] = []   # per row of ``users`` (feats' rows are users' rows)
        if feats is not None and users:
            tokens = model_tokens(model, feats)
            recent_col = feats.get(F.recent_items) or [None] * len(users)
            lists = recent.decode_many(recent_col)
            history = {u: h for u, h in zip(feats[C.user], lists, strict=True) if h}
            mode = self.params.serving.exclude_seen
            seen_col = feats.get(F.seen_items)
            if mode == "recent" or (mode == "all" and seen_col is None):
                # a store materialized before the seen set existed: the recent items, until
                # the next `recflow features` + `recflow materialize`
                exclude = lists
            elif mode == "all":
                exclude = recent.decode_many(seen_col)
        allowed = served.catalogue.mask(filters)
        if users:
            s = np.asarray(model.scores(users, tokens, history), dtype=np.float32)
            if not (s.flags.owndata and s.flags.writeable and s.flags.c_contiguous):
                s = np.array(s, dtype=np.float32, order="C")  # a view (popularity's broadcast)
            # a fresh matrix is this call's own: masked in place, no second users × items copy
            if allowed is not None:
                np.copyto(s, -np.inf, where=~allowed)
            cells = exclusion_rows(exclude, served.catalogue.positions, model.item_index)
            if len(cells[0]):
                s[cells] = -np.inf
            idx, sc = top_k_masked(s, k)
        else:
            kk = min(k, len(model.item_ids))
            idx, sc = np.zeros((0, kk), dtype=np.int64), np.zeros((0, kk), dtype=np.float32)
        t2 = time.perf_counter()
        filtered = 0 if allowed is None else int(len(allowed) - allowed.sum())
        return Ranked(users, idx, sc, served.version, source, filtered, None,
                      {"lookup_ms": (t1 - t0) * 1e3, "scoring_ms": (t2 - t1) * 1e3})

    def similar(self, items: list[str], k: int, filters: Filters | None = None
                ) -> tuple[list[tuple[list[str], list[float]]], dict[str, str], int, str]:
        """Each item's k nearest items by cosine of the champion's item vectors (the item
        itself excluded), after ``filters``. Returns (per item (ids, scores), {id: why it has
        no vector}, filtered count, model version); rows of unrepresented items are empty."""
        served = self._served()
        cat = served.catalogue
        q, missing = cat.query_vectors(items)
        allowed = cat.mask(filters)
        rows = [r for r, it in enumerate(items) if it in cat.index]
        cols = [cat.index[items[r]] for r in rows]
        # the product is this call's own matrix: masked in place (top_k_indices would copy it)
        s = q @ cat.vectors_t  # type: ignore[operator]
        if allowed is not None:
            np.copyto(s, -np.inf, where=~allowed)
        s[np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)] = -np.inf
        idx, sc = top_k_masked(s, k)
        out = []
        for r, it in enumerate(items):
            ok = np.isfinite(sc[r]) & (it not in missing)
            out.append((cat.item_ids[idx[r][ok]].tolist(), sc[r][ok].tolist()))
        filtered = 0 if allowed is None else int(len(allowed) - allowed.sum())
        return out, missing, filtered, served.version
