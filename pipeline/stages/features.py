"""Stage ``features``: validated events → user and item feature snapshots in
``feature_repo/data/`` (DuckDB SQL in :mod:`pipeline.features.snapshots`; both files are
swapped in together, so a failed build keeps the previous ones)."""

from __future__ import annotations

from pipeline.config import Params, Paths
from pipeline.features.attributes import write_attributes
from pipeline.features.snapshots import write


def run(params: Params, paths: Paths) -> dict:
    out = write(paths.validated, paths.feature_data, params)
    return {**out, **write_attributes(paths)}
