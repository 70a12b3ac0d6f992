"""FastAPI service: a user's top-k with an online Feast lookup; hot reload on promotion.

Run with ``make serve [WORKERS=N]`` (``pipeline.serving.run``: uvicorn workers, loopback).
Every 4xx has one envelope, ``{"error": "...", "field": ...}``. The model swap is a single reference
assignment inside ``Recommender.reload``, so in-flight requests finish on the model they
started with and none is dropped.
"""

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import pandas as pd
from fastapi import FastAPI, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline.columns import Columns as C
from pipeline.config import Params, Paths, load_params
from pipeline.config import paths as project_paths
from pipeline.data import loaders
from pipeline.errors import DataError, RecflowError
from pipeline.features import push
from pipeline.models.base import Unsupported
from pipeline.registry import lineage, versions
from pipeline.serving import metrics
from pipeline.serving.catalogue import Filters
from pipeline.serving.recommender import NoModel, Recommendation, Recommender

log = logging.getLogger("recflow.serving")


class ItemScore(BaseModel):
    item_id: str
    score: float


class RecommendationOut(BaseModel):
    user_id: str
    items: list[ItemScore]
    model_version: str
    features_source: str = Field(description="'online' (Feast online store) or 'fallback' (popularity)")
    cold_start: bool
    filtered: int = Field(0, description="catalogue items the request's filters removed")
    cached: bool = Field(False, description="answered from the exported top-k "
                                            "(serving.cache_first)")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # an unknown field is a 422 naming it


class FiltersIn(_Strict):
    """Business rules, applied before top-k (so k items come back when enough pass)."""

    exclude: list[str] | None = Field(None, description="item ids never to return")
    categories: list[str] | None = Field(None, description="only items in these categories")
    exclude_categories: list[str] | None = Field(None, description="no item in these categories")
    allowed_items: list[str] | None = Field(None, description="only these items (a candidate list)")


class BatchIn(FiltersIn):
    user_ids: list[str] = Field(min_length=1)
    k: int | None = None


class BatchOut(BaseModel):
    results: list[RecommendationOut]


class SimilarOut(BaseModel):
    item_id: str
    items: list[ItemScore]
    model_version: str
    filtered: int = 0


class SimilarBatchIn(FiltersIn):
    item_ids: list[str] = Field(min_length=1)
    k: int | None = None


class SimilarBatchOut(BaseModel):
    results: list[SimilarOut]


class EventIn(_Strict):
    user_id: str = Field(min_length=1)
    item_id: str = Field(min_length=1)
    event_type: str
    event_timestamp: datetime | None = Field(None, description="UTC; default: now")
    value: float | None = None


class EventsIn(_Strict):
    events: list[EventIn] = Field(min_length=1)


class ApiError(Exception):
    """A 4xx with the one error envelope ``{"error": ..., "field": ...}``."""

    def __init__(self, status: int, error: str, field: str | None = None, **extra: object) -> None:
        super().__init__(error)
        self.status, self.error, self.field, self.extra = status, error, field, extra


def _envelope(status: int, error: str, field: str | None = None, **extra: object) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": error, "field": field, **extra})


FILTER_PARAMS = tuple(FiltersIn.model_fields)


def _filters(f: FiltersIn, limit: int) -> Filters:
    for name in ("allowed_items", "exclude"):
        v = getattr(f, name)
        if v is not None and len(v) > limit:
            raise ApiError(413, f"{name}: at most {limit} item ids per request, got {len(v)}", name)
    return Filters(**{n: (tuple(v) if v is not None else None)
                      for n, v in ((n, getattr(f, n)) for n in FILTER_PARAMS)})


def _check_query(request: Request, allowed: tuple[str, ...]) -> None:
    """Unknown query parameters are a 422 that names them, never silently ignored."""
    unknown = sorted(set(request.query_params) - set(allowed))
    if unknown:
        raise ApiError(422, f"unknown query parameter(s) {unknown}; expected some of "
                            f"{sorted(allowed)}", unknown[0])


def _items(ids: list[str], scores: list[float]) -> list[dict]:
    return [{"item_id": i, "score": s} for i, s in zip(ids, scores, strict=True)]


def _body(r: Recommendation) -> dict:
    return {"user_id": r.user_id, "items": _items(r.items, r.scores),
            "model_version": r.model_version, "features_source": r.features_source,
            "cold_start": r.cold_start, "filtered": r.filtered, "cached": r.cached}


