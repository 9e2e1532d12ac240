"""iclnb's layers import only downward, read from the source with ``ast`` (every static import, those inside
functions included; a module named by a string, as the registry and ``iclnb/__init__.py``'s lazy table do, is not
an import).

Four rules, each a test that names every offending import as ``file:line``:

* **layers**: a module imports only from its own layer or a lower one (:data:`LAYERS`); every top-level module of
  the package has a layer;
* **families**: an experiment family (``iclnb/experiments/<family>/``) never imports another; what two families
  share lives in the kit or lower;
* **private names**: no ``_private`` name of an iclnb module is used by another module (``from x import _y``, a
  private module, or ``x._y`` on an imported module): a name another module needs is public;
* **cycles**: no two iclnb modules import each other, directly or around a loop.

The private-name and cycle rules cover ``benchmarks/*.py`` too.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: The layer of every top-level module of iclnb, lowest first. A module may import from its own layer or lower.
LAYERS = {
    "iclnb.core": 0,
    "iclnb.models": 1, "iclnb.graphs": 1, "iclnb.stats": 1, "iclnb.plotting": 1,
    "iclnb.prompts": 2, "iclnb.metrics": 2,
    "iclnb.represent": 3, "iclnb.results": 3,
    "iclnb.methods": 4,
    "iclnb.experiments": 5,  # the kit, params, the registry and start, the families
    "iclnb.ops": 6,
    "iclnb.analyses": 7,  # notebooks that read other runs
    "iclnb.cli": 8, "iclnb.__main__": 8, "iclnb": 8,  # iclnb: the package's lazy entry points
}

KINDS = ("unmapped", "layer", "family", "private", "cycle")


@dataclass(frozen=True)
class Import:
    """One imported module (``target``) of one import statement, with the names taken from it (``from``)."""

    module: str
    path: Path
    line: int
    text: str
    target: str
    names: tuple[str, ...] = ()


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def module_files(root: Path) -> dict[str, Path]:
    """``{dotted name: file}`` of every module of the iclnb package and of the benchmark scripts under ``root``."""
    found = {}
    for path in sorted((root / "iclnb").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    for path in sorted((root / "benchmarks").glob("*.py")):
        found[f"benchmarks.{path.stem}"] = path
    return found


def is_package(module: str, modules: dict[str, Path]) -> bool:
    return module in modules and modules[module].name == "__init__.py"


def is_internal(module: str) -> bool:
    return module in ("iclnb", "benchmarks") or module.startswith(("iclnb.", "benchmarks."))


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> tuple[list[Import], list[str]]:
    """The internal imports of one module, and its uses of another module's private attribute (``x._y``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[Import] = []
    bound: dict[str, str] = {}  # a name the file binds to an internal module
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if is_internal(alias.name):
                    found.append(Import(module, path, node.lineno, ast.unparse(node), alias.name))
                    if alias.asname:
                        bound[alias.asname] = alias.name
                    else:
                        bound[alias.name.split(".")[0]] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module if is_package(module, modules) else module.rpartition(".")[0]
                package = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{package}.{node.module}" if node.module else package
            else:
                base = node.module
            if not is_internal(base):
                continue
            names = []
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in modules:
                    found.append(Import(module, path, node.lineno, ast.unparse(node), submodule))
                    bound[alias.asname or alias.name] = submodule
                else:
                    names.append(alias.name)
            if names:
                found.append(Import(module, path, node.lineno, ast.unparse(node), base, tuple(names)))
    private_uses = []
    seen = set()
    for node in ast.walk(tree):
        chain = []
        base = node
        while isinstance(base, ast.Attribute):
            chain.insert(0, base.attr)
            base = base.value
        if not chain or not isinstance(base, ast.Name) or base.id not in bound:
            continue
        current = bound[base.id]
        for attr in chain:
            if f"{current}.{attr}" in modules:
                current = f"{current}.{attr}"
                continue
            if is_private(attr) and (node.lineno, current, attr) not in seen:
                seen.add((node.lineno, current, attr))
                private_uses.append(f"{where(path, node.lineno)}: {ast.unparse(node)} uses the private name "
                                    f"{attr} of {current}")
            break
    return found, private_uses


def where(path: Path, line: int) -> str:
    try:
        path = path.relative_to(ROOT)
    except ValueError:
        pass
    return f"{path}:{line}"


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(".".join(parts[:2]))


def layer_name(k: int) -> str:
    return f"layer {k} ({', '.join(m for m, v in LAYERS.items() if v == k)})"


def family_of(module: str, modules: dict[str, Path]) -> str | None:
    parts = module.split(".")
    if parts[:2] == ["iclnb", "experiments"] and len(parts) >= 3 and is_package(".".join(parts[:3]), modules):
        return parts[2]
    return None


