"""dvc.yaml against the code: the stages are the registry's, in its order, and every stage's
deps name all the code it runs (from the import graph), so `dvc repro` can never call stale
outputs up to date after a code change."""

from pathlib import Path

import grimp
import pytest
import yaml

from pipeline.stages.registry import NAMES

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())


def code_of(stage: str) -> set[str]:
    """Files (relative to the root) of every pipeline module the stage's module imports,
    directly or not, itself included."""
    graph = grimp.build_graph("pipeline")
    mod = f"pipeline.stages.{stage}"
    files = set()
    for m in graph.find_upstream_modules(mod) | {mod}:
        base = ROOT / Path(*m.split("."))
        f = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
        files.add(f.relative_to(ROOT).as_posix())
    return files


def _covered(f: str, deps: list[str]) -> bool:
    return any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps)


def test_dvc_stages_are_the_registry_in_order():
    assert tuple(DVC["stages"]) == NAMES


def test_every_stage_cmd_is_its_cli_subcommand():
    for name, st in DVC["stages"].items():
        assert st["cmd"] == f"recflow {name}"


@pytest.mark.parametrize("stage", NAMES)
def test_deps_name_all_the_code_a_stage_runs(stage):
    deps = [d for d in DVC["stages"][stage]["deps"] if isinstance(d, str)]
    code = code_of(stage)
    missing = sorted(f for f in code if not _covered(f, deps))
    assert not missing, f"{stage}: dvc.yaml deps miss code the stage imports: {missing}"
    # and no padding: every code dep holds something the stage runs
    unused = [d for d in deps if d.startswith("pipeline/")
              and not any(_covered(f, [d]) for f in code)]
    assert not unused, f"{stage}: deps the stage never imports: {unused}"


def test_ingest_depends_on_its_input_and_the_pushed_events():
    """``ingest.source: file`` was no DVC dependency: editing the file left `dvc status` up to
    date. The input is ``${ingest.path}`` (landing folder, file or MovieLens folder), and
    pushed events are new training data."""
    from dvc.repo import Repo

    deps = DVC["stages"]["ingest"]["deps"]
    assert "${ingest.path}" in deps and "data/pushed" in deps
    assert (ROOT / "data/pushed/.gitkeep").exists()  # a dep DVC can always hash
    with Repo(str(ROOT)) as repo:
        (stage,) = repo.stage.collect("ingest")
        resolved = {Path(d.def_path).as_posix() for d in stage.deps}
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert params["ingest"]["path"] in resolved