def _out(r: Recommendation) -> RecommendationOut:
    return RecommendationOut(**_body(r))


def create_app(root: Path | None = None, params: Params | None = None) -> FastAPI:
    p = project_paths(root)
    params = params or load_params(p.params)
    sp = params.serving
    event_names = loaders.resolve(params.ingest.loader).events  # the loader's mapping, as ingest
    state: dict = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from threadpoolctl import threadpool_limits

        blas = threadpool_limits(limits=sp.blas_threads)  # process-wide, while serving
        # A champion that cannot be loaded (corrupt pointer, missing version) does not stop
        # the process: it starts degraded — /readyz 503 with the reason, recommendations 503 —
        # and the watcher below loads the model as soon as the pointer is fixed, with no
        # restart. A replica that is not ready gets no traffic, so a bad pointer rolled out
        # everywhere cannot take down replicas that are already serving.
        rec = Recommender(params, p, load=False)
        try:
            rec.reload()
            metrics.RELOADS.labels(outcome="loaded").inc()
        except RecflowError as e:
            metrics.RELOADS.labels(outcome="failed").inc()
            log.error("serving starts without a model: %s", e)
        state["rec"] = rec
        task = asyncio.create_task(_watch(state["rec"], sp.reload_poll_seconds))
        yield
        task.cancel()
        blas.restore_original_limits()
        metrics.worker_exit()

    app = FastAPI(title="recflow", version="1", lifespan=lifespan,
                  description="Top-k recommendations from implicit feedback, with Feast online features.")
    app.add_middleware(_Instrument)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        first = errs[0] if errs else {}
        loc = [str(x) for x in first.get("loc", ())]
        field = ".".join(loc[1:]) or None  # without "body" / "query" / "path"
        msg = first.get("msg", "invalid request")
        if first.get("type") == "extra_forbidden":
            extra = sorted({".".join(str(x) for x in e["loc"][1:]) for e in errs
                            if e.get("type") == "extra_forbidden"})
            msg = f"unknown field(s) {extra}"
        return _envelope(422, f"{'.'.join(loc)}: {msg}", field)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _envelope(exc.status, exc.error, exc.field, **exc.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _envelope(exc.status_code, str(exc.detail), None)

    @app.exception_handler(Unsupported)
    async def _unsupported(request: Request, exc: Unsupported) -> JSONResponse:
        return _envelope(501, str(exc), None)

    @app.exception_handler(NoModel)
    async def _no_model(request: Request, exc: NoModel) -> JSONResponse:
        return _envelope(503, str(exc), None)

    @app.exception_handler(RecflowError)
    async def _user_error(request: Request, exc: RecflowError) -> JSONResponse:
        return _envelope(400, str(exc), None)

    def rec() -> Recommender:
        return state["rec"]

    def check_k(k: int | None) -> int:
        k = sp.default_k if k is None else k
        if not 1 <= k <= sp.max_k:
            raise ApiError(422, f"k must be between 1 and {sp.max_k}", "k")
        return k

    rec_params = ("k", *FILTER_PARAMS)
    List = Annotated[list[str] | None, Query()]

    @app.get("/recommendations/{user_id}", response_model=RecommendationOut)
    async def recommendations(
        request: Request,
        user_id: Annotated[str, PathParam(min_length=1, max_length=sp.max_user_id_length)],
        k: Annotated[int, Query(ge=1, le=sp.max_k)] = sp.default_k,
        exclude: List = None, categories: List = None, exclude_categories: List = None,
        allowed_items: List = None,
    ) -> RecommendationOut:
        # async on purpose: lookup + scoring take ~1 ms of CPU, less than a threadpool hop
        _check_query(request, rec_params)
        if not user_id.strip():
            raise ApiError(422, "user_id must not be blank", "user_id")
        f = _filters(FiltersIn(exclude=exclude, categories=categories,
                               exclude_categories=exclude_categories,
                               allowed_items=allowed_items), sp.max_candidates)
        r = rec().recommend(user_id, k, f)
        # the body is built directly (response_model documents it): pydantic re-validation
        # of our own output costs more than the lookup itself
        return Response(content=json.dumps(_body(r)), media_type="application/json",
                        headers={"Server-Timing": ", ".join(
                            f"{n[:-3]};dur={v:.3f}" for n, v in r.timings_ms.items())})

    @app.post("/recommendations:batch", response_model=BatchOut)
    def recommendations_batch(body: BatchIn) -> Response:
        k = check_k(body.k)
        if len(body.user_ids) > sp.max_batch:
            raise ApiError(413, f"at most {sp.max_batch} user_ids per request, got {len(body.user_ids)}",
                           "user_ids")
        bad = [u for u in body.user_ids if not u.strip() or len(u) > sp.max_user_id_length]
        if bad:
            raise ApiError(422, f"invalid user_id(s): {bad[:3]!r} (1..{sp.max_user_id_length} chars)",
                           "user_ids")
        rs = rec().recommend_many(body.user_ids, k, _filters(body, sp.max_candidates))
        return Response(content=json.dumps({"results": [_body(r) for r in rs]}),
                        media_type="application/json")

    def similar_bodies(items: list[str], k: int, f: Filters) -> list[dict]:
        res, missing, filtered, version = rec().similar(items, k, f)
        if missing:
            unknown = sorted(missing)
            raise ApiError(404, "; ".join(f"item {i!r}: {missing[i]}" for i in unknown[:5]),
                           "item_id", item_ids=unknown[:20])
        return [{"item_id": it, "items": _items(ids, scores), "model_version": version,
                 "filtered": filtered} for it, (ids, scores) in zip(items, res, strict=True)]

    @app.get("/items/{item_id}/similar", response_model=SimilarOut)
    async def similar(
        request: Request,
        item_id: Annotated[str, PathParam(min_length=1, max_length=sp.max_user_id_length)],
        k: Annotated[int, Query(ge=1, le=sp.max_k)] = sp.default_k,
        exclude: List = None, categories: List = None, exclude_categories: List = None,
        allowed_items: List = None,
    ) -> Response:
        """Nearest items by cosine of the champion's item vectors (the item itself excluded);
        a catalogued item new to the model is placed by its attribute tokens."""
        _check_query(request, rec_params)
        f = _filters(FiltersIn(exclude=exclude, categories=categories,
                               exclude_categories=exclude_categories,
                               allowed_items=allowed_items), sp.max_candidates)
        return Response(content=json.dumps(similar_bodies([item_id], k, f)[0]),
                        media_type="application/json")

    @app.post("/items:similar", response_model=SimilarBatchOut)
    def similar_batch(body: SimilarBatchIn) -> Response:
        k = check_k(body.k)
        if len(body.item_ids) > sp.max_batch:
            raise ApiError(413, f"at most {sp.max_batch} item_ids per request, got {len(body.item_ids)}",
                           "item_ids")
        out = similar_bodies(body.item_ids, k, _filters(body, sp.max_candidates))
        return Response(content=json.dumps({"results": out}), media_type="application/json")

    @app.post("/events")
    def events(body: EventsIn) -> JSONResponse:
        """Fresh events → same validation as the batch path → Feast push source (online).

        Event names go through the loader's mapping (``ingest.loader.events``); a row naming
        an item no table knows, or an event type that is not configured, is refused on its
        own (``refused``: index, reason); the other rows are pushed."""
        if len(body.events) > sp.max_events_per_request:
            raise ApiError(413, f"at most {sp.max_events_per_request} events per request", "events")
        known = rec().served.catalogue.known if rec().served else _catalogue(p)
        types = set(params.event_types)
        rows, refused = [], []
        now = datetime.now(UTC)
        for i, e in enumerate(body.events):
            event = event_names.get(e.event_type, e.event_type)
            if e.item_id not in known:
                refused.append({"index": i, "item_id": e.item_id, "field": "item_id",
                                "reason": f"unknown item_id {e.item_id!r}: not in the catalogue"})
            elif event not in types:
                refused.append({"index": i, "item_id": e.item_id, "field": "event_type",
                                "reason": f"unknown event_type {e.event_type!r}; expected one of "
                                          f"{sorted(types | set(event_names))}"})
            else:
                rows.append({C.user: e.user_id, C.item: e.item_id, C.event: event,
                             C.ts: (e.event_timestamp or now), C.value: e.value})
        if not rows:
            raise ApiError(422, f"every event refused; first: {refused[0]['reason']}",
                           f"events.{refused[0]['index']}.{refused[0]['field']}", refused=refused[:100])
        df = pd.DataFrame(rows)
        df[C.ts] = pd.to_datetime(df[C.ts], utc=True)
        df[C.value] = pd.to_numeric(df[C.value]).astype("float64")
        try:
            summary = push.push_events(params, p, df, fs=rec().store, now=now)
        except DataError as e:
            raise ApiError(422, str(e), "events") from None
        return JSONResponse({**summary, "rows": len(body.events), "refused": refused[:100]})

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        """200 when a model is loaded and the online store reads; else 503 with the reasons. A
        corrupt champion pointer while a model is loaded is reported but keeps readiness."""
        r = rec()
        _, source = r.online_features(["__readyz__"])
        ok = r.model is not None and source == "online"
        body = {"ready": ok, "model_version": r.version, "online_store": source == "online",
                "online_store_error": r.store_error if source != "online" else None,
                "champion_error": r.reload_error, "worker_pid": os.getpid()}
        return JSONResponse(status_code=200 if ok else 503, content=body)

    @app.get("/model")
    def model() -> dict:
        """The champion's card: metrics, baselines, params and its real lineage."""
        r = rec()
        card = versions.card(p.registry, r.version) if r.version else {}
        return {"version": r.version, **lineage.public(card), "worker_pid": os.getpid()}

    @app.post("/admin/reload")
    def reload() -> JSONResponse:
        """Load the champion now (this worker; the others within ``reload_poll_seconds``). 503
        with the reason when it cannot be loaded (corrupt pointer, unreadable version); the
        model in use keeps serving."""
        r = rec()
        try:
            changed = r.reload()
        except RecflowError as e:
            why = str(e)
        except Exception as e:  # noqa: BLE001 - never a bare 500: say it, keep serving
            log.exception("reload failed")
            why = f"reload failed ({type(e).__name__}: {e}); see the server log"
        else:
            if changed:
                metrics.RELOADS.labels(outcome="loaded").inc()
            return JSONResponse({"reloaded": changed, "model_version": r.version})
        metrics.RELOADS.labels(outcome="failed").inc()
        return JSONResponse(status_code=503, content={
            "error": why, "field": None, "reloaded": False, "model_version": r.version})

    @app.get("/metrics")
    def prometheus() -> Response:
        """Prometheus text format: every worker's samples (multi-process mode). The champion
        gauge is set afresh from what this app serves (another recommender in the process,
        e.g. the export, may have moved it)."""
        rec = state.get("rec")
        if rec is not None and rec.version:
            metrics.set_champion(None, rec.version)
        return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)

    app.state.recflow = state
    return app


