"""The MovieLens preset of the quality benchmark is a valid model section of params.yaml."""

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from pipeline.config import ModelParams, load_params

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "benchmarks" / "params.movielens.yaml"


def test_preset_is_a_valid_model_override():
    raw = yaml.safe_load(PRESET.read_text())
    assert set(raw) == {"model"}
    base = load_params(ROOT / "params.yaml").model.model_dump()
    merged = ModelParams.model_validate({**base, **raw["model"]})
    assert {k: getattr(merged, k) for k in raw["model"]} == raw["model"]


def test_a_misspelt_preset_key_is_refused():
    base = load_params(ROOT / "params.yaml").model.model_dump()
    with pytest.raises(ValidationError, match="no_component"):
        ModelParams.model_validate({**base, "no_component": 64})
