"""Atomic writes leave nothing behind, even when the writer is killed: the next writer of the
same folder removes a dead process's temp folder (problem 14: `.candidate.tmp-*` forever)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from pipeline.io import atomic_dir, remove_stale

KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from pipeline.io import atomic_dir
with atomic_dir(Path(sys.argv[1])) as tmp:
    (tmp / "half.txt").write_text("half")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _killed_writer(target: Path) -> None:
    p = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target)], timeout=60)
    assert p.returncode == -signal.SIGKILL


def test_a_killed_writers_temp_folder_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "models" / "candidate"
    with atomic_dir(target) as tmp:
        (tmp / "model.json").write_text("v1")
    _killed_writer(target)
    left = [p.name for p in target.parent.iterdir() if p.name != "candidate"]
    assert len(left) == 1 and left[0].startswith(".candidate.tmp-")
    with atomic_dir(target) as tmp:
        (tmp / "model.json").write_text("v2")
    assert sorted(p.name for p in target.parent.iterdir()) == ["candidate"]
    assert (target / "model.json").read_text() == "v2"


def test_live_writers_and_other_files_are_left_alone(tmp_path):
    mine = tmp_path / f".x.tmp-{os.getpid()}"
    mine.mkdir()
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "x.tmp-1").mkdir()          # no leading dot: not ours
    assert remove_stale(tmp_path) == []
    assert {p.name for p in tmp_path.iterdir()} == {mine.name, ".hidden", "x.tmp-1"}


def test_an_old_copy_without_its_target_is_moved_back(tmp_path):
    """Killed between the two renames of atomic_dir: the `.old` copy is the last complete
    version, so it is restored rather than deleted."""
    dead = _dead_pid()
    old = tmp_path / f".trainset.old-{dead}"
    old.mkdir()
    (old / "meta.json").write_text("{}")
    remove_stale(tmp_path)
    assert (tmp_path / "trainset" / "meta.json").exists() and not old.exists()


def _dead_pid() -> int:
    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                       capture_output=True, text=True, check=True)
    return int(p.stdout)