class _Instrument:
    """Pure ASGI middleware: request count and latency per route template and status (a
    ``BaseHTTPMiddleware`` would cost more than the recommendation itself)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [500]

        async def send_status(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        t0 = time.perf_counter()
        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            labels = (scope["method"], route, str(status[0]))
            metrics.LATENCY.labels(*labels).observe(time.perf_counter() - t0)
            metrics.REQUESTS.labels(*labels).inc()


def _catalogue(p: Paths) -> frozenset[str]:
    """Item ids events may name while no model is loaded: the item tables'."""
    items: set[str] = set()
    for f in (p.validated_items, p.item_features):
        if f.exists():
            items |= set(pd.read_parquet(f, columns=[C.item])[C.item].astype(str))
    return frozenset(items)


async def _watch(rec: Recommender, every: float) -> None:
    """Poll the champion pointer; swap the model when a new one is promoted. A failure is
    logged once (not at every poll) until it changes or a reload succeeds."""
    failed = rec.reload_error  # already logged at start-up
    while True:
        await asyncio.sleep(every)
        try:
            t0 = time.perf_counter()
            if await asyncio.to_thread(rec.reload):
                metrics.RELOADS.labels(outcome="loaded").inc()
                log.info("reloaded champion %s in %.2fs", rec.version, time.perf_counter() - t0)
            failed = None
        except Exception as e:  # noqa: BLE001 - keep serving the current model
            if str(e) != failed:
                metrics.RELOADS.labels(outcome="failed").inc()
                log.warning("reload failed, keeping %s: %s", rec.version, e)
            failed = str(e)


def app_from_env() -> FastAPI:
    """uvicorn factory (``--factory``): the project root comes from $RECFLOW_ROOT or the cwd."""
    return create_app()
