"""FastAPI service: a user's top-k with an online Feast lookup; hot reload on promotion.

Run with ``make serve`` (uvicorn, loopback). The model swap is a single reference
assignment inside ``Recommender.reload``, so in-flight requests finish on the model they
started with and none is dropped.
"""

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import pandas as pd
from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from pipeline.columns import Columns as C
from pipeline.config import Params, Paths, load_params
from pipeline.config import paths as project_paths
from pipeline.errors import DataError, RecflowError
from pipeline.features import push
from pipeline.registry import lineage, versions
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


class BatchIn(BaseModel):
    user_ids: list[str] = Field(min_length=1)
    k: int | None = None


class BatchOut(BaseModel):
    results: list[RecommendationOut]


class EventIn(BaseModel):
    user_id: str = Field(min_length=1)
    item_id: str = Field(min_length=1)
    event_type: str
    event_timestamp: datetime | None = Field(None, description="UTC; default: now")
    value: float | None = None


class EventsIn(BaseModel):
    events: list[EventIn] = Field(min_length=1)


def _body(r: Recommendation) -> dict:
    return {"user_id": r.user_id,
            "items": [{"item_id": i, "score": s} for i, s in zip(r.items, r.scores, strict=True)],
            "model_version": r.model_version, "features_source": r.features_source,
            "cold_start": r.cold_start}


def _out(r: Recommendation) -> RecommendationOut:
    return RecommendationOut(**_body(r))


def create_app(root: Path | None = None, params: Params | None = None) -> FastAPI:
    p = project_paths(root)
    params = params or load_params(p.params)
    sp = params.serving
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
        except RecflowError as e:
            log.error("serving starts without a model: %s", e)
        state["rec"] = rec
        state["catalogue"] = _catalogue(p, rec)
        task = asyncio.create_task(_watch(state["rec"], sp.reload_poll_seconds))
        yield
        task.cancel()
        blas.restore_original_limits()

    app = FastAPI(title="recflow", version="1", lifespan=lifespan,
                  description="Top-k recommendations from implicit feedback, with Feast online features.")

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        first = errs[0] if errs else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return JSONResponse(status_code=422, content={"error": f"{where}: {first.get('msg', 'invalid request')}",
                                                      "details": [{"loc": e.get("loc"), "msg": e.get("msg")} for e in errs][:10]})

    @app.exception_handler(RecflowError)
    async def _user_error(request: Request, exc: RecflowError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"error": str(exc)})

    @app.exception_handler(NoModel)
    async def _no_model(request: Request, exc: NoModel) -> JSONResponse:
        return JSONResponse(status_code=503, content={"error": str(exc)})

    def rec() -> Recommender:
        return state["rec"]

    @app.get("/recommendations/{user_id}", response_model=RecommendationOut)
    async def recommendations(
        user_id: Annotated[str, PathParam(min_length=1, max_length=sp.max_user_id_length)],
        k: Annotated[int, Query(ge=1, le=sp.max_k)] = sp.default_k,
    ) -> RecommendationOut:
        # async on purpose: lookup + scoring take ~1 ms of CPU, less than a threadpool hop
        if not user_id.strip():
            raise HTTPException(422, detail="user_id must not be blank")
        r = rec().recommend(user_id, k)
        # the body is built directly (response_model documents it): pydantic re-validation
        # of our own output costs more than the lookup itself
        return Response(content=json.dumps(_body(r)), media_type="application/json",
                        headers={"Server-Timing": ", ".join(
                            f"{n[:-3]};dur={v:.3f}" for n, v in r.timings_ms.items())})

    @app.post("/recommendations:batch", response_model=BatchOut)
    def recommendations_batch(body: BatchIn) -> BatchOut:
        k = body.k if body.k is not None else sp.default_k
        if not 1 <= k <= sp.max_k:
            raise HTTPException(422, detail=f"k must be between 1 and {sp.max_k}")
        if len(body.user_ids) > sp.max_batch:
            raise HTTPException(413, detail=f"at most {sp.max_batch} user_ids per request, got {len(body.user_ids)}")
        bad = [u for u in body.user_ids if not u.strip() or len(u) > sp.max_user_id_length]
        if bad:
            raise HTTPException(422, detail=f"invalid user_id(s): {bad[:3]!r} (1..{sp.max_user_id_length} chars)")
        return BatchOut(results=[_out(r) for r in rec().recommend_many(body.user_ids, k)])

    @app.post("/events")
    def events(body: EventsIn) -> dict:
        """Fresh events → same validation as the batch path → Feast push source (online)."""
        if len(body.events) > sp.max_events_per_request:
            raise HTTPException(413, detail=f"at most {sp.max_events_per_request} events per request")
        known = state["catalogue"]
        unknown = sorted({e.item_id for e in body.events} - known)
        if unknown:
            raise HTTPException(422, detail=f"unknown item_id(s) {unknown[:5]}: not in the catalogue")
        bad_types = sorted({e.event_type for e in body.events} - set(params.event_types))
        if bad_types:
            raise HTTPException(422, detail=f"unknown event_type(s) {bad_types}; "
                                            f"expected one of {list(params.event_types)}")
        now = datetime.now(UTC)
        df = pd.DataFrame([{C.user: e.user_id, C.item: e.item_id, C.event: e.event_type,
                            C.ts: (e.event_timestamp or now), C.value: e.value} for e in body.events])
        df[C.ts] = pd.to_datetime(df[C.ts], utc=True)
        df[C.value] = pd.to_numeric(df[C.value]).astype("float64")
        try:
            summary = push.push_events(params, p, df, fs=rec().store, now=now)
        except DataError as e:
            raise HTTPException(422, detail=str(e)) from None
        return summary

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
                "champion_error": r.reload_error}
        return JSONResponse(status_code=200 if ok else 503, content=body)

    @app.get("/model")
    def model() -> dict:
        r = rec()
        card = versions.card(p.registry, r.version) if r.version else {}
        return {"version": r.version, **lineage.public(card)}

    @app.post("/admin/reload")
    def reload() -> JSONResponse:
        """Load the champion now. 503 with the reason when it cannot be loaded (corrupt
        pointer, unreadable version); the model in use keeps serving."""
        r = rec()
        try:
            changed = r.reload()
        except RecflowError as e:
            why = str(e)
        except Exception as e:  # noqa: BLE001 - never a bare 500: say it, keep serving
            log.exception("reload failed")
            why = f"reload failed ({type(e).__name__}: {e}); see the server log"
        else:
            return JSONResponse({"reloaded": changed, "model_version": r.version})
        return JSONResponse(status_code=503, content={
            "error": why, "reloaded": False, "model_version": r.version})

    app.state.recflow = state
    return app


