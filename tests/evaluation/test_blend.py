"""The blend family's weights are chosen on the validation slice, from the validation fits
the search already made (no component is fitted again for it)."""

from __future__ import annotations

from math import comb

import numpy as np
import pandas as pd
import pytest

from pipeline.columns import Columns as C
from pipeline.config import BlendParams
from pipeline.evaluation import blend, search
from pipeline.evaluation.splits import carve_validation
from pipeline.evaluation.validation import ValidationSlice, validation_precision
from pipeline.models.ease import EASE
from pipeline.models.popularity import Popularity
from tests.evaluation.test_search import PARAMS, planted


def test_simplex_lists_every_weighting_single_families_first():
    g = blend.simplex(["a", "b", "c"], 0.1)
    assert len(g) == comb(10 + 2, 2) == 66
    assert all(abs(sum(w.values()) - 1.0) < 1e-9 for w in g)
    assert g[:3] == [{"a": 1.0, "b": 0.0, "c": 0.0}, {"a": 0.0, "b": 1.0, "c": 0.0},
                     {"a": 0.0, "b": 0.0, "c": 1.0}]
    assert len({tuple(w.values()) for w in g}) == 66
    assert blend.simplex(["a", "b"], 0.5) == [{"a": 1.0, "b": 0.0}, {"a": 0.0, "b": 1.0},
                                              {"a": 0.5, "b": 0.5}]


@pytest.fixture(scope="module")
def data():
    train = planted()
    fit, val = carve_validation(train, PARAMS)
    return train, fit, val, ValidationSlice(fit, val)


def test_weights_chosen_on_validation_favour_the_better_component(data):
    _, fit, _, vs = data
    good, bad = EASE(10.0).fit(fit), Popularity().fit(fit)
    w = blend.weigh({"ease": good, "popularity": bad}, vs, 10, 0.1)
    best = w.grid[w.best]
    assert best["ease"] > best["popularity"]
    assert w.precision[w.best] > w.precision[w.grid.index({"ease": 0.0, "popularity": 1.0})]
    # a corner of the grid is the family alone, as the search scored it
    corner = w.grid.index({"ease": 1.0, "popularity": 0.0})
    assert w.precision[corner] == pytest.approx(validation_precision(good, vs, 10))


def halves(fit: pd.DataFrame, train: pd.DataFrame, first: bool) -> tuple[EASE, EASE]:
    """EASE on the pairs of one half of the catalogue: (fitted on the fit part, on train)."""
    def part(df: pd.DataFrame) -> pd.DataFrame:
        n = df[C.item].str[1:].astype(int)
        return df[(n < 45) == first]
    return EASE(10.0).fit(part(fit)), EASE(10.0).fit(part(train))


def test_complementary_families_are_blended_from_their_validation_fits(data):
    """Each component knows half the catalogue, so each alone fills half of a list with
    guesses; validation picks a mix, and the blend's model is the components' refits."""
    train, fit, _, vs = data
    tuned = {}
    for name, first in (("low", True), ("high", False)):
        val_model, refit = halves(fit, train, first)
        prec = validation_precision(val_model, vs, 10)
        tuned[name] = search.Tuned(name, search.Trial(name, {}, prec), refit,
                                   validation_model=val_model)
    trials, skipped = [], {}
    got = search.tune_blend(BlendParams(step=0.1), tuned, vs, 10, trials, skipped, {}, None, None)
    assert got is not None and not skipped
    assert len(trials) == 11 and all(t.family == "blend" for t in trials)
    w = got.model.weights
    assert set(w) == {"low", "high"} and 0.2 <= w["low"] <= 0.8
    assert got.best.val_precision > max(t.best.val_precision for t in tuned.values())
    assert got.model.parts["low"] is tuned["low"].model      # the refits, not fitted again
    assert got.model.parts["high"] is tuned["high"].model


def test_a_blend_that_validation_puts_on_one_family_is_skipped(data):
    train, fit, _, vs = data
    tuned = {"ease": search.Tuned("ease", search.Trial("ease", {}), EASE(10.0).fit(train),
                                  validation_model=EASE(10.0).fit(fit)),
             "popularity": search.Tuned("popularity", search.Trial("popularity", {}),
                                        Popularity().fit(train),
                                        validation_model=Popularity().fit(fit))}
    skipped: dict[str, str] = {}
    assert search.tune_blend(BlendParams(step=0.25), tuned, vs, 10, [], skipped, {}, None,
                             None) is None
    assert skipped["blend"] == "validation put all the weight on ease"
    one = {"ease": tuned["ease"]}
    assert search.tune_blend(BlendParams(), one, vs, 10, [], skipped, {}, None, None) is None
    assert "needs two tuned families" in skipped["blend"]


def test_the_search_fits_nothing_more_for_the_blend(data, monkeypatch):
    """With ``blend`` listed, every family is fitted as often as without it: the weights are
    chosen on the validation fits the search made anyway, the model blends the refits."""
    train, fit, val, _ = data
    itok = {f"i{i:03d}": [f"category={(i // 6) % 3}"] for i in range(90)}
    counts: dict[str, int] = {}
    from pipeline.models.als import ALS
    from pipeline.models.hybrid import LightFMRecommender

    for cls in (ALS, EASE, LightFMRecommender):
        orig = cls._fit

        def counted(self, *a, _orig=orig, _name=cls.__name__, **kw):
            counts[_name] = counts.get(_name, 0) + 1
            return _orig(self, *a, **kw)
        monkeypatch.setattr(cls, "_fit", counted)
    plain = search.select(PARAMS, fit, val, train, {}, itok)
    without = dict(counts)
    counts.clear()
    with_blend = PARAMS.model_copy(update={"model": PARAMS.model.model_copy(
        update={"families": ("lightfm", "als", "ease", "blend")})})
    sel = search.select(with_blend, fit, val, train, {}, itok)
    assert counts == without
    blend_trials = [t for t in sel.trials if t.family == "blend"]
    assert len(blend_trials) == len(blend.simplex(["als", "ease", "lightfm"], 0.1))
    assert [t.family for t in sel.trials if t.family != "blend"] == [t.family for t in plain.trials]
    best = max(t.val_precision for t in blend_trials)
    singles = max(sel.families[f].best.val_precision for f in ("lightfm", "als", "ease"))
    assert best >= singles - 1e-12                          # the corners are the families alone
    if "blend" in sel.families:
        assert sel.families["blend"].best.val_precision == best
        assert all(sel.families["blend"].model.parts[f] is sel.families[f].model
                   for f in sel.families["blend"].model.parts)
    else:
        assert sel.skipped["blend"].startswith("validation put all the weight on")
    assert all(t.validation_model is None for t in sel.families.values())   # freed
    assert np.isfinite([t.val_precision for t in blend_trials]).all()
