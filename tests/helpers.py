"""Helpers only tests use: reference lookups the product itself does not need."""

from __future__ import annotations

import pandas as pd

from pipeline.columns import Feast
from pipeline.feature_store.reader import OnlineReader


def online_users(fs, user_ids: list[str], service: str = Feast.serving_service) -> pd.DataFrame:
    """Latest online features per user, read as serving reads them; unknown users come back as
    rows of nulls."""
    return pd.DataFrame(OnlineReader(fs, service).read(user_ids))


def online_users_sdk(fs, user_ids: list[str], service: str = Feast.serving_service) -> dict:
    """The same lookup through Feast's own ``get_online_features`` (the reference)."""
    return fs.get_online_features(features=fs.get_feature_service(service),
                                  entity_rows=[{"user_id": u} for u in user_ids]).to_dict()


def stop_group(proc, timeout: float = 20) -> None:
    """Stop a server started in its own process group: SIGTERM, then SIGKILL if it lingers."""
    import os
    import signal
    import subprocess

    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
