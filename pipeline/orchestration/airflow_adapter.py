"""What the two DAG files share: the features Asset, the task defaults, one ``stage_task``
factory, and the three tasks that are not stages (announce features, report the gate,
notify serving).

Cheap at import (stdlib and the ground floor only) because the DAG processor imports it on
every parse; Airflow itself is imported inside the factories, and each stage's heavy
libraries only in the ``recflow <stage>`` subprocess DVC starts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from pipeline.config import Paths
from pipeline.orchestration.dvc_runner import StageFailed, run_stage
from pipeline.settings import settings
from pipeline.stages import registry

log = logging.getLogger("recflow.dags")

#: the Asset the feature DAG emits and the training DAG is scheduled on. The UI lists Assets by
#: name, so the docs use the name too (never the URI). Neither part may change: (name, uri) is
#: the Asset's identity in Airflow's DB, and a changed one conflicts with the Asset an existing
#: airflow_home already has (announce_features then fails with
#: AirflowInactiveAssetInInletOrOutletException until the scheduler orphans the old one).
FEATURES_ASSET = {"name": "recflow_features", "uri": "recflow://features"}

#: a reason line longer than this is broken at its list separators in the task log
READABLE_LINE = 160

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


def features_asset():
    """The Asset object (one definition for both DAGs)."""
    from airflow.sdk import Asset

    return Asset(**FEATURES_ASSET)


def dag_root(dag_file: str) -> Path:
    """The project a DAG file belongs to: $RECFLOW_ROOT if set, else the DAG folder's parent."""
    return settings().root or Path(dag_file).resolve().parents[1]


def reason_lines(reason: str) -> list[str]:
    """The lines a task log shows for a stage's reason: the reason's own lines, and a line
    longer than ``READABLE_LINE`` broken at its list separators (``; `` between checks, `` | ``
    between batches), the continued parts indented. A reason written one check per line passes
    unchanged."""
    out: list[str] = []
    for line in reason.splitlines():
        if not line.strip():
            continue
        parts = ([p.strip() for p in re.split(r"; | \| ", line) if p.strip()]
                 if len(line) > READABLE_LINE else [line])
        out += [parts[0], *("  " + p for p in parts[1:])]
    return out


def airflow_stage(root: Path, stage: str, force: bool = False) -> dict:
    """run_stage for an Airflow task: a refusal becomes AirflowFailException (no retries),
    a crash stays an ordinary exception (retried with backoff).

    A refusal's reason is logged once, one ERROR line per line of it (so the log viewer shows
    one failed check per line, outside any collapsed group); the exception only points at it,
    so the reason does not appear a second time in the traceback.
    """
    from airflow.sdk.exceptions import AirflowFailException

    logging.getLogger("recflow").setLevel(logging.INFO)
    try:
        r = run_stage(root, stage, force=force)
    except StageFailed as e:
        for line in reason_lines(e.reason) or ["(the stage gave no reason)"]:
            log.error("%s", line)
        raise AirflowFailException(
            f"stage '{stage}' refused its input (reason in the ERROR lines above); not retried: "
            "fix the input, then trigger again") from None
    return {"stage": r.stage, "ran": r.ran, "seconds": r.seconds}


def stage_task(root: Path, name: str, force_param: str,
               then: Callable[[Path, dict], Any] | None = None):
    """An Airflow task that runs DVC stage ``name`` (task id, timeout and doc from the stage
    registry); the trigger param ``force_param`` forces it. ``then(root, result)`` turns the
    stage's result into the task's return value (e.g. the gate's decision)."""
    from airflow.sdk import task

    st = registry.get(name)

    @task(task_id=st.task_id, execution_timeout=timedelta(minutes=st.timeout_minutes),
          doc_md=f"DVC stage `{name}`: {st.help}")
    def run(params: dict | None = None) -> Any:
        r = airflow_stage(root, name, force=bool(params and params.get(force_param)))
        return then(root, r) if then else r

    return run


# ---- the features Asset --------------------------------------------------------------------

