"""compare_experiments' steps against hand-made runs of several experiments and models."""

import numpy as np
import pytest

from iclnb.analyses import compare_experiments as exp
from iclnb.analyses import figures
from iclnb.core.errors import IclnbError
from iclnb.results.io import write_json
from tests.test_ops_tidy import css_results, loo_results, make_run, park_results


@pytest.fixture
def three(tmp_path):
    css = make_run(tmp_path / "a" / "css", "css_basic", {"context_length": 20, "n_contexts": 8, "seed": 1},
                   css_results(), model="model-a", n_layers=4)
    park = make_run(tmp_path / "b" / "park", "reproduce_park", {"n_contexts": 2, "seed": 1}, park_results(),
                    model="model-b", n_layers=4)
    loo = make_run(tmp_path / "c" / "loo", "loo", {"context_lengths": [6, 10], "n_contexts": 3, "seed": 2},
                   loo_results(), model="model-a", n_layers=4)
    return css, park, loo


def test_runs_from_directories_globs_and_sweeps(three, tmp_path):
    css, park, loo = three
    runs = exp.load_runs(f"{css}, {tmp_path}/b/*,{loo},{css}")
    assert [r.dir for r in runs] == [css, park, loo]  # each once, in the order given
    assert exp.labels(runs) == ["css", "park", "loo"]
    write_json(tmp_path / "c" / "sweep.json", {"experiment": "loo", "runs": [{"name": "loo", "dir": "loo"},
                                                                              {"name": "later", "dir": "later"}]})
    assert [r.dir for r in exp.load_runs(str(tmp_path / "c"))] == [loo]  # its finished runs
    with pytest.raises(IclnbError, match="no results directory matches"):
        exp.load_runs(f"{tmp_path}/nothing*")
    with pytest.raises(IclnbError, match="is not a results directory|has not finished"):
        exp.load_runs(str(tmp_path / "a"))
    with pytest.raises(IclnbError, match="parameter runs is empty"):
        exp.load_runs(" , ")


def test_differing_parameters_are_shown(three):
    runs = exp.load_runs(",".join(map(str, three)))
    names = exp.labels(runs)
    table = exp.parameter_table(runs, names)
    differ = exp.differing(table).set_index("setting")
    assert differ.loc["model", "css"] == "model-a" and differ.loc["model", "park"] == "model-b"
    assert differ.loc["param: context_length", "park"] == "(absent)"
    assert differ.loc["param: seed"].tolist() == ["1", "1", "2"]
    assert "param: seed" in set(differ.index) and "model blocks" not in set(differ.index)  # all 4 blocks
    assert set(exp.overview(runs, names)["run"]) == {"css", "park", "loo"}


def test_shared_metrics_curves_and_changes(three):
    runs = exp.load_runs(",".join(map(str, three)))
    names = exp.labels(runs)
    table = exp.tidy_table(runs, names, n_boot=100, seed=0)
    metrics, why = exp.metrics_to_show(table)
    assert metrics == ["energy_norm"] and "shared" in why  # css and park both have it
    assert exp.metrics_to_show(table, "ratio,phi")[0] == ["ratio", "phi"]
    with pytest.raises(IclnbError, match="in none of the runs"):
        exp.metrics_to_show(table, "nope")
    over_n = exp.curves_over_n(table, runs, names, ["energy_norm", "ratio"], "-1")
    assert set(over_n["run"]) == {"css", "park", "loo"} and set(over_n["layer"]) == {3}
    relative = exp.relative_to_first_n(over_n)
    park = relative[(relative.run == "park")].sort_values("N")
    assert np.allclose(park["mean"], [1.0, 0.2 / 0.3]) and np.allclose(park["null"], [0.2 / 0.3, 0.2 / 0.3])
    changes = exp.change_table(over_n).set_index(["run", "metric"])
    assert changes.loc[("park", "energy_norm"), "last / first"] == pytest.approx(0.2 / 0.3)
    assert changes.loc[("park", "energy_norm"), "CIs overlap"] is True  # [0.25, 0.35], [0.15, 0.25] touch
    assert changes.loc[("css", "energy_norm"), "CIs overlap"] is None  # one N only
    over_layers = exp.curves_over_layers(table, ["energy_norm"], "largest")
    assert set(zip(over_layers.run, over_layers.layer)) == {("css", 0), ("css", 3), ("park", 3)}
    assert not exp.use_depth(runs, "auto") and exp.use_depth(runs, "depth")
    # every number on the relative figure is computed from the curves
    fig = figures.curves_figure(relative, ["energy_norm", "ratio"], "N", annotate_change=True)
    texts = [a.text for a in fig.layout.annotations]
    assert f"×{0.2 / 0.3:.3g}" in texts and "×2" in texts
    assert fig.layout.width <= 860


def test_no_shared_metric_draws_each_runs_own(three):
    css, _, loo = three
    runs = exp.load_runs(f"{css},{loo}")
    table = exp.tidy_table(runs, exp.labels(runs), n_boot=100, seed=0)
    metrics, why = exp.metrics_to_show(table)
    assert metrics[:2] == ["phi", "ratio"] and "no metric is shared" in why and len(metrics) == exp.MAX_PANELS
