from pathlib import Path

import pytest
import yaml

from pipeline.config import load_params
from pipeline.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, mutate) -> Path:
    d = yaml.safe_load((ROOT / "params.yaml").read_text())
    mutate(d)
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(d))
    return f


def test_repo_params_load():
    p = load_params(ROOT / "params.yaml")
    assert p.evaluate.k >= 1 and p.model.loss == "warp"
    assert "purchase" in p.event_types


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda d: d["synthetic"].update(n_events=-5), "synthetic.n_events"),
        (lambda d: d["evaluate"].update(k=0), "evaluate.k"),
        (lambda d: d["model"].update(loss="nope"), "model.loss"),
        (lambda d: d["validate"].update(max_quarantine_fraction=2), "validate.max_quarantine_fraction"),
        (lambda d: d.pop("signals"), "signals"),
        (lambda d: d["split"].update(typo=1), "split.typo"),
    ],
)
def test_bad_values_name_the_key(tmp_path, mutate, key):
    with pytest.raises(ConfigError) as e:
        load_params(write(tmp_path, mutate))
    assert f"'{key}'" in str(e.value)
    assert e.value.exit_code == 2


def test_missing_and_malformed_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)