def _feature_files(root: Path) -> tuple[Path, ...]:
    p = Paths(Path(root))
    return (p.user_features, p.item_features, p.attribute_features("items"),
            p.attribute_features("users"))


def feature_fingerprint(root: Path) -> str | None:
    """sha256 over the feature snapshots; None when they do not exist yet."""
    h = hashlib.sha256()
    for f in _feature_files(root):
        if not f.exists():
            return None
        h.update(f.relative_to(root).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def features_changed(root: Path) -> tuple[bool, str | None]:
    """Did the features change since the last time they were announced downstream?

    Compared against the last *announced* fingerprint (not the previous run), so a run that
    built features but failed before announcing them is announced by the next run.
    """
    now = feature_fingerprint(root)
    state = Paths(Path(root)).feature_asset_state
    last = json.loads(state.read_text()).get("fingerprint") if state.exists() else None
    return (now is not None and now != last), now


def mark_announced(root: Path, fingerprint: str) -> None:
    from pipeline.io import write_json

    write_json(Paths(Path(root)).feature_asset_state, {"fingerprint": fingerprint, "at": time.time()})


def announce_task(root: Path):
    """Emit the features Asset when the features changed since last announced; else skip
    (trigger param ``announce``: if_changed / always / never)."""
    from airflow.sdk import task

    @task(task_id="announce_features", outlets=[features_asset()],
          execution_timeout=timedelta(minutes=2), retries=0)
    def announce_features(params: dict | None = None) -> dict:
        """Emit the Asset when the features changed since last announced; else skip."""
        from airflow.sdk.exceptions import AirflowSkipException

        def skip(reason: str) -> AirflowSkipException:
            # Airflow logs a skip's reason only inside the collapsed "Post Execute" group
            log.warning("skipped: %s", reason)
            return AirflowSkipException(reason)

        mode = params["announce"] if params else "if_changed"
        changed, fp = features_changed(root)
        if fp is None:
            raise skip("no feature snapshots found; nothing to announce")
        if mode == "never" or (mode == "if_changed" and not changed):
            raise skip(
                f"features unchanged since last announced (sha256 {fp[:12]}); training not triggered"
                if mode == "if_changed" else "announce=never, so training is not triggered")
        mark_announced(root, fp)
        log.info("features %s: emitting Asset %s", "changed" if changed else "announced (always)",
                 FEATURES_ASSET["name"])
        return {"fingerprint": fp, "changed": changed}

    return announce_features


# ---- the gate and serving ------------------------------------------------------------------

def promotion_outcome(root: Path, ran: bool) -> dict:
    """What the promote stage decided, from reports/promotion.json (the gate's own record)."""
    p = Paths(Path(root)).promotion_report
    rec = json.loads(p.read_text()) if p.exists() else {}
    return {
        "ran": ran,
        "promoted": bool(rec.get("promoted")) and ran,
        "version": rec.get("version"),
        "reason": rec.get("reason", "no promotion record"),
        "champion_version": rec.get("champion_version"),
    }


def report_promotion(root: Path, result: dict) -> dict:
    """The promote task's log line and return value: a refusal ends the task green."""
    out = promotion_outcome(root, result["ran"])
    if out["promoted"]:
        log.info("PROMOTED %s: %s", out["version"], out["reason"])
    elif result["ran"]:
        log.warning("NOT PROMOTED (champion stays %s): %s", out["champion_version"], out["reason"])
    else:
        log.info("promote up to date, nothing new to decide; last decision: %s", out["reason"])
    return out


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


def notify_task():
    """After a promotion, ask the serving API ($RECFLOW_SERVING_URL) to reload."""
    from airflow.sdk import task

    @task(task_id="notify_serving", execution_timeout=timedelta(minutes=2), retries=1)
    def notify(outcome: dict) -> str:
        msg = (notify_serving(settings().serving_url) if outcome["promoted"]
               else "no new champion: serving keeps its model (no-op)")
        log.info(msg)
        return msg

    return notify
