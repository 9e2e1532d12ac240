"""The loo steps against direct computations on small hand-made measurements."""

import numpy as np
import pytest

from iclnb.experiments.loo import loo as exp


def _item(full, edited, positions, is_bridge, words=None):
    n = len(is_bridge)
    return {"full": np.asarray(full, float), "edited": np.asarray(edited, float), "positions": np.asarray(positions),
            "is_bridge": np.asarray(is_bridge, bool), "words": words or [f"w{i}" for i in range(n)],
            "nodes": np.arange(n), "clusters": {}, "word_loss": np.arange(n, dtype=float),
            "token_loss": np.arange(n, dtype=float), "n_tokens": n + 1, "seconds": 1.0}


def _data():
    """Two contexts, one layer, the four metrics; positions 0-3 of 4 words."""
    rng = np.random.default_rng(0)
    items = []
    for k in range(2):
        full = rng.normal(size=(1, 4))
        edited = rng.normal(size=(4, 1, 4))
        edited[2, 0, 1] = np.nan  # an undefined metric
        items.append(_item(full, edited, [0, 1, 2, 3], [False, True, k == 0, False]))
    return exp.LooData([7], ["semantic"], [4], 2, {("semantic", 4): items})


def test_tested_positions():
    assert exp.tested_positions(8).tolist() == list(range(8))
    assert exp.tested_positions(8, "all").tolist() == list(range(8))
    assert exp.tested_positions(60, "25").tolist() == [0, 5, 10, 20, 25, 30, 50]
    big = exp.tested_positions(250)  # stride ceil(250 / 100) = 3, plus the temporal positions
    assert set(range(0, 250, 3)) <= set(big) and {5, 10, 20, 50} <= set(big) and 1 not in big


def test_influence_table_is_full_minus_edited():
    data = _data()
    table = exp.influence_table(data)
    assert len(table) == 2 * 4 * 1 * 4
    row = table[(table.context == 1) & (table.position == 3) & (table.metric == "ratio")].iloc[0]
    item = data.contexts[("semantic", 4)][1]
    assert row.influence == pytest.approx(item["full"][0, 2] - item["edited"][3, 0, 2])
    assert row.is_bridge == item["is_bridge"][3] and row.layer == 7


def test_bridge_anchor_table_pools_positions_and_leaves_position_0_out():
    data = _data()
    table = exp.bridge_anchor_table(data, seed=0, n_boot=200)
    got = table.set_index(["class", "metric"])
    for cls, mask_of in (("bridge", lambda it: it["is_bridge"]), ("anchor", lambda it: ~it["is_bridge"])):
        for mi, metric in enumerate(exp.METRICS):
            values = []
            for it in data.contexts[("semantic", 4)]:
                chosen = mask_of(it) & (np.arange(4) > 0)
                infl = it["full"][0, mi] - it["edited"][chosen, 0, mi]
                values.extend(infl[np.isfinite(infl)])
            assert got.loc[(cls, metric), "mean"] == pytest.approx(np.mean(values))
            assert got.loc[(cls, metric), "n"] == len(values)
            if len(values) > 1:
                assert got.loc[(cls, metric), "std"] == pytest.approx(np.std(values, ddof=1))


def test_results_document_keys_layers_and_contexts():
    data = _data()
    ba = exp.bridge_anchor_table(data, 0, 100)
    tt = exp.temporal_table(data, 0, 100, positions=(1, 3))
    doc = exp.results_document(data, ba, tt)
    assert doc["layers"] == [7] and "layer_7" in doc
    assert set(doc["layer_7"]) == {"bridge_anchor", "temporal", "full_context"}
    assert doc["layer_7"]["full_context"]["semantic"]["N_4"]["ratio"][1] == data.contexts[("semantic", 4)][1]["full"][0, 2]
    assert "layer" not in doc["layer_7"]["bridge_anchor"][0]
    assert doc["contexts"]["semantic"]["N_4"]["n_tokens"] == [5, 5]


def test_parameters_are_checked_before_any_work():
    from iclnb.core.errors import IclnbError

    for bad, message in [({"metric": "energy"}, "metric must be one of cross, within, ratio, within_sq"),
                         ({"positions": "0"}, "positions must be auto, all or a stride of at least 1"),
                         ({"conditions": "semantic,other"}, "subset of semantic, unrelated"),
                         ({"n_boot": 0}, "n_boot must be at least 10"),
                         ({"context_lengths": "1,5"}, "context_lengths must be at least 2")]:
        with pytest.raises(IclnbError, match=message):
            exp.PARAMS.validate(bad)
