"""compare_loo_metrics reads a loo run back and computes its curves and CSS from the stored values."""

import numpy as np
import pandas as pd
import pytest

from iclnb.experiments.loo import loo as exp
from tests.experiments.test_loo import _data


def finished_loo_run(tmp_path, data):
    from iclnb.results import Run, load

    run = Run.open(tmp_path / "loo", "loo", {"n_contexts": 2})
    run.record_model({"name": "tiny", "n_layers": 8})
    run.finish(exp.results_document(data, exp.bridge_anchor_table(data, 0, 100), exp.temporal_table(data, 0, 100)))
    return load(tmp_path / "loo", experiment="loo")


def test_compare_loo_metrics_css_matches_css_on_the_stored_values(tmp_path):
    from iclnb.analyses import compare_loo_metrics as cmp
    from iclnb.metrics import css

    data = _data()
    for k, item in enumerate(data.contexts[("semantic", 4)]):
        item["word_loss"] = np.random.default_rng(k).normal(size=4)
    source = finished_loo_run(tmp_path, data)
    table = cmp.css_across_contexts(source, -1, "ratio", seed=0, n_boot=100, n_perm=100)
    loss = np.stack([it["word_loss"] for it in data.contexts[("semantic", 4)]])
    ratio = np.array([it["full"][0, 2] for it in data.contexts[("semantic", 4)]])
    np.testing.assert_allclose(table.sort_values("position")["css"], css(loss, ratio))
    curves = cmp.metric_curves(source, "7", seed=0, n_boot=100)
    row = curves[curves.metric == "within"].iloc[0]
    assert row["mean"] == pytest.approx(np.mean([it["full"][0, 1] for it in data.contexts[("semantic", 4)]]))
    with pytest.raises(Exception, match="layer 3 .* was not measured"):
        cmp.metric_curves(source, 3, seed=0, n_boot=100)
    assert isinstance(cmp.full_context(source, 7), pd.DataFrame)
