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
        (lambda d: d["model"].update(families=["lightfm", "xgboost"]), "model.families.1"),
        (lambda d: d["model"]["search"].update(no_component=[8]), "model.search.no_component"),
        (lambda d: d["model"]["search"].update(tokens=["everything"]), "model.search.tokens.0"),
        (lambda d: d["baselines"]["ease"].update(lambda_=[1.0]), "baselines.ease.lambda_"),
        (lambda d: d["baselines"]["als"].update(alpha=[0.0]), "baselines.als.alpha.0"),
        (lambda d: d["signals"]["weights"].update(view="lots"), "signals.weights.view"),
        (lambda d: d["signals"]["watch"].update(strong_threshold=1.5), "signals.watch.strong_threshold"),
        (lambda d: d["signals"]["value_kind"].update(play="minutes"), "signals.value_kind.play"),
        (lambda d: d["evaluate"]["target"].update(types=["purchase", "teleport"]),
         "evaluate.target.types"),
        (lambda d: d["evaluate"]["target"].update(types=["play"], min_value={"play": 2.0}),
         "evaluate.target.min_value.play"),
        (lambda d: d["evaluate"]["target"].update(min_value={"play": 0.9}),
         "evaluate.target.min_value.play"),
        # a play count under the watch-fraction range would be ambiguous
        (lambda d: d["signals"]["value_kind"].update(play="count"), "validate.value_ranges.play"),
        (lambda d: d["ingest"]["loader"].update(time_unit="none"), "split.strategy"),
        (lambda d: d["model"].update(confidence="both"), "model.confidence"),
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


def _fields(model_cls, raw: dict, prefix: str = ""):
    """(key, field, yaml value or KeyError) for every leaf field of the typed config."""
    from pydantic import BaseModel

    for name, field in model_cls.model_fields.items():
        key = field.alias or name
        dotted = f"{prefix}{key}"
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            yield from _fields(sub, raw.get(key, {}) or {}, dotted + ".")
        else:
            yield dotted, field, raw.get(key, KeyError)


def test_params_yaml_is_the_only_source_of_defaults():
    """Every field is either required or defaults to exactly what params.yaml says: code that
    builds a config by hand (tests, benchmarks, the DAGs) gets the same knobs as a run."""
    from pydantic import TypeAdapter
    from pydantic_core import PydanticUndefined

    from pipeline.config import Params

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    drift = []
    for key, field, in_yaml in _fields(Params, raw):
        if field.default is PydanticUndefined and field.default_factory is None:
            continue  # required: no default to drift
        assert in_yaml is not KeyError, f"{key}: has a default in config.py but no value in params.yaml"
        want = TypeAdapter(field.annotation).validate_python(in_yaml)
        if field.get_default(call_default_factory=True) != want:
            drift.append(f"{key}: config.py {field.default!r} != params.yaml {in_yaml!r}")
    assert not drift, drift


def test_the_environment_is_read_in_one_place():
    """Only pipeline/settings.py reads os.environ (writing it for a child process is fine)."""
    import re

    readers = []
    for f in sorted((ROOT / "pipeline").rglob("*.py")):
        for n, line in enumerate(f.read_text().splitlines(), 1):
            if re.search(r"os\.environ(\.get|\[[^\]]+\](?!\s*=)|\s*$)|os\.getenv", line):
                readers.append(f"{f.relative_to(ROOT)}:{n}: {line.strip()}")
    allowed = ("pipeline/settings.py", "pipeline/orchestration/airflow_local.py",
               "pipeline/orchestration/airflow_dagtest.py", "pipeline/orchestration/dvc_runner.py")
    assert [r for r in readers if not r.startswith(allowed)] == []


def test_settings_from_env():
    from pipeline.settings import Settings

    s = Settings.from_env({"RECFLOW_ROOT": "/tmp", "RECFLOW_ONLINE_STORE": " redis://h:1 ",
                           "RECFLOW_SERVING_URL": ""})
    assert s.root == Path("/tmp").resolve() and s.online_store == "redis://h:1"
    assert s.serving_url is None
    assert Settings.from_env({}) == Settings(None, None, None)


def test_count_only_file_config_loads(tmp_path):
    """The last.fm recipe (README): a constant play event, no time, a count per row."""
    def lastfm(d):
        d["ingest"]["loader"].update(event_type="play", time_unit="none",
                                     columns={"user_id": "userID", "item_id": "artistID",
                                              "value": "weight"})
        d["signals"]["value_kind"]["play"] = "count"
        d["validate"]["value_ranges"]["play"] = [0, None]
        d["split"]["strategy"] = "leave_n_out"
    p = load_params(write(tmp_path, lastfm))
    assert p.signals.value_kind["play"] == "count" and p.ingest.loader.event_type == "play"
