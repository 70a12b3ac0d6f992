"""`make serve WORKERS=N`'s launcher refuses a bad worker count with one line, exit 2."""

from pipeline.serving import run
from pipeline.settings import ROOT_ENV
from tests.conftest import ROOT


def test_zero_workers_is_exit_2_before_anything_starts(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv(ROOT_ENV, str(ROOT))
    assert run.main(["--workers", "0"]) == 2
    assert "--workers 0" in capsys.readouterr().err
