"""The registry's pointer and history agree after any crash: a switch is recorded before the
pointer moves, `recover` finishes or records an interrupted one, rollback follows the true
order of champions, and a killed registration's temp folder is removed by the next."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.errors import RecflowError
from pipeline.registry import versions


def artifact(tmp: Path, name: str) -> Path:
    d = tmp / "src" / name
    d.mkdir(parents=True)
    (d / "model.npz").write_bytes(b"x")
    (d / "model.json").write_text("{}")
    return d


def promote(reg: Path, tmp: Path, switch: bool = True, record: bool = True) -> str:
    v = versions.register(reg, artifact(tmp, f"m{len(versions.list_versions(reg))}"), {})
    if record:
        versions.log_decision(reg, {"promoted": True, "version": v,
                                    "at": datetime.now(UTC).isoformat()})
    if switch:
        versions.set_champion(reg, v, "test")
    return v


def test_recover_finishes_a_switch_that_was_recorded(tmp_path):
    reg = tmp_path / "registry"
    promote(reg, tmp_path)
    promote(reg, tmp_path, switch=False)              # killed between the record and the switch
    assert versions.champion(reg) == "v0001"
    assert "v0002" in versions.recover(reg)
    assert versions.champion(reg) == "v0002"
    assert versions.recover(reg) is None              # nothing left to do
    assert versions.rollback(reg) == "v0001"


def test_recover_records_a_switch_that_lost_its_record(tmp_path):
    """A registry written by the old order (switch, then record) and killed in between."""
    reg = tmp_path / "registry"
    promote(reg, tmp_path)
    promote(reg, tmp_path)
    promote(reg, tmp_path, record=False)              # v0003 switched, never recorded
    assert "v0003" in versions.recover(reg)
    assert versions.champion(reg) == "v0003"
    assert versions.history(reg)[-1]["action"] == "recovered"
    assert versions.rollback(reg) == "v0002"
    assert versions.rollback(reg) == "v0003"          # the champion before v0002
    assert versions.rollback(reg, "v0001") == "v0001"
    assert versions.rollback(reg) == "v0003"
    with pytest.raises(RecflowError, match="v0009"):
        versions.rollback(reg, "v0009")
    assert versions.champion(reg) == "v0003"


def test_a_killed_registrations_temp_folder_is_removed(tmp_path):
    reg = tmp_path / "registry"
    promote(reg, tmp_path)
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout)
    stale = versions.versions_dir(reg) / f".v0002.tmp-{dead}"
    stale.mkdir()
    (stale / "model.npz").write_bytes(b"half")
    assert promote(reg, tmp_path) == "v0002"
    assert sorted(p.name for p in versions.versions_dir(reg).iterdir()) == ["v0001", "v0002"]
