"""Stage ``evaluate``: the candidate, every family ``train`` tuned and the current champion on
the same holdout.

Each family's model (``models/families/``: tuned on the validation slice, refitted on all of
train) is scored beside the candidate — the family validation chose — so every evaluation
reports them all. The champion is scored as registered only when none of its training pairs
is held out; else its configuration is refitted on this train part
(:mod:`pipeline.evaluation.champion`).
"""

from __future__ import annotations

import pandas as pd

from pipeline.columns import Columns as C
from pipeline.config import Params, Paths
from pipeline.errors import DataError
from pipeline.evaluation import replay, results, target
from pipeline.evaluation.champion import Data, per_user_frame, score_champion, tokens_for
from pipeline.evaluation.holdout import Scored, options, score_users
from pipeline.features import recent
from pipeline.io import read_json
from pipeline.models.artifact import load_model
from pipeline.models.base import ARRAYS_FILE, read_meta
from pipeline.models.popularity import Popularity
from pipeline.registry import versions
from pipeline.registry.lineage import family


def run(params: Params, paths: Paths) -> dict:
    if not (paths.candidate / ARRAYS_FILE).exists():
        raise DataError(f"{paths.candidate}: no candidate model. Run 'recflow train' first.")
    data = Data.load(paths)
    if data.holdout.empty:
        raise DataError(f"{paths.holdout_pairs}: the holdout is empty; widen split.test_days.")
    k = params.evaluate.k
    n_cat = data.train[C.item].nunique()
    candidate = load_model(paths.candidate)
    models = {"candidate": candidate}   # then every family train left, in results.FAMILIES order
    for name in results.FAMILIES:
        if (paths.family_model(name) / ARRAYS_FILE).exists():
            models[name] = load_model(paths.family_model(name))
    if "popularity" not in models:   # the gate's floor is always measured
        models["popularity"] = Popularity().fit(data.train)
    details: dict = {"k": k, "target": target.describe(params.evaluate.target),
                     "holdout_users": int(data.holdout[C.user].nunique()),
                     "candidate_family": family(candidate.meta.get("format")),
                     "families": {n: m.config() for n, m in models.items() if n != "candidate"},
                     "candidate_inputs": candidate.meta.get("inputs_sha256"),
                     "champion_version": None, "champion_scoring": None, "champion_inputs": None,
                     "champion_family": None}
    per_user, curves = {}, {}
    scored: dict[str, Scored] = {}   # inputs_sha256 → result: the candidate is one family
    history = recent.history_of(data.user_features)
    for name, m in models.items():
        key = m.meta.get("inputs_sha256") or name
        s = scored.get(key) or score_users(m, data.holdout, data.train, tokens_for(m, data), k,
                                           n_cat, history=history, **options(params), name=name)
        scored[key] = s
        details[name], curves[name], per_user[name] = s.metrics, s.curve, s.per_user
    if params.split.strategy == "time":  # the replay needs a cutoff in time
        cutoff = pd.Timestamp(read_json(paths.trainset_meta)["cutoff"]).to_pydatetime()
        details["segments"] = replay.segments(
            params, paths, {**models, **replay.baselines(data)}, data, cutoff)
    champ = score_champion(params, paths, data)
    if champ is not None:
        meta = read_meta(versions.versions_dir(paths.registry) / champ.version)
        details.update(champion=champ.scored.metrics, champion_version=champ.version,
                       champion_scoring=champ.info, champion_inputs=champ.inputs,
                       champion_family=family(meta.get("format")))
        curves["champion"], per_user["champion"] = champ.scored.curve, champ.scored.per_user
    results.save(paths, details, per_user_frame(per_user), curves)
    return details