def _catalogue(p: Paths, rec: Recommender) -> set[str]:
    """Item ids events may name: the validated catalogue plus the model's items."""
    items = set(map(str, rec.model.item_ids)) if rec.model is not None else set()
    f = p.validated_items
    if f.exists():
        items |= set(pd.read_parquet(f, columns=[C.item])[C.item].astype(str))
    return items


async def _watch(rec: Recommender, every: float) -> None:
    """Poll the champion pointer; swap the model when a new one is promoted. A failure is
    logged once (not at every poll) until it changes or a reload succeeds."""
    failed = rec.reload_error  # already logged at start-up
    while True:
        await asyncio.sleep(every)
        try:
            t0 = time.perf_counter()
            if await asyncio.to_thread(rec.reload):
                log.info("reloaded champion %s in %.2fs", rec.version, time.perf_counter() - t0)
            failed = None
        except Exception as e:  # noqa: BLE001 - keep serving the current model
            if str(e) != failed:
                log.warning("reload failed, keeping %s: %s", rec.version, e)
            failed = str(e)


def app_from_env() -> FastAPI:
    """uvicorn factory (``--factory``): the project root comes from $RECFLOW_ROOT or the cwd."""
    return create_app()


def main() -> None:
    import uvicorn

    from pipeline import logs

    p = project_paths()
    params = load_params(p.params)
    logs.setup(p.logs)
    uvicorn.run(create_app(p.root, params), host=params.serving.host, port=params.serving.port,
                log_level="warning")


if __name__ == "__main__":
    main()
