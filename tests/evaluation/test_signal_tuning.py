"""recflow tune-signals: the search reads the validation slice only, its patch is valid
params, and every trial sees the same fixed validation pairs and target."""

from __future__ import annotations

from dataclasses import replace

import pytest
import yaml

from pipeline.config import Params, SyntheticParams, TargetParams, load_params
from pipeline.data.synthetic import generate
from pipeline.evaluation import signal_tuning as st
from tests.conftest import ROOT, deep_update

SMALL = SyntheticParams(n_events=12_000, n_users=200, n_items=300, n_categories=6, days=30)


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    f = tmp_path_factory.mktemp("tune") / "events.parquet"
    generate(SMALL)[0].to_parquet(f, index=False)
    base = load_params(ROOT / "params.yaml")
    p = base.model_copy(update={
        "model": base.model.model_copy(update={"no_components": 8, "epochs": 3, "patience": 1}),
        "baselines": base.baselines.model_copy(update={"als": base.baselines.als.model_copy(
            update={"factors": (8,), "regularization": (0.05,), "iterations": 3})}),
        "evaluate": base.evaluate.model_copy(update={"target": TargetParams(
            types=("purchase", "play"), min_value={"play": 0.9})})})
    return st.prepare(f, p)


def test_validation_and_holdout_hold_only_target_pairs(frames):
    assert len(frames.validation) and len(frames.holdout)
    assert frames.validation[st.target.FLAG].all() and frames.holdout[st.target.FLAG].all()
    assert len(frames.val_pairs) > len(frames.validation)   # the others stay out of the fit part


def test_search_never_reads_the_holdout(frames):
    blind = replace(frames, holdout=None)   # any use of the holdout would fail
    s = st.search(blind, trials=4, minutes=5, seed=1)
    assert [t.note for t in s.trials[:2]] == ["configured defaults", "binary confidence"]
    assert len(s.trials) == 4 and s.trials[0].objective == 1.0
    assert s.best.objective == max(t.objective for t in s.trials)
    assert all(0 <= t.lightfm <= 1 and 0 <= t.als <= 1 for t in s.trials)


def test_same_candidate_same_validation_score(frames):
    """One LightFM thread in the search: a trial wins on its merits, not on scheduling."""
    p = frames.params.model_copy(update={"model": frames.params.model.model_copy(
        update={"num_threads": 1})})
    fr = replace(frames, params=p)
    cfg = {"factors": 8, "regularization": 0.05, "alpha": 1.0, "iterations": 3, "seed": 42,
           "num_threads": 1}
    assert st.evaluate_candidate(fr, st.defaults(p), cfg) == st.evaluate_candidate(
        fr, st.defaults(p), cfg)


def test_patch_applies_to_params_yaml(frames, tmp_path):
    s = st.search(frames, trials=2, minutes=5, seed=3)
    text = st.patch_text(s.best, s.trials[0], 10, "purchase or play >= 0.9")
    raw = deep_update(yaml.safe_load((ROOT / "params.yaml").read_text()), yaml.safe_load(text))
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(raw))
    p = load_params(f)
    assert isinstance(p, Params) and p.signals == s.best.candidate.signals
    assert p.model.confidence == s.best.candidate.confidence


def test_binary_keeps_the_positive_pairs(frames):
    a = st.train_pairs(frames, frames.params.signals)
    b = st.train_pairs(frames, st.binary(frames.params).signals)
    assert a[["user_id", "item_id"]].equals(b[["user_id", "item_id"]])
    assert b["confidence"].max() - b["confidence"].min() < 1e-3
