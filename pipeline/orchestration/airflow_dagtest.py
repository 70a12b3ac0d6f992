"""Check and run the DAGs without a scheduler: `DagBag` import check and `dag.test()`.

Run it as a subprocess (``python -m pipeline.orchestration.airflow_dagtest ...``) with ``AIRFLOW_HOME`` set:
Airflow reads its home once, at import, and writes its config + SQLite DB there, so a
separate process is the only way to keep tests and benchmarks inside their temp dirs.
The last stdout line is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def _assets(cond: object) -> list[dict]:
    """The assets of a schedule condition (an Asset, or AssetAll/AssetAny of them)."""
    if cond is None:
        return []
    if hasattr(cond, "objects"):
        return [a for o in cond.objects for a in _assets(o)]
    return [{"name": cond.name, "uri": cond.uri}]  # type: ignore[attr-defined]


def _assets_of(objs: list) -> list[dict]:
    return [a for o in objs for a in _assets(o)]


def check(dags_folder: Path) -> dict:
    """Import errors, DAG ids, and whether every DAG is acyclic (topological sort succeeds)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(dags_folder))
    acyclic = {}
    for dag_id, dag in bag.dags.items():
        try:
            dag.topological_sort()
            acyclic[dag_id] = True
        except Exception:  # noqa: BLE001 - AirflowDagCycleException and friends
            acyclic[dag_id] = False
    return {
        "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
        "dag_ids": sorted(bag.dag_ids),
        "acyclic": acyclic,
        "tasks": {d: [t.task_id for t in dag.tasks] for d, dag in bag.dags.items()},
        "max_active_runs": {d: dag.max_active_runs for d, dag in bag.dags.items()},
        "params": {d: sorted(dag.params.keys()) for d, dag in bag.dags.items()},
        # the JSON schema the trigger form renders (and enforces) for each param
        "param_schemas": {d: {k: dag.params.get_param(k).schema for k in dag.params}
                          for d, dag in bag.dags.items()},
        "schedule_assets": {d: _assets(getattr(dag.timetable, "asset_condition", None))
                            for d, dag in bag.dags.items()},
        "outlets": {d: {t.task_id: _assets_of(t.outlets) for t in dag.tasks if t.outlets}
                    for d, dag in bag.dags.items()},
        "tags": {d: sorted(dag.tags) for d, dag in bag.dags.items()},
        "has_doc": {d: bool(dag.doc_md) for d, dag in bag.dags.items()},
        "doc_md": {d: dag.doc_md or "" for d, dag in bag.dags.items()},
    }


def run(dags_folder: Path, dag_id: str, conf: dict | None = None) -> dict:
    """``dag.test()`` one DAG in this process; returns the run state and every task's state."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(dags_folder))
    if bag.import_errors:
        raise SystemExit(f"import errors: {bag.import_errors}")
    t0 = time.perf_counter()
    dr = bag.get_dag(dag_id).test(run_conf=conf or None)
    secs = time.perf_counter() - t0
    return {
        "dag_id": dag_id,
        "state": str(dr.state),
        "seconds": round(secs, 2),
        "tasks": {ti.task_id: str(ti.state) for ti in dr.get_task_instances()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.orchestration.airflow_dagtest")
    ap.add_argument("dags_folder", type=Path)
    ap.add_argument("dag_id", nargs="?", help="run this DAG with dag.test(); omit to only check")
    ap.add_argument("--conf", default="{}", help="run conf (trigger params) as JSON")
    args = ap.parse_args(argv)
    # before the first airflow import: dag.test() serializes the DAG from the configured folder
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(args.dags_folder.resolve())
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    if "AIRFLOW_HOME" not in os.environ:
        ap.error("set AIRFLOW_HOME (a temp dir after `airflow db migrate`)")
    out = (run(args.dags_folder, args.dag_id, json.loads(args.conf)) if args.dag_id
           else check(args.dags_folder))
    sys.stdout.flush()
    print("\n" + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
