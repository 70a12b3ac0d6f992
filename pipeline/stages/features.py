"""Stage ``features``: validated events → user and item feature snapshots in
``feature_repo/data/`` (DuckDB SQL in :mod:`pipeline.features.snapshots`; both files are
swapped in together, so a failed build keeps the previous ones), and the attribute views'
files (:mod:`pipeline.features.attributes`)."""

from __future__ import annotations

from pipeline.config import Params, Paths
from pipeline.features.snapshots import write


def run(params: Params, paths: Paths) -> dict:
    return write(paths.validated, paths.feature_data, params)
