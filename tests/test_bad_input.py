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
    (["-p", "model", "no-such-model-anywhere", "-p", "n_contexts", "2"], 1, "cannot load model 'no-such-model-anywhere'"),
    (["-p", "layers", "0,40", "-p", "n_contexts", "2"], 1, "layer 40 is out of range: gemma-3-270m has 18 blocks"),
    (["-p", "context_length", "40000", "-p", "n_contexts", "2"], 1, "more than the 32768 gemma-3-270m can read"),
])
def test_bad_parameters_give_one_clear_line(tmp_path, args, rc_expected, message):
    rc, _, err = iclnb("run", "css_basic", *args, "-o", str(tmp_path / "bad"))
    assert rc == rc_expected, err
    lines = error_lines(err)
    assert lines and message in lines[0], err
    assert "Traceback" not in err


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

