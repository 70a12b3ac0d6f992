"""The in-process DVC runner: the stage's one-line reason, and run / skip / refuse / crash under
real DVC."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.orchestration import dvc_runner


def test_reason_is_the_cli_message_and_none_for_a_crash():
    out = "✓ something\nrecflow validate: data/events/events.parquet: validation failed (x)\n"
    assert dvc_runner._reason("validate", out) == "data/events/events.parquet: validation failed (x)"
    assert dvc_runner._reason("validate", "Traceback (most recent call last):\n  boom\nrecflow validate: x") is None
    assert dvc_runner._reason("train", out) is None


def test_a_reason_over_several_lines_is_kept_whole_and_apart_from_the_progress():
    out = ("✓ loaded 200 rows\nrecflow validate: validation refused 1 batch(es):\n"
           "  event_type: 120 rows\n\n  user_id: 4 rows\n  and 2 more checks\n")
    why, progress = dvc_runner._split_reason("validate", out)
    assert why == "validation refused 1 batch(es):\n  event_type: 120 rows\n  user_id: 4 rows\n  and 2 more checks"
    assert progress == ["✓ loaded 200 rows"]


def test_run_stage_runs_skips_refuses_and_crashes_under_real_dvc(tmp_path, monkeypatch, caplog):
    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run([str(Path(sys.executable).parent / "dvc"), "init", "--no-scm", "-q"], cwd=root, check=True)
    ok = "python -c \"open('out.txt','w').write('x')\""
    refuse = ("python -c \"import sys; print('step one done'); "
              "sys.stderr.write('recflow bad: batch refused:\\n  check a\\n  check b\\n'); sys.exit(1)\"")
    crash = "python -c \"raise RuntimeError('boom')\""
    (root / "dvc.yaml").write_text(json.dumps({"stages": {
        "good": {"cmd": ok, "outs": ["out.txt"]},
        "bad": {"cmd": refuse},
        "crash": {"cmd": crash},
    }}))
    monkeypatch.chdir(tmp_path)  # the target must not depend on the caller's cwd
    for var in ("PATH", "RECFLOW_ROOT"):  # run_stage sets both for the stage: restore after
        monkeypatch.setenv(var, os.environ.get(var, ""))
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)  # as under a scheduler: run_stage sets it
    first = dvc_runner.run_stage(root, "good")
    assert first.ran and (root / "out.txt").read_text() == "x"
    assert dvc_runner.run_stage(root, "good").ran is False  # up to date → skipped
    assert dvc_runner.run_stage(root, "good", force=True).ran is True
    with caplog.at_level(logging.INFO, logger="recflow.orchestrate"):
        with pytest.raises(dvc_runner.StageFailed) as refused:
            dvc_runner.run_stage(root, "bad")
    assert refused.value.reason == "batch refused:\n  check a\n  check b"
    logged = [r.getMessage() for r in caplog.records]
    assert "[bad] step one done" in logged  # the stage's progress is logged …
    assert not any("check a" in m for m in logged)  # … its reason only travels in StageFailed
    with pytest.raises(dvc_runner.StageCrashed, match="crash"):
        dvc_runner.run_stage(root, "crash")
