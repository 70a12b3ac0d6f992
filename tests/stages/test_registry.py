"""The stage registry is the one list: every entry is a thin module with ``run``, the two DAGs
split it without overlap, and the CLI has one sub-command per stage."""

import inspect

from pipeline.cli import build_parser
from pipeline.stages.registry import FEATURE_DAG, NAMES, STAGES, TRAINING_DAG, get, of_dag


def test_every_stage_is_a_thin_module_with_run():
    for st in STAGES:
        mod = st.module()
        assert list(inspect.signature(mod.run).parameters) == ["params", "paths"]
        assert len(inspect.getsource(mod).splitlines()) < 80, f"{st.name} is not thin"


def test_the_dags_split_the_stages_in_order():
    assert [s.name for s in of_dag(FEATURE_DAG) + of_dag(TRAINING_DAG)] == list(NAMES)
    assert get("features").task_id == "build_features"


def test_cli_has_a_subcommand_per_stage():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(NAMES) <= set(sub.choices)
