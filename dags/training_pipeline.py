"""recflow training pipeline: train → evaluate → promote → notify serving."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, Param, dag, task

# stdlib-only module: cheap for the DAG processor; the stages' heavy imports happen in tasks
from pipeline.orchestrate import DAG_DEFAULT_ARGS, FEATURES_ASSET, airflow_stage, dag_root

ROOT = dag_root(__file__)
FEATURES_URI = FEATURES_ASSET["uri"]

DOC = f"""
### recflow · training pipeline

Scheduled on the Asset `{FEATURES_URI}` (emitted by `feature_pipeline` when features change)
and triggerable by hand. Each task runs one **DVC stage** of `{ROOT}/dvc.yaml`.

| task | stage | writes |
|---|---|---|
| `train` | train | point-in-time training set from Feast; LightFM WARP → `models/candidate/` |
| `evaluate` | evaluate | candidate vs popularity vs champion on the same holdout → `metrics/` |
| `promote` | promote | evaluation gate → `models/registry/champion.json` or a refusal |
| `notify_serving` | — | `POST $RECFLOW_SERVING_URL/admin/reload` after a promotion; a logged no-op otherwise |

**A refused challenger is not a failure**: `promote` ends green, its log says
`NOT PROMOTED: <gate reason>` and the champion is untouched (`reports/promotion.json`).

Trigger parameter: **force_retrain** re-runs train / evaluate / promote even when DVC finds
them up to date (a new seed-identical model is only promoted if the gate says so).
"""


@dag(
    dag_id="training_pipeline",
    schedule=[Asset(**FEATURES_ASSET)],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DAG_DEFAULT_ARGS,
    dagrun_timeout=timedelta(hours=3),
    tags=["recflow", "training", "dvc"],
    doc_md=DOC,
    params={
        "force_retrain": Param(False, type="boolean", title="Force retrain",
                               description="Re-run train/evaluate/promote even if up to date."),
    },
)
def training_pipeline():
    @task(execution_timeout=timedelta(minutes=60))
    def train(params: dict | None = None) -> dict:
        return airflow_stage(ROOT, "train", force=bool(params and params["force_retrain"]))

    @task(execution_timeout=timedelta(minutes=30))
    def evaluate(_: dict, params: dict | None = None) -> dict:
        return airflow_stage(ROOT, "evaluate", force=bool(params and params["force_retrain"]))

    @task(execution_timeout=timedelta(minutes=10))
    def promote(_: dict, params: dict | None = None) -> dict:
        """Run the gate; a refusal ends this task green with the reason in the log."""
        import logging

        from pipeline.orchestrate import promotion_outcome

        r = airflow_stage(ROOT, "promote", force=bool(params and params["force_retrain"]))
        out = promotion_outcome(ROOT, r["ran"])
        log = logging.getLogger("recflow.dags")
        if out["promoted"]:
            log.info("PROMOTED %s: %s", out["version"], out["reason"])
        elif r["ran"]:
            log.warning("NOT PROMOTED (champion stays %s): %s", out["champion_version"], out["reason"])
        else:
            log.info("promote up to date, nothing new to decide; last decision: %s", out["reason"])
        return out

    @task(execution_timeout=timedelta(minutes=2), retries=1)
    def notify_serving(outcome: dict) -> str:
        import logging
        import os

        from pipeline.orchestrate import notify_serving as notify

        log = logging.getLogger("recflow.dags")
        if not outcome["promoted"]:
            msg = "no new champion: serving keeps its model (no-op)"
        else:
            msg = notify(os.environ.get("RECFLOW_SERVING_URL"))
        log.info(msg)
        return msg

    notify_serving(promote(evaluate(train())))


training_pipeline()
