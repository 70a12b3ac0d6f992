"""The CLI's contract for people: clear one-line errors, exit code 2, no tracebacks."""

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def recflow(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_help_lists_every_stage():
    p = recflow("--help")
    assert p.returncode == 0
    for s in ("ingest", "validate", "features", "materialize", "train", "evaluate", "promote", "recommend"):
        assert s in p.stdout


def test_unknown_subcommand_is_one_line_exit_2():
    p = recflow("frobnicate")
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "frobnicate" in p.stderr


def test_bad_param_names_key_without_traceback(tmp_path):
    d = yaml.safe_load((ROOT / "params.yaml").read_text())
    d["synthetic"]["n_events"] = -1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(d))
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    p = recflow("--root", str(tmp_path), "ingest")
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "synthetic.n_events" in lines[0]


def test_k_out_of_range(tmp_path):
    p = recflow("recommend", "u1", "-k", "0")
    assert p.returncode == 2 and "between 1 and 100" in p.stderr and "Traceback" not in p.stderr


def test_ingest_forget_is_one_line_without_traceback(tmp_path):
    d = yaml.safe_load((ROOT / "params.yaml").read_text())
    d["ingest"]["source"] = "landing"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(d))
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    assert "--forget" in recflow("ingest", "--help").stdout
    p = recflow("--root", str(tmp_path), "ingest", "--forget", "b.csv")
    assert p.returncode == 1 and "Traceback" not in p.stderr
    (line,) = p.stderr.strip().splitlines()
    assert "nothing ingested yet" in line


def test_tune_signals_bad_budget_and_missing_data_are_one_line(tmp_path):
    p = recflow("tune-signals", "--trials", "1")
    assert p.returncode == 2 and "--trials 1" in p.stderr and "Traceback" not in p.stderr
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    p = recflow("--root", str(tmp_path), "tune-signals")
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "recflow validate" in p.stderr

