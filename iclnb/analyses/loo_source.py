"""Reading a leave-one-out run back, for the analyses of leave-one-out runs (loo_heatmap, compare_loo_metrics)."""

from __future__ import annotations


def load_source(p):
    """The leave-one-out run this analysis reads (``results_dir``; empty: results/loo_multilayer)."""
    from iclnb.results import load

    return load(p.results_dir, experiment="loo", default="loo_multilayer")


def describe(source) -> dict:
    """What the source run measured, in one line per item."""
    r = source.results
    return {"model": source.model, "word sets": ", ".join(r["conditions"]),
            "context lengths (words)": ", ".join(map(str, r["context_lengths"])),
            "layers": ", ".join(map(str, r["layers"])), "contexts": r["n_contexts"], "directory": str(source.dir)}
