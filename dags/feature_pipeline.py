"""recflow feature pipeline: ingest → validate → build features → materialize → announce."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, Param, dag, task

# stdlib-only module: cheap for the DAG processor; the stages' heavy imports happen in tasks
from pipeline.orchestrate import DAG_DEFAULT_ARGS, FEATURES_ASSET, airflow_stage, dag_root

ROOT = dag_root(__file__)
FEATURES_URI = FEATURES_ASSET["uri"]

FEATURES = Asset(**FEATURES_ASSET)

DOC = f"""
### recflow · feature pipeline

Runs the **DVC stages** of `{ROOT}/dvc.yaml` one per task — the same executor as `dvc repro`,
so DVC skips a stage whose code, params and data did not change.

| task | stage | writes |
|---|---|---|
| `ingest` | ingest | `data/events/` from `params.yaml: ingest.source` |
| `validate` | validate | Great Expectations suite; bad rows → `data/quarantine/`; `reports/validation.json` |
| `build_features` | features | DuckDB user / item snapshots → `feature_repo/data/` |
| `materialize` | materialize | Feast apply + online store (SQLite) |
| `announce_features` | — | emits the Asset `{FEATURES_URI}` **only when the features changed**, else *skipped* |

The Asset schedules **`training_pipeline`**.

**A bad batch fails `validate`** (red, no retries) with the GX reason in its log; validated
data, features, the online store and the champion stay as they were.

Trigger parameters: **force** re-runs every stage even when DVC finds it up to date;
**announce** = `if_changed` (default) / `always` / `never` decides whether training follows.
The data source is *not* a trigger parameter on purpose: it lives in `params.yaml`, so every
artifact matches a committed configuration (change it there, or with `dvc exp run -S ...`).
"""


@dag(
    dag_id="feature_pipeline",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DAG_DEFAULT_ARGS,
    dagrun_timeout=timedelta(hours=2),
    tags=["recflow", "features", "dvc"],
    doc_md=DOC,
    params={
        "force": Param(False, type="boolean", title="Force",
                       description="Re-run every stage even if DVC finds it up to date."),
        "announce": Param("if_changed", enum=["if_changed", "always", "never"], title="Announce features",
                          description="When to emit the features Asset that triggers training."),
    },
)
def feature_pipeline():
    @task(execution_timeout=timedelta(minutes=20))
    def ingest(params: dict | None = None) -> dict:
        return airflow_stage(ROOT, "ingest", force=bool(params and params["force"]))

    @task(execution_timeout=timedelta(minutes=20))
    def validate(_: dict, params: dict | None = None) -> dict:
        return airflow_stage(ROOT, "validate", force=bool(params and params["force"]))

    @task(execution_timeout=timedelta(minutes=20))
    def build_features(_: dict, params: dict | None = None) -> dict:
        return airflow_stage(ROOT, "features", force=bool(params and params["force"]))

    @task(execution_timeout=timedelta(minutes=20))
    def materialize(_: dict, params: dict | None = None) -> dict:
        return airflow_stage(ROOT, "materialize", force=bool(params and params["force"]))

    @task(outlets=[FEATURES], execution_timeout=timedelta(minutes=2), retries=0)
    def announce_features(_: dict, params: dict | None = None) -> dict:
        """Emit the Asset when the features changed since last announced; else skip."""
        import logging

        from airflow.sdk.exceptions import AirflowSkipException

        from pipeline.orchestrate import features_changed, mark_announced

        log = logging.getLogger("recflow.dags")
        mode = params["announce"] if params else "if_changed"
        changed, fp = features_changed(ROOT)
        if fp is None:
            raise AirflowSkipException("no feature snapshots found; nothing to announce")
        if mode == "never" or (mode == "if_changed" and not changed):
            raise AirflowSkipException(
                f"features unchanged since last announced (sha256 {fp[:12]}); training not triggered"
                if mode == "if_changed" else "announce=never: training not triggered")
        mark_announced(ROOT, fp)
        log.info("features %s: emitting Asset %s", "changed" if changed else "announced (always)",
                 FEATURES_URI)
        return {"fingerprint": fp, "changed": changed}

    i = ingest()
    v = validate(i)
    f = build_features(v)
    m = materialize(f)
    announce_features(m)


feature_pipeline()
