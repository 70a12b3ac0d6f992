"""recflow feature pipeline: ingest → validate → build features → materialize → announce."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, chain, dag

# cheap at import; each stage's heavy libraries load in its own `recflow <stage>` process
from pipeline.orchestration.airflow_adapter import (
    DAG_DEFAULT_ARGS,
    FEATURES_ASSET,
    announce_task,
    dag_root,
    stage_task,
)
from pipeline.stages.registry import FEATURE_DAG, of_dag

ROOT = dag_root(__file__)

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
| `announce_features` | — | emits the Asset `{FEATURES_ASSET['name']}` **only when the features changed**, else *skipped* (the reason is its log's WARNING line) |

The Asset schedules **`training_pipeline`**.

**A bad batch fails `validate`** (red, no retries); its log shows the reason once, one ERROR
line per failed check. Validated data, features, the online store and the champion stay as
they were.

Trigger parameters: **force** re-runs every stage even when DVC finds it up to date;
**announce** = `if_changed` (default) / `always` / `never` decides whether training follows.
The data source is *not* a trigger parameter on purpose: it lives in `params.yaml`, so every
artifact matches a committed configuration (change it there, or with `dvc exp run -S ...`).
"""


@dag(
    dag_id=FEATURE_DAG,
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
        # typed and without null: the trigger form then marks the field required and refuses
        # to submit it empty (an untyped enum can be cleared and comes back as a raw 400)
        "announce": Param("if_changed", type="string", enum=["if_changed", "always", "never"],
                          title="Announce features",
                          description="When to emit the features Asset that triggers training."),
    },
)
def feature_pipeline():
    stages = [stage_task(ROOT, s.name, "force")() for s in of_dag(FEATURE_DAG)]
    chain(*stages, announce_task(ROOT)())


feature_pipeline()
