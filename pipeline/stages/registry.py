"""The one ordered list of stages: ``dvc.yaml`` has the same stages in the same order (a test
checks), the CLI makes a sub-command of each, the summary reports them, and each Airflow DAG
runs its share. Stdlib only: DAG files import it."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

FEATURE_DAG = "feature_pipeline"
TRAINING_DAG = "training_pipeline"


@dataclass(frozen=True)
class Stage:
    name: str              # dvc.yaml stage, CLI sub-command, module pipeline.stages.<name>
    help: str
    dag: str               # the Airflow DAG that runs it
    task_id: str           # its Airflow task
    timeout_minutes: int   # the Airflow task's execution timeout

    def module(self) -> ModuleType:
        """``pipeline.stages.<name>``, imported on demand (stages pull in heavy libraries)."""
        return importlib.import_module(f"pipeline.stages.{self.name}")


STAGES: tuple[Stage, ...] = (
    Stage("ingest", "load raw events (synthetic / landing files / MovieLens) into data/events/",
          FEATURE_DAG, "ingest", 20),
    Stage("validate", "Great Expectations checks; bad rows → data/quarantine/",
          FEATURE_DAG, "validate", 20),
    Stage("features", "DuckDB user & item feature snapshots → feature_repo/data/",
          FEATURE_DAG, "build_features", 20),
    Stage("materialize", "feast apply + materialize into the online store",
          FEATURE_DAG, "materialize", 20),
    Stage("train", "training set; tune every model family on validation → models/candidate/",
          TRAINING_DAG, "train", 60),
    Stage("evaluate", "candidate vs every family vs champion on the same holdout → metrics/",
          TRAINING_DAG, "evaluate", 30),
    Stage("promote", "evaluation gate; refit the winner on all data and make it the champion",
          TRAINING_DAG, "promote", 60),   # the refit for serving costs a fit, as train does
)
NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)


def get(name: str) -> Stage:
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(f"no stage {name!r}; stages: {', '.join(NAMES)}")


def of_dag(dag_id: str) -> tuple[Stage, ...]:
    return tuple(s for s in STAGES if s.dag == dag_id)
