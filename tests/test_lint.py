"""pyflakes over the package, benchmarks and tests: undefined names and unused imports fail the suite (code paths
that a test does not reach would otherwise fail only when a user's notebook gets there)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_pyflakes_finds_nothing():
    proc = subprocess.run([sys.executable, "-m", "pyflakes", "iclnb", "benchmarks", "tests"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
