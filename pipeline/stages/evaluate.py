"""Stage ``evaluate``: candidate, baselines and the current champion on the same holdout.

Baselines (popularity, ALS tuned on the validation slice that ``train`` carved) are refitted
here on the same train set, so every evaluation reports them beside the model. The champion is
scored as registered only when none of its training pairs is held out; else its configuration
is refitted on this train part (:mod:`pipeline.evaluation.champion`).
"""

from __future__ import annotations

import pandas as pd

from pipeline.columns import Columns as C
from pipeline.config import Params, Paths
from pipeline.errors import DataError
from pipeline.evaluation import results
from pipeline.evaluation.champion import Data, per_user_frame, score_champion, tokens_for
from pipeline.evaluation.holdout import options, score_users
from pipeline.evaluation.validation import ValidationSlice, tune_als
from pipeline.io import write_json
from pipeline.models.als import ALS
from pipeline.models.artifact import load_model
from pipeline.models.base import ARRAYS_FILE
from pipeline.models.popularity import Popularity


def run(params: Params, paths: Paths) -> dict:
    if not (paths.candidate / ARRAYS_FILE).exists():
        raise DataError(f"{paths.candidate}: no candidate model. Run 'recflow train' first.")
    data = Data.load(paths)
    if data.holdout.empty:
        raise DataError(f"{paths.holdout_pairs}: the holdout is empty; widen split.test_days.")
    k = params.evaluate.k
    n_cat = data.train[C.item].nunique()
    fit_part, validation = pd.read_parquet(paths.fit_pairs), pd.read_parquet(paths.validation_pairs)
    vs = ValidationSlice(fit_part, validation, params.model.validation_users, params.model.seed)
    als_cfg, grid = tune_als(params.baselines.als, fit_part, validation, k, vs=vs,
                             memory_mb=params.evaluate.memory_mb)
    write_json(paths.als_tuning, {"best": als_cfg, "grid": grid})
    candidate = load_model(paths.candidate)
    models = {"candidate": candidate, "popularity": Popularity().fit(data.train),
              "als": ALS(**als_cfg).fit(data.train)}
    details: dict = {"k": k, "holdout_users": int(data.holdout[C.user].nunique()),
                     "als_params": als_cfg, "candidate_inputs": candidate.meta.get("inputs_sha256"),
                     "champion_version": None, "champion_scoring": None, "champion_inputs": None}
    per_user, curves = {}, {}
    for name, m in models.items():
        s = score_users(m, data.holdout, data.train, tokens_for(m, data), k, n_cat,
                        **options(params), name=name)
        details[name], curves[name], per_user[name] = s.metrics, s.curve, s.per_user
    champ = score_champion(params, paths, data)
    if champ is not None:
        details.update(champion=champ.scored.metrics, champion_version=champ.version,
                       champion_scoring=champ.info, champion_inputs=champ.inputs)
        curves["champion"], per_user["champion"] = champ.scored.curve, champ.scored.per_user
    results.save(paths, details, per_user_frame(per_user), curves)
    return details
