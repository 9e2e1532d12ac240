"""Logging finished runs to Weights & Biases, offline and without an account: `iclnb log`, and `iclnb run --log`
through the hook in Run.finish."""

import json

import pytest

from iclnb import cli
from iclnb.ops.tidy import tidy
from iclnb.ops.tracking import plain_scalars, scalar_rows
from tests import test_cli as cli_tests
from tests.test_ops_tidy import css_results, loo_results, make_run

notebooks = cli_tests.notebooks  # the tiny generated experiment (a fixture)


@pytest.fixture
def offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    directory = tmp_path / "wandb_dir"
    directory.mkdir()
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(directory))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return directory


def offline_record(wandb_dir) -> bytes:
    """The bytes of the one offline run's record file (its keys and JSON values are stored as plain text)."""
    files = list(wandb_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    return files[0].read_bytes()


def test_scalars_over_n(tmp_path):
    t = tidy(make_run(tmp_path / "loo", "loo", {}, loo_results()), n_boot=50)
    rows = scalar_rows(t)
    assert [r["N"] for r in rows] == [6.0, 10.0]
    assert rows[0]["ratio/layer_3/semantic"] == 2.0 and "ratio/layer_3/semantic/ci_low" in rows[0]
    assert rows[1]["influence_ratio_bridge/layer_3/semantic"] == 0.2
    assert plain_scalars({"a": 1, "b": {"c": 2.5, "d": [1]}, "e": True, "f": "x"}) == {"results/a": 1.0,
                                                                                    "results/b/c": 2.5}


def test_iclnb_log_writes_an_offline_run_with_the_scalars(tmp_path, offline, capsys):
    run = make_run(tmp_path / "css", "css_basic", {"context_length": 20, "seed": 1}, css_results())
    (run / "raw_data").mkdir()
    (run / "raw_data" / "table.csv").write_text("a,b\n1,2\n")
    assert cli.main(["log", str(run), "--project", "iclnb-test"]) == 0
    out = capsys.readouterr().out
    assert "wandb sync" in out and str(offline) in out
    record = offline_record(offline)
    assert b"phi/layer_3" in record and b"css_bridge_phi/layer_0" in record and b"tables/table" in record
    assert json.dumps(1.0).encode() in record and b"iclnb-test" in record


def test_run_with_log_logs_the_finished_run(notebooks, tmp_path, offline, capsys, monkeypatch):
    monkeypatch.setenv("ICLNB_WANDB_PROJECT", "")  # restored (unset) after the test: --log sets it
    out = tmp_path / "out"
    assert cli.main(["run", "tiny", "-p", "n", "4", "-o", str(out), "--log", "iclnb-test"]) == 0
    assert (out / "results.json").is_file()
    record = offline_record(offline)
    assert b"results/sum" in record and b"iclnb-test" in record
