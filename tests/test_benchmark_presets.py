"""The MovieLens overlay of the quality benchmark is a valid params.yaml overlay."""

from pathlib import Path

import pytest
import yaml

from pipeline.config import Params
from tests.conftest import deep_update as overlay

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "benchmarks" / "params.movielens.yaml"


def test_preset_is_a_valid_overlay():
    raw = yaml.safe_load(PRESET.read_text())
    assert set(raw) <= {"model", "baselines"}
    merged = Params.model_validate(overlay(yaml.safe_load((ROOT / "params.yaml").read_text()), raw))
    assert merged.model.search.model_dump(include=set(raw["model"]["search"])) == {
        k: tuple(v) if isinstance(v, list) else v for k, v in raw["model"]["search"].items()}
    assert merged.baselines.ease.max_items == raw["baselines"]["ease"]["max_items"]


def test_a_misspelt_preset_key_is_refused():
    from pydantic import ValidationError

    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    with pytest.raises(ValidationError, match="no_component"):
        Params.model_validate(overlay(base, {"model": {"search": {"no_component": [64]}}}))
