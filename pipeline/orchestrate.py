"""Run one DVC stage from an orchestrator (Airflow) in-process: the same executor as `dvc repro`.

Why in-process DVC instead of shelling out per task: DVC decides what is stale (it skips a stage
whose deps and params did not change), records lineage in dvc.lock and holds its repo lock, so
an Airflow run and a laptop run produce identical artifacts. The stage command itself
(`recflow <stage>`) still runs as a subprocess; its output is captured at the file-descriptor
level and re-logged, so the task log shows it and a failure carries the stage's one-line reason.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from pipeline.errors import RecflowError

log = logging.getLogger("recflow.orchestrate")

#: the Asset the feature DAG emits and the training DAG is scheduled on
FEATURES_ASSET = {"name": "recflow_features", "uri": "recflow://features"}

#: task defaults of both DAGs: retries are for crashes only; a stage that refuses its input
#: (bad data, bad config) fails at once through AirflowFailException
DAG_DEFAULT_ARGS = {
    "owner": "recflow",
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
    "execution_timeout": timedelta(minutes=30),
}

#: the files whose content defines "the features"; a change here is what the Asset announces
FEATURE_FILES = ("feature_repo/data/user_features.parquet", "feature_repo/data/item_features.parquet")
#: where the fingerprint of the last features announced downstream is kept
ASSET_STATE = "reports/feature_asset.json"


class StageFailed(RecflowError):
    """A stage refused its input (bad data, bad config): retrying will not help."""


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


def _reason(stage: str, output: str) -> str | None:
    """The CLI's one-line user error (`recflow <stage>: ...`), or None if the stage crashed."""
    if "Traceback (most recent call last)" in output:
        return None
    lines = [ln for ln in output.splitlines() if ln.startswith(f"recflow {stage}:")]
    return lines[-1].split(":", 1)[1].strip() if lines else None


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
    os.environ["RECFLOW_ROOT"] = str(root)

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
    for line in output.splitlines():
        if line.strip():
            log.info("[%s] %s", stage, line)
    if error is not None:
        why = _reason(stage, output)
        if why:
            raise StageFailed(f"stage '{stage}' refused its input: {why}")
        cause = error.__cause__ or error
        raise StageCrashed(f"stage '{stage}' failed: {cause}")
    log.info("stage %s %s in %.1fs", stage, "ran" if ran else "was up to date (skipped)", secs)
    return StageRun(stage, ran, round(secs, 2), output)


def dag_root(dag_file: str) -> Path:
    """The project a DAG file belongs to: $RECFLOW_ROOT if set, else the DAG folder's parent."""
    env = os.environ.get("RECFLOW_ROOT")
    return Path(env).resolve() if env else Path(dag_file).resolve().parents[1]


def airflow_stage(root: Path, stage: str, force: bool = False) -> dict:
    """run_stage for an Airflow task: a refusal becomes AirflowFailException (no retries),
    a crash stays an ordinary exception (retried with backoff)."""
    from airflow.sdk.exceptions import AirflowFailException

    logging.getLogger("recflow").setLevel(logging.INFO)
    try:
        r = run_stage(root, stage, force=force)
    except StageFailed as e:
        raise AirflowFailException(str(e)) from None
    return {"stage": r.stage, "ran": r.ran, "seconds": r.seconds}


def feature_fingerprint(root: Path) -> str | None:
    """sha256 over the feature snapshots; None when they do not exist yet."""
    h = hashlib.sha256()
    for rel in FEATURE_FILES:
        p = Path(root) / rel
        if not p.exists():
            return None
        h.update(rel.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def features_changed(root: Path) -> tuple[bool, str | None]:
    """Did the features change since the last time they were announced downstream?

    Compared against the last *announced* fingerprint (not the previous run), so a run that
    built features but failed before announcing them is announced by the next run.
    """
    now = feature_fingerprint(root)
    state = Path(root) / ASSET_STATE
    last = json.loads(state.read_text()).get("fingerprint") if state.exists() else None
    return (now is not None and now != last), now


def mark_announced(root: Path, fingerprint: str) -> None:
    from pipeline.io import write_json

    write_json(Path(root) / ASSET_STATE, {"fingerprint": fingerprint, "at": time.time()})


def promotion_outcome(root: Path, ran: bool) -> dict:
    """What the promote stage decided, from reports/promotion.json (the gate's own record)."""
    p = Path(root) / "reports" / "promotion.json"
    rec = json.loads(p.read_text()) if p.exists() else {}
    return {
        "ran": ran,
        "promoted": bool(rec.get("promoted")) and ran,
        "version": rec.get("version"),
        "reason": rec.get("reason", "no promotion record"),
        "champion_version": rec.get("champion_version"),
    }


def notify_serving(url: str | None, timeout: float = 10) -> str:
    """POST {url}/admin/reload so a running serving API loads the new champion.

    Without a URL nothing serves and this is a no-op; an unreachable server is reported, not
    raised: the champion is already promoted and the server reloads on its next start.
    """
    if not url:
        return "RECFLOW_SERVING_URL not set: no serving API to notify (no-op)"
    req = urllib.request.Request(url.rstrip("/") + "/admin/reload", method="POST", data=b"{}",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return f"serving at {url} reloaded (HTTP {resp.status})"
    except (urllib.error.URLError, OSError) as e:
        return f"serving at {url} not reachable ({e}); it loads the champion when it starts"
