"""Bad input to the real css_basic notebook through `iclnb run`: one clear line, a non-zero exit, nothing damaged."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def iclnb(*args, cwd=None):
    proc = subprocess.run([sys.executable, "-m", "iclnb", *args], capture_output=True, text=True, cwd=cwd,
                          env={**__import__("os").environ, "ICLNB_PROGRESS": "text"})
    return proc.returncode, proc.stdout, proc.stderr


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("iclnb: error:")]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished quick css_basic run whose files must survive every bad call below."""
    out = tmp_path_factory.mktemp("runs") / "done"
    rc, _, err = iclnb("run", "css_basic", "-p", "n_contexts", "3", "-p", "context_length", "12", "-p", "layers", "0",
                       "-p", "n_boot", "20", "-p", "n_perm", "20", "-o", str(out))
    assert rc == 0, err
    snapshot = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    return out, snapshot


@pytest.mark.parametrize("args, rc_expected, message", [
    (["-p", "n_contexts", "abc"], 2, "parameter n_contexts expects an integer, got 'abc'"),
    (["-p", "n_contxts", "3"], 2, "unknown parameter 'n_contxts'"),
    (["-p", "model", "no-such-model-anywhere", "-p", "n_contexts", "2"], 2, "cannot load model 'no-such-model-anywhere'"),
    (["-p", "layers", "0,40", "-p", "n_contexts", "2"], 2, "layer 40 is out of range: gemma-3-270m has 18 blocks"),
    (["-p", "context_length", "40000", "-p", "n_contexts", "2"], 2, "more than the 32768 gemma-3-270m can read"),
])
def test_bad_parameters_give_one_clear_line(tmp_path, args, rc_expected, message):
    rc, _, err = iclnb("run", "css_basic", *args, "-o", str(tmp_path / "bad"))
    assert rc == rc_expected, err
    lines = error_lines(err)
    assert lines and message in lines[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("experiment, args, message", [
    ("deep_hierarchy", ["-p", "branching", "2,1"], "parameter branching must be at least 2, got 1"),
    ("deep_hierarchy", ["-p", "branching", "1000,1000"], "more than the 170 words of the vocabulary"),
    ("hierarchical", ["-p", "models", "gemma-3-270m,nosuchmodel"], "cannot load model 'nosuchmodel'"),
    ("context_switch", ["-p", "n_clusters", "20", "-p", "n_words", "15"], "parameter n_clusters must be at most n_words (15), got 20"),
    ("reproduce_lee", ["-p", "bif_context_length", "17"], "bif_context_length 17 must be one of context_lengths"),
    ("reproduce_lee", ["-p", "context_lengths", "40,5", "-p", "bif_context_length", "5", "-p", "n_bif_contexts",
                       "100"], "n_bif_contexts 100 exceeds n_contexts 40"),
    ("incongruous_injection", ["-p", "positions", "1,500"], "insertion position 500 is not below any context length"),
    ("css_basic", ["-p", "layers", "0,40"], "layer 40 is out of range: gemma-3-270m has 18 blocks"),
    ("css_basic", ["-p", "context_length", "40000"], "more than the 32768 gemma-3-270m can read; use at most 32767"),
])
def test_checks_that_need_the_model_run_on_its_files_before_any_weight_loads(experiment, args, message, tmp_path,
                                                                              capsys, monkeypatch):
    """The experiment's own checks (cross-parameter rules, the tokenizer, the context window, the block count)
    refuse in `iclnb run` with exit 2 and one line, before a directory is written or a weight is loaded."""
    from iclnb import cli, models
    from iclnb.models import loading

    def no_weights(*args, **kwargs):
        raise AssertionError("a model's weights were loaded before the checks refused the run")

    monkeypatch.setattr(models, "load_model", no_weights)
    monkeypatch.setattr(loading, "load_model", no_weights)
    out = tmp_path / "out"
    assert cli.main(["run", experiment, *args, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("iclnb: error: ") and message in err[0], err
    assert not out.exists()


def test_output_dir_that_is_a_file(tmp_path):
    target = tmp_path / "taken"
    target.write_text("keep me")
    rc, _, err = iclnb("run", "css_basic", "-o", str(target))
    assert rc == 2 and "is a file" in error_lines(err)[0]
    assert target.read_text() == "keep me"


def test_a_finished_run_is_not_damaged_by_different_parameters(finished):
    out, snapshot = finished
    rc, _, err = iclnb("run", "css_basic", "-p", "n_contexts", "4", "-o", str(out))
    assert rc == 2 and "n_contexts" in error_lines(err)[0]
    assert {p.name: p.read_bytes() for p in Path(out).iterdir() if p.is_file()} == snapshot



# ---------------------------------------------------------------- every parameter checked before any work (in-process)


@pytest.mark.parametrize("experiment, args, message", [
    ("loo_multilayer", ["-p", "metric", "foo"], "parameter metric must be one of cross, within, ratio, within_sq"),
    ("loo_multilayer", ["-p", "n_boot", "0"], "parameter n_boot must be at least 10"),
    ("css_basic", ["-p", "n_perm", "-1"], "parameter n_perm must be at least 10"),
    ("css_basic", ["-p", "n_contexts", "99999999999999999999999"], "parameter n_contexts must be at most 1000000"),
    ("css_basic", ["-p", "batch_size", "0"], "parameter batch_size must be at least 1"),
    ("css_basic", ["-p", "batch_size", "-1"], "parameter batch_size must be at least 1"),
    ("css_basic", ["-p", "seed", "-1"], "parameter seed must be at least 0"),
    ("css_basic", ["-p", "bridge_penalty", "inf"], "parameter bridge_penalty must be a finite number"),
    ("css_basic", ["-p", "bridge_penalty", "nan"], "parameter bridge_penalty must be a finite number"),
    ("css_basic", ["-p", "n_boot", "0"], "parameter n_boot must be at least 10"),
    ("loo_heatmap", ["-p", "metrics", "foo"], "parameter metrics must be a comma-separated subset of"),
    ("compare_loo_metrics", ["-p", "x_metric", "foo"], "parameter x_metric must be one of"),
    ("compare_loo_metrics", ["-p", "n_boot", "0"], "parameter n_boot must be at least 10"),
    ("reproduce_park", ["-p", "n_shuffles", "0"], "parameter n_shuffles must be at least 1"),
    ("reproduce_park", ["-p", "words", ","], "parameter words has an empty item in ','"),
    ("context_switch", ["-p", "n2_values", "-5,10"], "parameter n2_values must be at least 0, got -5"),
    ("context_switch", ["-p", "n2_values=-5,10"], "parameter n2_values must be at least 0, got -5"),
])
def test_bad_values_are_refused_before_anything_is_written(experiment, args, message, tmp_path, capsys):
    from iclnb import cli

    out = tmp_path / "out"
    assert cli.main(["run", experiment, *args, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("iclnb: error: ") and message in err[0], err
    assert not out.exists()


def test_a_checkpoint_of_other_parameters_is_not_reused_through_iclnb_run(finished, tmp_path):
    import shutil

    out, _ = finished
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "config.json").unlink()
    (copy / "results.json").unlink()
    rc, _, err = iclnb("run", "css_basic", "-p", "n_contexts", "3", "-p", "context_length", "13", "-p", "layers", "0",
                       "-p", "n_boot", "20", "-p", "n_perm", "20", "-o", str(copy))
    assert rc == 1 and "checkpoint_contexts.json was made by a run with other parameters" in error_lines(err)[0]
    assert not (copy / "results.json").exists()


def test_a_damaged_model_cache_is_rebuilt_through_iclnb_run(finished, tmp_path):
    """1 MiB zeroed inside a copy of the cached weights (the ``finished`` run made the cache): the run says so,
    rebuilds the cache, and records the sound hash."""
    import json
    import os
    import shutil

    from iclnb.models import embedded

    real = embedded.cache_dir() / "models" / "gemma-3-270m"
    cache = tmp_path / "cache"
    shutil.copytree(real, cache / "models" / "gemma-3-270m")
    weights = cache / "models" / "gemma-3-270m" / "model.safetensors"
    sound = json.loads((real / embedded.WEIGHTS_RECORD).read_text())
    with open(weights, "r+b") as f:
        f.seek(weights.stat().st_size // 2)
        f.write(b"\0" * (1 << 20))
    proc = subprocess.run([sys.executable, "-m", "iclnb", "run", "css_basic", "-p", "n_contexts", "2", "-p",
                           "context_length", "8", "-p", "layers", "0", "-p", "n_boot", "10", "-p", "n_perm", "10",
                           "-o", str(tmp_path / "out")], capture_output=True, text=True,
                          env={**os.environ, "ICLNB_CACHE": str(cache), "ICLNB_PROGRESS": "text"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "is damaged" in proc.stderr and "rebuilding it" in proc.stderr
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    recorded = config["model"]["source"]["weights_sha256"]["model.safetensors"]
    assert recorded == json.loads((cache / "models" / "gemma-3-270m" / embedded.WEIGHTS_RECORD).read_text())[
        "files"]["model.safetensors"]["sha256"] == sound["files"]["model.safetensors"]["sha256"]
