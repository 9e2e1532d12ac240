"""loo_heatmap reads only leave-one-out runs and gets their per-layer table back whole."""

import pytest

from iclnb.analyses import loo_heatmap as exp
from iclnb.core.errors import IclnbError
from iclnb.results import Run
from tests.experiments.test_compare_loo_metrics import finished_loo_run
from tests.experiments.test_loo import _data


def test_reads_a_loo_run_and_its_bridge_anchor_table(tmp_path):
    source = finished_loo_run(tmp_path, _data())
    p = exp.PARAMS.validate({"results_dir": str(source.dir)})
    table = exp.load_source(p).table("bridge_anchor")
    assert set(table["layer"]) == {7} and set(table["class"]) == {"bridge", "anchor"}
    assert exp.describe(source)["layers"] == "7"


def test_refuses_another_experiment(tmp_path):
    run = Run.open(tmp_path / "css", "css_basic", {})
    run.finish({"layers": [0]})
    p = exp.PARAMS.validate({"results_dir": str(tmp_path / "css")})
    with pytest.raises(IclnbError, match="holds a css_basic run; this needs the results of loo"):
        exp.load_source(p)
    with pytest.raises(IclnbError, match="metrics must be a comma-separated subset"):
        exp.PARAMS.validate({"metrics": "energy"})
