"""`iclnb summarize`: the draft holds the set-up, the key numbers with CIs and nulls, the figures, sentences that
follow from the numbers only, and TODO sections."""

import shutil

import pytest

from iclnb import cli
from iclnb.core.errors import IclnbError
from iclnb.results import load
from iclnb.results.run import Run
from iclnb.ops.summarize import draft, findings
from iclnb.ops.tidy import tidy
from tests.test_ops_tidy import css_results, loo_results, make_run


def test_draft_of_a_css_basic_run(tmp_path, capsys):
    run = make_run(tmp_path / "css", "css_basic", {"context_length": 20, "n_contexts": 8, "seed": 3}, css_results())
    (run / "figures").mkdir()
    (run / "figures" / "metrics_by_layer.png").write_bytes(b"png")
    (run / "figures" / "metrics_by_layer.html").write_text("<html></html>")
    assert cli.main(["summarize", str(run)]) == 0
    assert "summary.md" in capsys.readouterr().out
    text = (run / "summary.md").read_text()
    for section in ("## Question", "## Set-up", "## Key numbers", "## Figures", "## What the data show",
                    "## Interpretation (TODO)", "## Caveats (TODO)", "## Next steps (TODO)"):
        assert section in text
    assert "How strongly does the loss" in text  # the question, not a finding
    assert "tiny-model" in text and "abc123" in text and "| seed | 3 |" in text
    assert "![metrics_by_layer](figures/metrics_by_layer.png)" in text
    assert "(figures/metrics_by_layer.html)" in text
    # layer 3: phi 1.0 [0.9, 1.1] against its null 0.3 [0.25, 0.35]
    assert "`phi` (layer 3, N = 20) = 1 [0.9, 1.1]: the interval lies above its null 0.3 [0.25, 0.35]." in text
    assert "`phi` (layer 0, N = 20) = 0.5 [0.4, 0.6]: the interval lies above its null" in text
    assert "`css_bridge_phi` (layer 0, N = 20) = -0.5 [-0.7, -0.3]: the interval excludes 0 (below)." in text
    assert "`css_anchor_phi` (layer 0, N = 20)" in text.split("These intervals include 0")[1]
    assert "energy_norm` (layer" not in text.split("## What the data show")[1]  # no reference: no claim
    # an existing summary (perhaps edited by hand) is kept unless --force
    (run / "summary.md").write_text("my notes")
    assert cli.main(["summarize", str(run)]) == 2
    assert "--force" in capsys.readouterr().err and (run / "summary.md").read_text() == "my notes"
    assert cli.main(["summarize", str(run), "--force"]) == 0
    assert (run / "summary.md").read_text().startswith("# css_basic")


def test_an_interval_overlapping_its_null_is_not_called_different(tmp_path):
    results = css_results()
    results["layer_3"]["summary"]["phi"] = {"mean": 0.33, "ci_low": 0.2, "ci_high": 0.5}
    t = tidy(make_run(tmp_path / "css", "css_basic", {"context_length": 20}, results))
    sentences = findings(t)
    assert any("`phi` (layer 3, N = 20) = 0.33 [0.2, 0.5]: the interval overlaps its null" in s and
               "do not separate it from the null" in s for s in sentences)
    assert any("of 2 intervals with a null, 1 lie above it, 0 below it and 1 overlap it" in s for s in sentences)


def test_trends_over_n_say_only_what_the_intervals_show(tmp_path):
    run = make_run(tmp_path / "loo", "loo", {"context_lengths": [6, 10]}, loo_results())
    text = draft(run)
    assert "How much does deleting each word" in text
    assert "`ratio` (layer 3, semantic) at N = 10: 4 [" in text
    assert "`influence_ratio_bridge` (layer 3, N = 10, semantic) = 0.2 [0.1, 0.3]: the interval excludes 0" in text


def test_unfinished_and_missing_runs_are_refused(tmp_path, capsys):
    run = make_run(tmp_path / "u", "css_basic", {}, {}, finished=False)
    assert cli.main(["summarize", str(run)]) == 2
    assert "has not finished" in capsys.readouterr().err
    assert not (run / "summary.md").exists()


@pytest.mark.parametrize("experiment", ["something_else"])
def test_an_experiment_without_an_extractor_still_gets_a_draft(tmp_path, experiment):
    text = draft(make_run(tmp_path / "x", experiment, {}, {"value": 1}))
    assert "TODO: the question the something_else experiment asks." in text
    assert "does not know where a something_else run keeps its numbers" in text


def test_a_directory_mixing_two_runs_is_refused_in_one_line(tmp_path, capsys):
    """config.json of one run beside results.json of another: summarize, status and the reader refuse it, naming
    both experiments; results.json written before it recorded its experiment is compared by parameter names."""
    for name, params, results in [("css_basic", {"context_length": 20, "n_contexts": 8}, css_results()),
                                  ("loo", {"context_lengths": [6, 10]}, loo_results())]:
        run = Run.open(tmp_path / name, name, params)
        run.finish(results, model="tiny-model")
    mixed = tmp_path / "css_basic"
    shutil.copy(tmp_path / "loo" / "results.json", mixed / "results.json")
    said = (f"{mixed} mixes two runs: its config.json is from a css_basic run, its results.json from a loo run; "
            f"rerun css_basic into {mixed} to rewrite its results.json, or keep each run's files in a directory of "
            f"its own")
    for command in (["summarize", str(mixed)], ["status", str(mixed)]):
        assert cli.main(command) == 2
        assert capsys.readouterr().err.strip().splitlines() == [f"iclnb: error: {said}"]
    with pytest.raises(IclnbError) as refused:
        load(mixed)
    assert str(refused.value) == said
    assert not (mixed / "summary.md").exists()
    assert load(tmp_path / "loo").experiment == "loo"  # a sound directory still reads

    old = make_run(tmp_path / "old", "css_basic", {"context_length": 20}, css_results())
    make_run(tmp_path / "old_loo", "loo", {"context_lengths": [6, 10]}, loo_results())
    shutil.copy(tmp_path / "old_loo" / "results.json", old / "results.json")
    assert cli.main(["summarize", str(old)]) == 2
    line, = capsys.readouterr().err.strip().splitlines()
    assert "mixes two runs: its results.json holds the results of a run with other parameters than the css_basic " \
           "run of its config.json (context_length, context_lengths in only one of them)" in line
