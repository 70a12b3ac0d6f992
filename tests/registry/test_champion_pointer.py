"""Reading the champion pointer: absent is "no champion yet", anything else that is not a
registered version is one ChampionPointerError naming the file and the fix."""

import pytest

from pipeline.errors import ChampionPointerError, RecflowError
from pipeline.registry import versions


@pytest.fixture
def registry(tmp_path):
    reg = tmp_path / "registry"
    for v in ("v0001", "v0002"):
        (versions.versions_dir(reg) / v).mkdir(parents=True)
        (versions.versions_dir(reg) / v / "model.npz").write_bytes(b"")
    return reg


def test_absent_pointer_is_no_champion(registry):
    assert versions.champion(registry) is None


def test_valid_pointer(registry):
    (registry / versions.CHAMPION).write_text('{"version": "v0002", "reason": "x"}')
    assert versions.champion(registry) == "v0002"
    assert versions.champion_dir(registry) == versions.versions_dir(registry) / "v0002"


@pytest.mark.parametrize(("content", "says"), [
    (b"", "not readable JSON"),
    (b"\x00\xff garbage \x9c", "not readable JSON"),
    (b'{"version": "v0002"', "not readable JSON"),
    (b'["v0002"]', "not a JSON object"),
    (b'{"since": "2024-01-01"}', 'no valid "version"'),
    (b'{"version": 2}', 'no valid "version"'),
    (b'{"version": "../../../etc"}', 'no valid "version"'),
    (b'{"version": "v0009"}', "v0009, which is not a registered version"),
])
def test_corrupt_pointer_is_one_line_naming_file_and_fix(registry, content, says):
    f = registry / versions.CHAMPION
    f.write_bytes(content)
    with pytest.raises(ChampionPointerError) as e:
        versions.champion(registry)
    msg = str(e.value)
    assert isinstance(e.value, RecflowError) and "\n" not in msg
    assert str(f) in msg and says in msg
    assert "v0001, v0002" in msg and "restore it" in msg  # what to write instead


def test_pointer_to_version_without_model(registry):
    (versions.versions_dir(registry) / "v0003").mkdir()  # a folder, but no model.npz
    (registry / versions.CHAMPION).write_text('{"version": "v0003"}')
    with pytest.raises(ChampionPointerError, match="not a registered version"):
        versions.champion(registry)


def test_pointer_that_is_a_directory(registry):
    (registry / versions.CHAMPION).mkdir()
    with pytest.raises(ChampionPointerError, match="not readable"):
        versions.champion(registry)


def test_corrupt_pointer_with_no_versions_says_to_rerun(tmp_path):
    reg = tmp_path / "registry"
    reg.mkdir()
    (reg / versions.CHAMPION).write_text("nope")
    with pytest.raises(ChampionPointerError, match="dvc repro"):
        versions.champion(reg)
