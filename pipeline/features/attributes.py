"""The attribute views' Feast files: the validated attribute tables, stamped at the epoch.

Always written (empty when there is no table), so ``item_attributes`` / ``user_attributes``
exist for every project and materialization never misses a file.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.columns import Feast
from pipeline.config import VALIDATED_ATTRIBUTES
from pipeline.data.attributes import KINDS, feature_frame
from pipeline.io import write_parquet

FILES = {"items": Feast.item_attr_file, "users": Feast.user_attr_file}


def write_attributes(validated: Path, out_dir: Path) -> dict:
    out = {}
    for kind in KINDS:
        src = validated / VALIDATED_ATTRIBUTES.format(kind=kind)
        frame = feature_frame(pd.read_parquet(src) if src.exists() else None, kind)
        write_parquet(frame, out_dir / FILES[kind])
        out[f"{kind}_attribute_rows"] = len(frame)
    return out
