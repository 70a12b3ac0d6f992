"""What evaluate leaves for people and for the gate, in three sizes.

- ``metrics/<model>.json`` — the headline per model (precision/recall/NDCG@k, AUC, coverage):
  ``dvc metrics show`` prints one row per model that fits a terminal, and ``dvc metrics diff``
  compares them between revisions (the folder is not git-ignored, so it can be committed);
- ``reports/evaluation_details.json`` — everything else: segments (cold/warm), MAP, users, the
  champion's version and how it was scored, the candidate's family, each family's setting
  (not a DVC metric);
- ``reports/per_user_precision.parquet`` — each holdout user's precision@k per model, which
  the gate's paired test reads.
"""

from __future__ import annotations

import pandas as pd

from pipeline.config import Paths
from pipeline.errors import DataError
from pipeline.evaluation.holdout import PLOT_KS, headline
from pipeline.io import atomic_dir, read_json, write_csv, write_json, write_parquet

#: the families train tunes and leaves in ``models/families/`` (evaluate scores each)
FAMILIES = ("lightfm", "als", "ease", "blend", "popularity")
MODELS = ("candidate", "champion", *FAMILIES)


def save(paths: Paths, details: dict, per_user: pd.DataFrame,
         curves: dict[str, list[dict]]) -> None:
    k = details["k"]
    with atomic_dir(paths.metrics) as tmp:
        for name in MODELS:
            if details.get(name):
                write_json(tmp / paths.model_metrics(name).name,
                           headline(details[name], k))
    write_json(paths.evaluation_details, details)
    write_parquet(per_user.reset_index(), paths.per_user_precision)
    # Wide table: one precision column per model, so `dvc plots show` draws one line each; a
    # family train skipped (EASE on a large catalogue) or no champion yet is an empty column.
    wide = pd.DataFrame({"k": list(PLOT_KS)})
    for name in MODELS:
        rows = curves.get(name)
        wide[name] = [r["precision"] for r in rows] if rows else float("nan")
    write_csv(wide, paths.precision_plot)


def load(paths: Paths) -> tuple[dict, pd.DataFrame]:
    """(details, per-user precision indexed by user) as evaluate left them."""
    for f in (paths.evaluation_details, paths.per_user_precision):
        if not f.exists():
            raise DataError(f"{f}: missing. Run 'recflow evaluate' first.")
    per_user = pd.read_parquet(paths.per_user_precision)
    return read_json(paths.evaluation_details), per_user.set_index(per_user.columns[0])
