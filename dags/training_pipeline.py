"""recflow training pipeline: train → evaluate → promote → notify serving."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, chain, dag

# cheap at import; each stage's heavy libraries load in its own `recflow <stage>` process
from pipeline.orchestration.airflow_adapter import (
    DAG_DEFAULT_ARGS,
    FEATURES_ASSET,
    dag_root,
    features_asset,
    notify_task,
    report_promotion,
    stage_task,
)
from pipeline.stages.registry import TRAINING_DAG, of_dag

ROOT = dag_root(__file__)

DOC = f"""
### recflow · training pipeline

Scheduled on the Asset `{FEATURES_ASSET['name']}` (emitted by `feature_pipeline` when features change)
and triggerable by hand. Each task runs one **DVC stage** of `{ROOT}/dvc.yaml`.

| task | stage | writes |
|---|---|---|
| `train` | train | point-in-time training set from Feast; every family tuned on the validation slice → `models/families/`, the best → `models/candidate/` |
| `evaluate` | evaluate | candidate vs every family vs champion on the same holdout → `metrics/` |
| `promote` | promote | evaluation gate → `models/registry/champion.json` or a refusal |
| `notify_serving` | — | `POST $RECFLOW_SERVING_URL/admin/reload` after a promotion; a logged no-op otherwise |

**A refused challenger is not a failure**: `promote` ends green, its log says
`NOT PROMOTED: <gate reason>` and the champion is untouched (`reports/promotion.json`).

Trigger parameter: **force_retrain** re-runs train / evaluate / promote even when DVC finds
them up to date (a new seed-identical model is only promoted if the gate says so).
"""


@dag(
    dag_id=TRAINING_DAG,
    schedule=[features_asset()],
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
    then = {"promote": report_promotion}  # the gate's decision is the promote task's result
    stages = [stage_task(ROOT, s.name, "force_retrain", then.get(s.name))()
              for s in of_dag(TRAINING_DAG)]
    chain(*stages)
    notify_task()(stages[-1])


training_pipeline()
