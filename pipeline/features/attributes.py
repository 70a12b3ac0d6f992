"""The attribute views' Feast files: the validated attribute tables, stamped at the epoch.

Always written (empty when there is no table), so ``item_attributes`` / ``user_attributes``
exist for every project and materialization never misses a file.
"""

from __future__ import annotations

import pandas as pd

from pipeline.config import Paths
from pipeline.data.attributes import KINDS, feature_frame
from pipeline.io import write_parquet


def write_attributes(paths: Paths) -> dict:
    out = {}
    for kind in KINDS:
        src = paths.validated_attributes(kind)
        frame = feature_frame(pd.read_parquet(src) if src.exists() else None, kind)
        write_parquet(frame, paths.attribute_features(kind))
        out[f"{kind}_attribute_rows"] = len(frame)
    return out
