"""Stage ``materialize``: ``feast apply``, then every window the online store still lacks
(:mod:`pipeline.feature_store.planning`); the report goes to ``reports/materialize.json``."""

from __future__ import annotations

from pipeline.config import Params, Paths
from pipeline.feature_store.planning import materialize, summary


def run(params: Params, paths: Paths) -> dict:
    return summary(materialize(paths))
