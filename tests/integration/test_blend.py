"""A blend champion end to end on the built tiny project (no new `dvc repro`): its components
are the families train left, it is refit for serving component by component, evaluate scores
it beside the other families, and serving answers a user and similar items from it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.columns import Columns as C
from pipeline.config import load_params, paths
from pipeline.evaluation.champion import configuration
from pipeline.evaluation.fingerprint import inputs_sha256, write_artifact
from pipeline.evaluation.refit import serving_refit
from pipeline.models.artifact import load_model
from pipeline.models.blend import Blend
from pipeline.registry import versions
from pipeline.serving.recommender import Recommender
from pipeline.stages import evaluate
from tests.conftest import clone_built

pytestmark = pytest.mark.integration

WEIGHTS = {"lightfm": 0.4, "als": 0.3, "ease": 0.3}


def test_a_blend_of_the_trained_families_is_evaluated_refit_and_served(built_project, tmp_path):
    proj = clone_built(built_project, tmp_path / "p")
    p = paths(proj)
    params = load_params(p.params)
    parts = {f: load_model(p.family_model(f)) for f in WEIGHTS}
    configs = {f: configuration(p.family_model(f))[1] for f in WEIGHTS}   # best epoch count
    blend = Blend.of(parts, WEIGHTS, configs)
    blend.token_edges = parts["lightfm"].token_edges
    train = pd.read_parquet(p.train_pairs)
    judged = p.family_model("blend")   # where train leaves a blend
    write_artifact(blend, judged, train, inputs_sha256(blend.config(), train, {}, {}))

    ev = evaluate.run(params, p)                          # scored beside every family
    assert ev["blend"]["precision@10"] >= 0.0
    assert json.loads(p.model_metrics("blend").read_text())["precision@10"] == \
        ev["blend"]["precision@10"]

    with serving_refit(judged, params, p) as refit:
        served = load_model(refit.directory)
        assert type(served) is Blend and served.config() == blend.config()
        lfm = served.parts["lightfm"].config()
        assert lfm["epochs"] == configs["lightfm"]["epochs"]    # early stopping's best
        assert refit.info["pairs"] > len(train)           # train part + holdout
        version = versions.register(p.registry, refit.directory, {"model": {"family": "blend"}},
                                    judged=judged)
    versions.set_champion(p.registry, version, "test: a blend champion")

    rec = Recommender(params, p)
    user = train.groupby(C.user).size().sort_values().index[-1]
    got = rec.recommend(user, 10)
    assert got.model_version == version and not got.cold_start and len(got.items) == 10
    assert np.all(np.diff(got.scores) <= 0)
    assert not set(got.items) & set(train.loc[train[C.user] == user, C.item])
    item = got.items[0]
    out, missing, _, _ = rec.similar([item], 5)
    similar = out[0][0]
    assert not missing and len(similar) == 5 and item not in similar
    assert rec.served.model.similar_from == max(WEIGHTS, key=WEIGHTS.get)
