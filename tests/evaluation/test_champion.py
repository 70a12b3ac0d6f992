"""The champion's configuration refits on the current train part whatever its family, so the
gate can judge any champion on a holdout it never trained on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.columns import Columns as C
from pipeline.config import ModelParams
from pipeline.evaluation.champion import REFIT, Data, judge, refit_configuration
from pipeline.evaluation.fingerprint import inputs_sha256, write_artifact
from pipeline.models.als import ALS
from pipeline.models.ease import EASE
from pipeline.models.hybrid import LightFMRecommender
from pipeline.models.popularity import Popularity
from tests.evaluation.test_search import planted

FAMILIES = {
    "lightfm": lambda: LightFMRecommender(ModelParams(no_components=4, epochs=3, num_threads=1,
                                                      user_features=(), item_features=())),
    "als": lambda: ALS(factors=4, regularization=0.05, alpha=5.0, iterations=3),
    "ease": lambda: EASE(regularization=20.0),
    "popularity": Popularity,
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_refits_from_its_configuration(family, tmp_path):
    pairs = planted(n_users=60, n_items=120)
    old, new = pairs.iloc[::2], pairs            # the champion saw half; the new train is all
    champ = FAMILIES[family]().fit(old)
    write_artifact(champ, tmp_path / "v", old, inputs_sha256(champ.config(), old, {}, {}),
                   extra={"best_epoch": 2} if family == "lightfm" else None)
    hold = pairs.iloc[:5]                        # held out now, but in the champion's data
    data = Data(new, hold, pd.DataFrame({C.user: []}), pd.DataFrame({C.item: []}))
    model, info = judge(tmp_path / "v", data)
    assert info["scored"] == REFIT and info["overlap_pairs"] > 0
    assert type(model) is type(champ)
    want = {**champ.config(), **({"epochs": 2} if family == "lightfm" else {})}
    assert model.config() == want                # LightFM: early stopping's best epoch count
    assert set(model.item_ids) == set(new[C.item])
    fresh = refit_configuration(tmp_path / "v", data)
    np.testing.assert_allclose(fresh.scores(["u000"]), model.scores(["u000"]), rtol=1e-4, atol=1e-5)
