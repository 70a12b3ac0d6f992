"""Run one DVC stage from an orchestrator (Airflow) in-process: the same executor as `dvc repro`.

Why in-process DVC instead of shelling out per task: DVC decides what is stale (it skips a stage
whose deps and params did not change), records lineage in dvc.lock and holds its repo lock, so
an Airflow run and a laptop run produce identical artifacts. The stage command itself
(`recflow <stage>`) still runs as a subprocess; its output is captured at the file-descriptor
level and re-logged, so the task log shows it; a refusal carries the stage's reason (the CLI's
message, all its lines) in StageFailed instead, so an orchestrator shows it once.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import RecflowError
from pipeline.settings import ROOT_ENV

log = logging.getLogger("recflow.orchestrate")


class StageFailed(RecflowError):
    """A stage refused its input (bad data, bad config): retrying will not help.

    ``reason`` is the stage's own message as the CLI printed it (one or more lines).
    """

    def __init__(self, stage: str, reason: str):
        super().__init__(f"stage '{stage}' refused its input: {reason}")
        self.stage = stage
        self.reason = reason


class StageCrashed(Exception):
    """A stage died unexpectedly (traceback, lock timeout, killed): worth a retry."""


@dataclass(frozen=True)
class StageRun:
    stage: str
    ran: bool          # False when DVC found the stage up to date and skipped it
    seconds: float
    output: str        # what the stage command printed (stdout + stderr)


@contextlib.contextmanager
def _capture_fds() -> Iterator[Path]:
    """Send fds 1 and 2 (inherited by the stage subprocess) to a temp file while inside."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd, name = tempfile.mkstemp(prefix="recflow-stage-", suffix=".log")
    saved = os.dup(1), os.dup(2)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    try:
        yield Path(name)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (fd, *saved):
            os.close(f)


@contextlib.contextmanager
def _project_lock(root: Path, timeout: float) -> Iterator[None]:
    """One DVC run per project at a time: the feature and the training DAG may overlap, and
    DVC's own repo lock fails at once instead of waiting."""
    path = root / ".dvc" / "tmp" / "recflow-orchestrate.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StageCrashed(f"{path}: another stage held the project lock for {timeout:.0f}s") from None
                time.sleep(1.0)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _split_reason(stage: str, output: str) -> tuple[str | None, list[str]]:
    """(the CLI's user error, the output lines before it); (None, all lines) for a crash.

    The CLI prints a refusal last, as ``recflow <stage>: <message>``; a message may span
    several lines (one per failed check), so the reason runs from that line to the end.
    """
    lines = output.splitlines()
    if "Traceback (most recent call last)" in output:
        return None, lines
    starts = [i for i, ln in enumerate(lines) if ln.startswith(f"recflow {stage}:")]
    if not starts:
        return None, lines
    i = starts[-1]
    first = lines[i].split(":", 1)[1].strip()
    reason = "\n".join([first, *(ln.rstrip() for ln in lines[i + 1:] if ln.strip())])
    return reason, lines[:i]


def _reason(stage: str, output: str) -> str | None:
    """The CLI's user error (`recflow <stage>: ...`, all its lines), or None if the stage crashed."""
    return _split_reason(stage, output)[0]


def run_stage(root: Path, stage: str, force: bool = False, lock_timeout: float = 1800) -> StageRun:
    """Reproduce one stage of ``root``/dvc.yaml (and nothing upstream of it).

    Raises StageFailed with the stage's own reason when it rejects its input (e.g. the GX
    summary of a failed validation), StageCrashed for anything else.
    """
    root = Path(root).resolve()
    # The stage cmd is `recflow ...`: the interpreter's bin dir must come first on PATH,
    # and the stage must see this project even if the caller's RECFLOW_ROOT says otherwise.
    bindir = str(Path(sys.executable).parent)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bindir:
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    os.environ[ROOT_ENV] = str(root)  # the stage subprocess inherits it
    # stdout and stderr share one capture file: unbuffered, they stay in the order printed, so
    # the CLI's refusal (stderr, last) is not followed by progress lines flushed at exit
    os.environ["PYTHONUNBUFFERED"] = "1"

    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    logging.getLogger("dvc").setLevel(logging.WARNING)  # after import: dvc resets it on import
    t0 = time.perf_counter()
    error: Exception | None = None
    ran = False
    # DVC resolves some paths (plots, outs) against the working directory, not Repo(root)
    with _project_lock(root, lock_timeout), contextlib.chdir(root), _capture_fds() as out_path:
        try:
            with Repo(str(root)) as repo:
                ran = bool(repo.reproduce(f"{root}/dvc.yaml:{stage}", single_item=True, force=force))
        except DvcException as e:
            error = e
    output = out_path.read_text(errors="replace")
    out_path.unlink(missing_ok=True)
    secs = time.perf_counter() - t0
    why, progress = _split_reason(stage, output) if error is not None else (None, output.splitlines())
    for line in progress:  # the reason itself is not echoed here: StageFailed carries it once
        if line.strip():
            log.info("[%s] %s", stage, line)
    if error is not None:
        if why:
            raise StageFailed(stage, why)
        cause = error.__cause__ or error
        raise StageCrashed(f"stage '{stage}' failed: {cause}")
    log.info("stage %s %s in %.1fs", stage, "ran" if ran else "was up to date (skipped)", secs)
    return StageRun(stage, ran, round(secs, 2), output)
