"""The environment knobs, read in this one place (``params.yaml`` holds everything else).

* ``RECFLOW_ROOT``: the project root (the CLI's ``--root`` sets it; the DVC runner sets it for
  the stage commands it starts);
* ``RECFLOW_ONLINE_STORE``: ``sqlite`` (the default of ``feature_repo/feature_store.yaml``) or
  ``redis://HOST:PORT[/DB]``;
* ``RECFLOW_SERVING_URL``: the serving API the training DAG asks to reload a new champion.
* ``PROMETHEUS_MULTIPROC_DIR``: prometheus-client's multi-process mode (several serving
  workers share one ``/metrics``); ``pipeline.serving.run`` sets it before workers start.

The environment is read when :func:`settings` is called, not at import, so a test or a
front door that changes it is seen by the next call.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT_ENV = "RECFLOW_ROOT"
ONLINE_ENV = "RECFLOW_ONLINE_STORE"
SERVING_URL_ENV = "RECFLOW_SERVING_URL"
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own name


@dataclass(frozen=True)
class Settings:
    root: Path | None
    online_store: str | None
    serving_url: str | None
    metrics_dir: Path | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        root = env.get(ROOT_ENV)
        return cls(root=Path(root).resolve() if root else None,
                   online_store=(env.get(ONLINE_ENV) or "").strip() or None,
                   serving_url=(env.get(SERVING_URL_ENV) or "").strip() or None,
                   metrics_dir=Path(env[METRICS_DIR_ENV]) if env.get(METRICS_DIR_ENV) else None)


def settings() -> Settings:
    """The knobs as the environment says now."""
    return Settings.from_env()
