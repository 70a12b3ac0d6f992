"""The model search: every family tuned on the validation slice, the best one chosen there.

Planted groups: users of group g like items ≡ g (mod groups); item tokens that cut across the
groups are noise a hybrid should not be pulled by.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.columns import Columns as C
from pipeline.config import Params
from pipeline.errors import DataError
from pipeline.evaluation import search
from pipeline.evaluation.splits import carve_validation

PARAMS = Params.model_validate({
    "signals": {"weights": {"view": 1.0}},
    "split": {"strategy": "leave_n_out"},
    "model": {"no_components": 8, "epochs": 6, "num_threads": 1, "patience": 2,
              "user_features": [], "item_features": ["category"],
              "search": {"tokens": ["none", "items"], "token_weight": [1.0],
                         "learning_rate": [0.05, 0.1]}},
    "baselines": {"als": {"factors": [8], "regularization": [0.01], "alpha": [1.0, 5.0],
                          "iterations": 5},
                  "ease": {"regularization": [10.0, 100.0], "max_items": 1000}},
})


def planted(n_users: int = 200, n_items: int = 90, groups: int = 6, per_user: int = 12
            ) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for u in range(n_users):
        own = np.arange(u % groups, n_items, groups)
        w = 1.0 / np.arange(1, len(own) + 1)
        for it in rng.choice(own, per_user, replace=False, p=w / w.sum()):
            rows.append((f"u{u:03d}", f"i{it:03d}", 1.0))
    return pd.DataFrame(rows, columns=[C.user, C.item, C.confidence])


@pytest.fixture(scope="module")
def data():
    train = planted()
    fit, val = carve_validation(train, PARAMS)
    # noise tokens: 3 "categories" that cut across the 6 planted groups
    itok = {f"i{i:03d}": [f"category={(i // 6) % 3}"] for i in range(90)}
    return train, fit, val, itok


@pytest.fixture(scope="module")
def selection(data):
    train, fit, val, itok = data
    return search.select(PARAMS, fit, val, train, {}, itok)


def test_every_trial_is_reported_and_the_best_on_validation_is_chosen(selection):
    k = selection.k
    rep = json.loads(json.dumps(selection.report()))       # plain JSON
    fams = [t["family"] for t in rep["trials"]]
    # lightfm: 2 feature sets + 1 more learning rate; als: 2 alphas; ease: 2 λ; popularity
    assert fams == ["lightfm"] * 3 + ["als"] * 2 + ["ease"] * 2 + ["popularity"]
    assert {t["setting"]["learning_rate"] for t in rep["trials"] if t["family"] == "lightfm"} == {0.05, 0.1}
    for f, best in rep["best"].items():
        scores = [t[f"val_precision@{k}"] for t in rep["trials"] if t["family"] == f]
        assert best[f"val_precision@{k}"] == max(scores)
    learned = {f: b[f"val_precision@{k}"] for f, b in rep["best"].items() if f != "popularity"}
    assert rep["chosen"] == max(learned, key=learned.get)
    assert learned[rep["chosen"]] > rep["best"]["popularity"][f"val_precision@{k}"]
    plot = selection.plot_rows()
    assert len(plot) == len(rep["trials"]) and plot["val_precision"].notna().all()


def test_each_family_is_refitted_on_all_of_train(selection, data):
    train = data[0]
    for f, t in selection.families.items():
        assert set(t.model.item_ids) == set(train[C.item]), f
    assert selection.families["lightfm"].model.epochs_trained == selection.families["lightfm"].best.best_epoch


def test_tokens_that_do_not_help_are_switched_off(selection):
    """Noise item tokens lose to identity only on validation, so the model reads none."""
    lfm = selection.families["lightfm"]
    trials = [t for t in selection.trials if t.family == "lightfm"]
    none = next(t for t in trials if t.setting["tokens"] == "none")
    items = next(t for t in trials if t.setting["tokens"] == "items")
    assert none.val_precision > items.val_precision
    assert lfm.best.setting["tokens"] == "none"
    assert lfm.model.config()["item_features"] == [] and lfm.model.item_vocab == []


def test_feature_sets_and_the_grid():
    m = PARAMS.model.model_copy(update={"item_features": ("category",), "user_features": ("activity",),
                                        "search": PARAMS.model.search.model_copy(update={
                                            "tokens": ("none", "all", "none", "users"),
                                            "token_weight": (0.5, 1.0)})})
    sets = search.feature_sets(m)
    assert [(search._setting(c)["tokens"], c.token_weight) for c in sets] == [
        ("none", m.token_weight), ("all", 0.5), ("all", 1.0), ("users", 0.5), ("users", 1.0)]
    grid_m = m.model_copy(update={"search": m.search.model_copy(update={
        "no_components": (8, 16, 32), "learning_rate": (0.05, 0.1), "trials": 4})})
    grid = search.hyper_grid(grid_m)
    assert len(grid) == 4 and all(search._setting(c) != search._setting(grid_m) for c in grid)
    rnd = grid_m.model_copy(update={"search": grid_m.search.model_copy(update={"strategy": "random"})})
    a, b = search.hyper_grid(rnd), search.hyper_grid(rnd)
    assert [search._setting(c) for c in a] == [search._setting(c) for c in b]   # seeded
    assert len(a) == 4 and len({json.dumps(search._setting(c)) for c in a}) == 4


@pytest.mark.parametrize("clock", ["cpu", "wall"])
def test_the_budget_stops_new_trials(data, clock):
    train, fit, val, itok = data
    p = PARAMS.model_copy(update={"model": PARAMS.model.model_copy(update={
        "families": ("lightfm",),
        "search": PARAMS.model.search.model_copy(update={"budget_seconds": 1e-6,
                                                         "budget_clock": clock})})})
    sel = search.select(p, fit, val, train, {}, itok)
    assert [t.family for t in sel.trials] == ["lightfm", "popularity"]   # the first one always runs
    assert "budget_seconds" in sel.skipped["lightfm"] and f"({clock})" in sel.skipped["lightfm"]


def test_user_identity_and_session_items_are_search_keys():
    m = PARAMS.model.model_copy(update={"search": PARAMS.model.search.model_copy(update={
        "learning_rate": [], "user_identity": [True, False], "session_items": [0, 10]})})
    got = [(c.user_identity, c.session_items) for c in search.hyper_grid(m)]
    assert got == [(True, 0), (True, 10), (False, 0)]       # the base (False, 10) is not repeated
    assert all("user_identity" in search._setting(c) for c in search.hyper_grid(m))


def test_ease_is_skipped_above_max_items(data):
    train, fit, val, itok = data
    p = PARAMS.model_copy(update={
        "model": PARAMS.model.model_copy(update={"families": ("ease",)}),
        "baselines": PARAMS.baselines.model_copy(update={
            "ease": PARAMS.baselines.ease.model_copy(update={"max_items": 10})})})
    sel = search.select(p, fit, val, train, {}, itok)
    assert sel.chosen == "popularity" and "max_items 10" in sel.skipped["ease"]


def test_every_trial_failing_is_one_line(data, monkeypatch):
    train, fit, val, itok = data

    def diverge(*_a, **_k):
        raise ValueError("Not all estimated parameters are finite, your model may have diverged.")

    monkeypatch.setattr(search, "fit_early_stopping", diverge)
    with pytest.raises(DataError) as e:
        search.select(PARAMS, fit, val, train, {}, itok)
    msg = str(e.value)
    assert "every lightfm trial failed" in msg and "diverged" in msg and "\n" not in msg
    assert "champion is unchanged" in msg


def test_a_validation_slice_without_fitted_users_is_one_line(data):
    train, fit, _, itok = data
    strangers = pd.DataFrame({C.user: ["x1", "x2"], C.item: ["i000", "i001"], C.confidence: 1.0})
    with pytest.raises(DataError, match="too small for validation"):
        search.select(PARAMS, fit, strangers, train, {}, itok)


def test_trials_fit_on_a_sample_of_users_and_the_winner_on_all(data):
    """With ``search.sample_users`` below the fit part's users, every trial fits on the scored
    validation users plus a seeded sample of the others; the family's model on all of train."""
    import time

    from pipeline.evaluation.validation import ValidationSlice

    train, fit, val, itok = data
    m = PARAMS.model.model_copy(update={"validation_users": 30, "search": PARAMS.model.search.model_copy(
        update={"sample_users": 60})})
    vs = ValidationSlice(fit, val, m.validation_users, m.seed)
    trials: list = []
    t = search.tune_lightfm(m, fit, val, train, {}, itok, 10, time.perf_counter(), trials, {},
                            vs=vs, keep=True)
    assert len(trials) == 3
    seen = set(t.validation_model.user_ids)          # the best trial's own fit
    assert len(seen) == 60 and set(vs.users) <= seen
    assert set(t.model.user_ids) == set(train[C.user])
    assert t.model.epochs_trained == t.best.best_epoch
    # the same sample again (seeded), and no sampling when the users fit under the bound
    again = search.tune_lightfm(m, fit, val, train, {}, itok, 10, time.perf_counter(), [], {},
                                vs=vs, keep=True)
    assert set(again.validation_model.user_ids) == seen
    whole = m.model_copy(update={"search": m.search.model_copy(update={"sample_users": None})})
    full = search.tune_lightfm(whole, fit, val, train, {}, itok, 10, time.perf_counter(), [], {},
                               vs=vs, keep=True)
    assert set(full.validation_model.user_ids) == set(fit[C.user])
