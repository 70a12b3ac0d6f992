"""Operator metrics in Prometheus text format, through ``prometheus-client``.

With several workers (``pipeline.serving.run`` sets ``PROMETHEUS_MULTIPROC_DIR`` before they
start) every worker writes its samples to files in that folder and ``/metrics`` sums them over
all workers (``MultiProcessCollector``), so any worker answers for the whole server.
Whether samples go to files is decided when prometheus-client is first imported (Feast's
import also sets the variable, to a private temp folder, when it is unset), so the mode is
read back from the client rather than from the environment. The
champion gauge is per live worker (``livemax``): during a rollout both versions show 1.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

from pipeline.settings import settings

REQUESTS = Counter("recflow_http_requests_total", "HTTP requests by route template and status",
                   ["method", "route", "status"])
LATENCY = Histogram("recflow_http_request_duration_seconds", "Request latency by route and status",
                    ["method", "route", "status"],
                    buckets=(.0005, .001, .002, .003, .005, .0075, .01, .02, .05, .1, .25, .5, 1, 2.5))
FALLBACK = Counter("recflow_fallback_total",
                   "Users served popularity because the online store could not be read")
COLD_START = Counter("recflow_cold_start_total", "Users the champion was not fitted on")
STORE_ERRORS = Counter("recflow_online_store_errors_total", "Failed online-store reads")
CACHE = Counter("recflow_cache_total", "Users looked up in the exported top-k (serving.cache_first)",
                ["outcome"])  # hit | miss (absent, older champion, features changed, k too big)
RELOADS = Counter("recflow_reloads_total", "Champion reloads", ["outcome"])  # loaded | failed
CHAMPION = Gauge("recflow_champion", "1 for the champion version a live worker serves",
                 ["version"], multiprocess_mode="livemax")

CONTENT_TYPE = CONTENT_TYPE_LATEST


def set_champion(old: str | None, new: str | None) -> None:
    if old and old != new:
        CHAMPION.labels(version=old).set(0)
    if new:
        CHAMPION.labels(version=new).set(1)


def _multiprocess() -> bool:
    return values.ValueClass is not values.MutexValue


def render() -> bytes:
    """The exposition of every worker (multi-process mode) or of this process."""
    if not _multiprocess() or settings().metrics_dir is None:
        return generate_latest(REGISTRY)
    reg = CollectorRegistry()
    multiprocess.MultiProcessCollector(reg)
    return generate_latest(reg)


def worker_exit() -> None:
    """Drop this worker's live gauges (multi-process mode); counters keep their totals."""
    if _multiprocess() and settings().metrics_dir is not None:
        multiprocess.mark_process_dead(os.getpid())
