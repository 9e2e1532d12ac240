"""One declaration of each experiment's parameters: the notebooks match it, values are checked against it, and
layer spellings resolve in one place."""

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from iclnb.core.errors import IclnbError
from iclnb.core.layers import LayerDict, check_layers_spec, layer_index, resolve_layers
from iclnb.experiments import registry
from iclnb.experiments.params import Choice, Float, Int, IntList, StrList, declare

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _parameters_cell(notebook: Path) -> list[tuple[str, object]]:
    cells = json.loads(notebook.read_text())["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{notebook.name} needs exactly one cell tagged 'parameters'"
    tree = ast.parse("".join(tagged[0]["source"]))
    out = []
    for node in tree.body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, \
            f"{notebook.name}: the parameters cell holds only plain assignments"
        out.append((node.targets[0].id, ast.literal_eval(node.value)))
    return out


@pytest.mark.parametrize("name", [n for n, e in registry().items() if e.notebook == n])
def test_every_notebook_parameters_cell_is_its_declaration(name):
    declared = registry()[name].params
    cell = _parameters_cell(NOTEBOOKS / f"{name}.ipynb")
    assert [n for n, _ in cell] == declared.names
    for (n, value), param in zip(cell, declared.params):
        assert value == param.default and type(value) is type(param.default), n
        assert param.help, f"{name}.{n} has no one-line meaning"
    assert declared.validate(declared.defaults())  # the defaults pass their own checks


def test_every_notebook_belongs_to_an_experiment_module():
    modules = {e.notebook for e in registry().values()}
    assert {p.stem for p in NOTEBOOKS.glob("*.ipynb")} == modules


def test_values_are_checked_and_normalised():
    decl = declare(Int("n", 3, "count", min=1), Float("x", 0.5, "weight", min=0.0),
                   Choice("mode", "a", "mode", ("a", "b")), IntList("lengths", "10,20", "lengths", min=2),
                   StrList("sets", "s,u", "word sets", options=("s", "u")))
    p = decl.validate({"n": "7", "lengths": "20, 10,20", "sets": "u,s,u"})
    assert (p.n, p.x, p.mode, p.lengths, p.sets) == (7, 0.5, "a", [10, 20], ["u", "s"])
    assert dict(p) == {"n": 7, "x": 0.5, "mode": "a", "lengths": [10, 20], "sets": ["u", "s"]}
    for bad, message in [({"n": "abc"}, "n expects an integer, got 'abc'"), ({"n": 0}, "n must be at least 1"),
                         ({"n": True}, "expects an integer"), ({"x": "inf"}, "x must be a finite number"),
                         ({"mode": "c"}, "mode must be one of a, b"), ({"lengths": "10,x"}, "got 'x'"),
                         ({"lengths": ""}, "lengths is empty"), ({"lengths": "1"}, "at least 2"),
                         ({"sets": "s,v"}, "subset of s, u; got v"), ({"typo": 1}, "unknown parameter(s) typo")]:
        with pytest.raises(IclnbError, match=message.replace("(", r"\(").replace(")", r"\)")):
            decl.validate(bad)
    with pytest.raises(AttributeError, match="read-only"):
        p.n = 3


def test_a_bound_may_be_another_parameter_and_is_listed_as_checked():
    from iclnb.experiments.params import Limit, distinct

    decl = declare(Int("n_words", 15, "words", min=4), Int("n_clusters", 3, "clusters", min=2, max="n_words - 1"),
                   Float("share", 0.5, "a share", min=0.0, max="n_words"),
                   IntList("points", "5,10", "points", min=0, max="n_words + 2"))
    assert [p.describe for p in decl.params] == [
        "integer >= 4", "integer in [2, n_words - 1]", "number in [0.0, n_words]",
        "comma-separated integers in [0, n_words + 2]"]
    assert decl.validate({"n_words": 6, "n_clusters": 5, "points": "8,0,8"}).points == [0, 8]
    for bad, message in [({"n_words": 6, "n_clusters": 6},
                          "parameter n_clusters must be at most n_words - 1 (5), got 6"),
                         ({"n_clusters": 1}, "parameter n_clusters must be at least 2, got 1"),
                         ({"points": "5,18"}, "parameter points must be at most n_words + 2 (17), got 18")]:
        with pytest.raises(IclnbError) as refused:
            decl.validate(bad)
        assert str(refused.value) == message
    assert Limit.parse("n1-1") == Limit("n1", -1) and str(Limit.parse(" n1 + 0.5 ")) == "n1 + 0.5"
    with pytest.raises(ValueError, match="bounded by n_nodes, which is not declared"):
        declare(Int("k", 2, "k", max="n_nodes"))
    with pytest.raises(ValueError, match="names a parameter"):
        Int("k", 2, "k", max="2 * n")
    assert distinct([3, 1, 3, 2, 1]) == [3, 1, 2] and distinct(["a", "A"], key=str.lower) == ["a"]


def test_layer_spellings():
    assert layer_index(-1, 18) == 17 and layer_index("-2", 18) == 16 and layer_index("layer_3", 18) == 3
    assert layer_index("embed", 18) == "embed"
    assert resolve_layers("default", 18) == [0, 4, 9, 13, 17]
    assert resolve_layers("embed,-1,0", 18) == ["embed", 0, 17]
    with pytest.raises(IclnbError, match="layer 18 is out of range: the model has 18 blocks"):
        layer_index(18, 18)
    assert check_layers_spec(" 0, -1 ") == "0,-1"
    with pytest.raises(IclnbError, match="'x' is not an integer"):
        check_layers_spec("0,x")
    captured = LayerDict({0: "a", 17: "b", "embed": "e"}, n_layers=18)
    assert captured[-1] == "b" and captured["17"] == "b" and captured["embed"] == "e"
    assert -1 in captured and 5 not in captured and captured.get(5) is None
    with pytest.raises(KeyError, match="not captured"):
        captured[5]


def test_results_reader_resolves_layers_and_reads_tables(tmp_path):
    from iclnb.results import Run, load

    run = Run.open(tmp_path / "r", "demo", {"n": 1})
    run.record_model({"name": "tiny", "n_layers": 4})
    run.finish({"layer_0": {"phi": 1.0}, "layer_3": {"phi": np.nan},
                "table": [{"layer": 3, "mean": None, "ci_low": 1.0}, {"layer": 0, "mean": 2.0, "ci_low": None}]})
    r = load(tmp_path / "r")
    assert r.experiment == "demo" and r.model == "tiny" and r.layers == [0, 3]
    assert r.layer(-1) == "layer_3" and r.layer("0") == "layer_0" and r.layer_number(-1) == 3
    with pytest.raises(IclnbError, match=r"layer -2 \(block 2\) was not measured .* measured layers: 0, 3"):
        r.layer(-2)
    table = r.table("table")
    assert table["mean"].dtype == float and np.isnan(table["mean"][0]) and table["ci_low"][0] == 1.0
    with pytest.raises(IclnbError, match="holds a demo run; this needs the results of loo"):
        load(tmp_path / "r", experiment="loo")
    with pytest.raises(IclnbError, match="is not a results directory"):
        load(tmp_path / "nothing", default="loo")


def test_one_rule_for_lists_empty_items_refused_repeats_and_order_noted():
    from iclnb.experiments import find

    declaration = find("block_permutation").params
    for bad in ("8,,16", "8,16,", ",8"):
        with pytest.raises(IclnbError, match=r"parameter context_lengths has an empty item in '.*'; separate"):
            declaration.validate({"context_lengths": bad})
    assert declaration.validate({"context_lengths": "16,8,8"}).context_lengths == [8, 16]
    (note,) = declaration.notes({"context_lengths": "16,8,8"})
    assert note.startswith("note: parameter context_lengths '16,8,8' is read as 8,16 (")
    assert declaration.notes({"context_lengths": "8,16"}) == [] and declaration.notes({"context_lengths": "8 16"}) == []
    names = find("hierarchical").params
    assert names.notes({"models": "gemma-3-270m,gemma-3-270m"})[0].startswith(
        "note: parameter models 'gemma-3-270m,gemma-3-270m' is read as gemma-3-270m (")
    with pytest.raises(IclnbError, match="parameter positions has an empty item in '1,,2'"):
        find("incongruous_injection").params.validate({"positions": "1,,2"})