def private_part(module: str, importer: str) -> str | None:
    """The first private component of ``module``'s dotted name, unless ``importer`` lives inside it."""
    parts = module.split(".")
    for i, part in enumerate(parts):
        if is_private(part):
            inside = ".".join(parts[: i + 1])
            return None if importer == inside or importer.startswith(inside + ".") else part
    return None


def cycles(edges: dict[str, dict[str, Import]]) -> list[list[Import]]:
    """One shortest cycle through the first module (by name) of every strongly connected group of modules."""
    index, low, on_stack, stack, groups = {}, {}, set(), [], []

    def connect(v):  # Tarjan's algorithm, iterative
        work = [(v, iter(sorted(edges.get(v, {}))))]
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, {})))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.add(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(group)

    for v in sorted(edges):
        if v not in index:
            connect(v)
    found = []
    for group in groups:
        start = min(group)
        came_from = {start: None}
        frontier = [start]
        closing = None
        while frontier and closing is None:
            following = []
            for node in frontier:
                for child in sorted(edges.get(node, {})):
                    if child == start:
                        closing = node
                        break
                    if child in group and child not in came_from:
                        came_from[child] = node
                        following.append(child)
                if closing is not None:
                    break
            frontier = following
        path = [start]
        node = closing
        while node != start:
            path.insert(1, node)
            node = came_from[node]
        path.append(start)
        found.append([edges[a][b] for a, b in zip(path, path[1:])])
    return sorted(found, key=lambda c: c[0].module)


def findings(root: Path) -> dict[str, list[str]]:
    """Every breach of the four rules (and every module without a layer) in the tree at ``root``, by kind."""
    modules = module_files(root)
    out = {kind: [] for kind in KINDS}
    edges: dict[str, dict[str, Import]] = {}
    for module, path in modules.items():
        in_package = module == "iclnb" or module.startswith("iclnb.")
        if in_package and layer_of(module) is None:
            out["unmapped"].append(f"{where(path, 1)}: {module} belongs to no layer (add it to LAYERS)")
        found, private_uses = imports_of(module, path, modules)
        out["private"] += private_uses
        for imp in found:
            at = f"{where(path, imp.line)}: {imp.text}"
            hidden = private_part(imp.target, module)
            if hidden:
                out["private"].append(f"{at} imports the private module {imp.target}")
            hidden_names = [name for name in imp.names if is_private(name)]
            if hidden_names:
                out["private"].append(f"{at} imports the private name{'s' * (len(hidden_names) > 1)} "
                                      f"{', '.join(hidden_names)} of {imp.target}")
            if imp.target in modules and imp.target != module:
                edges.setdefault(module, {}).setdefault(imp.target, imp)
            if not in_package:
                continue
            mine, theirs = layer_of(module), layer_of(imp.target)
            if mine is not None and theirs is not None and theirs > mine:
                out["layer"].append(f"{at} reaches up from {layer_name(mine)} to {imp.target} in "
                                    f"{layer_name(theirs)}")
            a, b = family_of(module, modules), family_of(imp.target, modules)
            if a and b and a != b:
                out["family"].append(f"{at}: the {a} family imports the {b} family ({imp.target})")
    for cycle in cycles(edges):
        steps = " -> ".join(f"{imp.module} ({where(imp.path, imp.line)}: {imp.text})" for imp in cycle)
        out["cycle"].append(f"{steps} -> {cycle[0].module}")
    return out


@cache
def repository_findings() -> dict[str, list[str]]:
    return findings(ROOT)


RULES = {
    "unmapped": "every top-level module of iclnb has a layer in LAYERS",
    "layer": "a module imports only from its own layer or lower",
    "family": "experiment families never import each other (share through the kit or lower)",
    "private": "no _private name is used across modules (make a shared name public and update every user)",
    "cycle": "no import cycle among iclnb modules and benchmarks",
}


@pytest.mark.parametrize("kind", KINDS)
def test_imports_keep_the_layers(kind):
    found = repository_findings()[kind]
    assert not found, f"{RULES[kind]}; {len(found)} found:\n" + "\n".join(found)


def test_every_package_module_is_read():
    modules = module_files(ROOT)
    assert {"iclnb", "iclnb.core", "iclnb.experiments.kit", "iclnb.cli"} <= set(modules)
    assert any(m.startswith("benchmarks.") for m in modules)


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checker_reports_each_kind(tmp_path):
    _write(tmp_path, {
        "iclnb/__init__.py": "",
        "iclnb/core/__init__.py": "",
        "iclnb/core/low.py": "def _hidden():\n    pass\n\n\ndef late():\n    from iclnb.ops import high\n",
        "iclnb/ops/__init__.py": "",
        "iclnb/ops/high.py": "from iclnb.core import low\nfrom iclnb.core.low import _hidden\n",
        "iclnb/experiments/__init__.py": "",
        "iclnb/experiments/kit.py": "from iclnb.core import low\n",
        "iclnb/experiments/a/__init__.py": "",
        "iclnb/experiments/a/m.py": ("import iclnb.experiments.b.n as other\nfrom iclnb.experiments import kit\n"
                                     "from . import own\n\nother._secret()\nkit.low.late()\n"),
        "iclnb/experiments/a/own.py": "import iclnb.experiments.b._helpers\n",
        "iclnb/experiments/b/__init__.py": "",
        "iclnb/experiments/b/n.py": "from iclnb.experiments.b import _helpers\n\n\ndef _secret():\n    pass\n",
        "iclnb/experiments/b/_helpers.py": "",
        "iclnb/extra.py": "",
        "benchmarks/one.py": "from benchmarks.two import run\nfrom iclnb.core.low import _hidden\n",
        "benchmarks/two.py": "def run():\n    from benchmarks import one\n",
    })
    found = findings(tmp_path)
    assert found["unmapped"] == [f"{tmp_path}/iclnb/extra.py:1: iclnb.extra belongs to no layer (add it to LAYERS)"]
    assert found["layer"] == [
        f"{tmp_path}/iclnb/core/low.py:6: from iclnb.ops import high reaches up from layer 0 (iclnb.core) to "
        f"iclnb.ops.high in layer 6 (iclnb.ops)"]
    assert sorted(found["family"]) == [
        f"{tmp_path}/iclnb/experiments/a/m.py:1: import iclnb.experiments.b.n as other: the a family imports the b "
        f"family (iclnb.experiments.b.n)",
        f"{tmp_path}/iclnb/experiments/a/own.py:1: import iclnb.experiments.b._helpers: the a family imports the b "
        f"family (iclnb.experiments.b._helpers)"]
    assert sorted(found["private"]) == sorted([
        f"{tmp_path}/benchmarks/one.py:2: from iclnb.core.low import _hidden imports the private name _hidden of "
        f"iclnb.core.low",
        f"{tmp_path}/iclnb/experiments/a/m.py:5: other._secret uses the private name _secret of "
        f"iclnb.experiments.b.n",
        f"{tmp_path}/iclnb/experiments/a/own.py:1: import iclnb.experiments.b._helpers imports the private module "
        f"iclnb.experiments.b._helpers",
        f"{tmp_path}/iclnb/experiments/b/n.py:1: from iclnb.experiments.b import _helpers imports the private "
        f"module iclnb.experiments.b._helpers",  # a private module is private to itself, not to its package
        f"{tmp_path}/iclnb/ops/high.py:2: from iclnb.core.low import _hidden imports the private name _hidden of "
        f"iclnb.core.low"])
    assert found["cycle"] == [
        f"benchmarks.one ({tmp_path}/benchmarks/one.py:1: from benchmarks.two import run) -> benchmarks.two "
        f"({tmp_path}/benchmarks/two.py:2: from benchmarks import one) -> benchmarks.one",
        f"iclnb.core.low ({tmp_path}/iclnb/core/low.py:6: from iclnb.ops import high) -> iclnb.ops.high "
        f"({tmp_path}/iclnb/ops/high.py:1: from iclnb.core import low) -> iclnb.core.low"]


def test_a_clean_tree_reports_nothing(tmp_path):
    _write(tmp_path, {
        "iclnb/__init__.py": "import importlib\n_LAZY = {'high': ('iclnb.ops.high', 'shown')}\n",
        "iclnb/core/__init__.py": "",
        "iclnb/core/low.py": "def shown():\n    pass\n\n\ndef _own():\n    return shown()\n",
        "iclnb/ops/__init__.py": "",
        "iclnb/ops/high.py": "from iclnb.core import low\nimport iclnb.core.low as same\n\nlow.shown()\nsame.__doc__\n",
        "iclnb/experiments/__init__.py": ("import importlib\n\n\ndef find():\n"
                                          "    importlib.import_module('iclnb.ops')\n"),
        "iclnb/experiments/kit.py": "from iclnb.core.low import shown\n",
        "iclnb/experiments/a/__init__.py": "",
        "iclnb/experiments/a/m.py": "from iclnb.experiments import kit\nfrom iclnb.experiments.a import helpers\n",
        "iclnb/experiments/a/helpers.py": "from iclnb.core import low as _low\n",
        "benchmarks/one.py": "from benchmarks.two import run\nfrom iclnb.ops import high\n",
        "benchmarks/two.py": "def run():\n    pass\n",
    })
    assert findings(tmp_path) == {kind: [] for kind in KINDS}
