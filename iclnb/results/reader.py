"""Reading a results directory back: its config, its results (``null`` -> NaN where numbers are expected), its
tables, and layer spellings resolved against the model that made it.

    r = iclnb.results.load("results/loo_multilayer")
    r.experiment, r.params["n_contexts"], r.layers          # what ran
    r.layer(-1)                                             # "layer_17": the key of the last block
    r.table("bridge_anchor")                                # a tidy DataFrame stored in results.json
    r.csv("influence")                                      # raw_data/influence.csv
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from iclnb.core.errors import IclnbError
from iclnb.core.layers import EMBED, layer_index, layer_key
from iclnb.core.paths import results_dir
from iclnb.results.io import read_json
from iclnb.results.run import CONFIG_NAME, RESULTS_NAME


@dataclass
class RunResults:
    """A finished run: ``config`` (config.json), ``document`` (results.json), and accessors."""

    dir: Path
    config: dict
    document: dict

    @property
    def experiment(self) -> str:
        return self.config.get("experiment") or self.document.get("experiment")

    @property
    def params(self) -> dict:
        return self.config.get("params") or {}

    @property
    def model(self) -> str:
        return self.document.get("model")

    @property
    def results(self) -> dict:
        return self.document.get("results") or {}

    @property
    def n_blocks(self) -> int | None:
        return (self.config.get("model") or {}).get("n_layers")

    @property
    def layers(self) -> list:
        """The measured layers (canonical), from the ``layer_<k>`` keys of the results or their ``layers`` list."""
        if "layers" in self.results:
            return list(self.results["layers"])
        keys = [k[len("layer_"):] for k in self.results if k.startswith("layer_")]
        layers = [int(k) if k.isdigit() else k for k in keys]
        return sorted(layers, key=lambda x: (x != EMBED, -1 if x == EMBED else x))  # "embed" first, as everywhere

    def layer(self, spec) -> str:
        """The results key (``layer_<k>``) of a layer spelled as the user likes: 17, -1, "-2", "embed", "layer_3".
        Negative indices count from the end of the model (its block count is in config.json), as everywhere."""
        n = self.n_blocks
        if n is None:
            raise IclnbError(f"{self.dir}/config.json does not record the model's block count; give a layer index "
                             f"from {self.layers}")
        canonical = layer_index(spec, n, self.model or "the model")
        if canonical not in self.layers:
            raise IclnbError(f"layer {spec!r} (block {canonical}) was not measured in {self.dir}; measured layers: "
                             f"{', '.join(map(str, self.layers))}")
        return layer_key(canonical)

    def layer_number(self, spec):
        """Like :meth:`layer` but the canonical index itself (an int, or "embed")."""
        key = self.layer(spec)[len("layer_"):]
        return int(key) if key.isdigit() else key

    def table(self, name: str):
        """A table stored in results.json as a list of records, as a DataFrame (``null`` -> NaN). A table stored per
        layer (``layer_<k>.<name>``) comes back whole, with a ``layer`` column."""
        import pandas as pd

        if name in self.results:
            return _numeric(pd.DataFrame.from_records(self.results[name]))
        per_layer = [(layer, self.results[layer_key(layer)][name]) for layer in self.layers
                     if isinstance(self.results.get(layer_key(layer)), dict) and name in self.results[layer_key(layer)]]
        if not per_layer:
            raise IclnbError(f"{self.dir} ({self.experiment}) holds no table {name!r}; it holds: "
                             f"{', '.join(sorted(k for k in self.results if not k.startswith('layer_')))} and, per "
                             f"layer, {', '.join(sorted(self.results.get(layer_key(self.layers[0]), {}) if self.layers else []))}")
        frames = [pd.DataFrame.from_records(records).assign(layer=layer) for layer, records in per_layer]
        return _numeric(pd.concat(frames, ignore_index=True))

    def csv(self, name: str):
        """``raw_data/<name>.csv`` as a DataFrame."""
        import pandas as pd

        path = self.dir / "raw_data" / f"{name}.csv"
        if not path.is_file():
            raise IclnbError(f"{path} is missing; the run in {self.dir} did not write a {name} table")
        return pd.read_csv(path)


def _numeric(table):
    """Columns whose values are numbers or null (stored as ``null`` in JSON) as float, with NaN."""
    import numbers

    for column in table.columns:
        if table[column].dtype == object:
            values = table[column].dropna()
            if len(values) == 0 or all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
                table[column] = table[column].astype(float)
    return table


def check_one_run(directory, config: dict, document: dict) -> None:
    """Refuse a results directory whose config.json and results.json come from different runs (files copied
    together from two directories), in one line that names both experiments. A results.json written before it
    recorded its experiment is compared by its parameters' names."""
    ran, wrote = config.get("experiment"), document.get("experiment")
    advice = (f"rerun {ran} into {directory} to rewrite its {RESULTS_NAME}, or keep each run's files in a directory "
              f"of its own")
    if ran and wrote and ran != wrote:
        raise IclnbError(f"{directory} mixes two runs: its {CONFIG_NAME} is from a {ran} run, its {RESULTS_NAME} from "
                         f"a {wrote} run; {advice}")
    if wrote is None and isinstance(config.get("params"), dict) and isinstance(document.get("config"), dict):
        differ = sorted(set(config["params"]) ^ set(document["config"]))
        if differ:
            raise IclnbError(f"{directory} mixes two runs: its {RESULTS_NAME} holds the results of a run with other "
                             f"parameters than the {ran} run of its {CONFIG_NAME} ({', '.join(differ)} in only one "
                             f"of them); {advice}")


def load(directory, experiment: str | tuple[str, ...] | None = None, default: str | None = None) -> RunResults:
    """Read a finished run (``directory`` as a user names it: see :func:`iclnb.core.paths.results_dir`).

    ``experiment``: the experiment(s) whose results are expected; another one is refused with a message that says
    how to produce the right one. ``default``: the experiment whose results root directory an empty name means.
    """
    path = results_dir(directory, default)
    if not (path / RESULTS_NAME).is_file():
        hint = f" (run `iclnb run {default or experiment} -o {path}` first)" if (default or experiment) else ""
        state = "has not finished" if (path / CONFIG_NAME).is_file() else "is not a results directory"
        raise IclnbError(f"{path} {state}: it holds no {RESULTS_NAME}{hint}")
    config = read_json(path / CONFIG_NAME) if (path / CONFIG_NAME).is_file() else {}
    document = read_json(path / RESULTS_NAME)
    check_one_run(path, config, document)
    result = RunResults(path, config, document)
    wanted = (experiment,) if isinstance(experiment, str) else experiment
    if wanted and result.experiment not in wanted:
        raise IclnbError(f"{path} holds a {result.experiment} run; this needs the results of {' or '.join(wanted)}")
    return result


def _graph_text(r) -> str:
    graph = r.results.get("graph")
    if isinstance(graph, dict) and graph.get("name"):
        return str(graph["name"])
    if "graph" in r.params:
        size = r.params.get("graph_size")
        return f"{r.params['graph']}" + (f" (size {size})" if size is not None else "")
    if r.experiment in ("loo", "loo_multilayer"):
        return "a new graph per context, fixed cluster layout"
    return ""


def _words_text(r) -> str:
    graph = r.results.get("graph")
    if isinstance(graph, dict) and graph.get("words"):
        words = list(graph["words"])
        return ", ".join(words[:4]) + (f", ... ({len(words)} words)" if len(words) > 4 else "")
    if r.results.get("conditions"):
        return "word sets: " + ", ".join(r.results["conditions"])
    return ""


def _source_text(source) -> str | None:
    """A model's recorded source in one line (hashes shortened to 12 characters)."""
    if not isinstance(source, dict):
        return source
    return ", ".join(f"{k} {str(v)[:12] if 'sha' in k else v}" for k, v in source.items()
                     if k not in ("requested", "name") and v not in (None, ""))


def setting(r) -> dict:
    """Every parameter of a run and what it ran on, as text: the rows of compare_experiments' parameter table and
    of ``iclnb summarize``'s set-up section."""
    prov = r.config.get("provenance") or {}
    model = r.config.get("model") or {}
    out = {f"param: {k}": v for k, v in r.params.items() if k != "output_dir"}
    out.update({
        "experiment": r.experiment,
        "model": r.model,
        "model source": _source_text(model.get("source")),
        "model blocks": r.n_blocks,
        "model dtype": model.get("dtype"),
        "device": model.get("device"),
        "graph": _graph_text(r),
        "words": _words_text(r),
        "layers measured": ", ".join(map(str, r.layers)),
        "iclnb": (prov.get("packages") or {}).get("iclnb"),
        "torch": (prov.get("packages") or {}).get("torch"),
        "transformers": (prov.get("packages") or {}).get("transformers"),
        "git commit": (prov.get("git_commit") or "")[:12] + (" (dirty)" if prov.get("git_dirty") else ""),
    })
    return {k: ("" if v is None else (", ".join(map(str, v)) if isinstance(v, list) else str(v)))
            for k, v in out.items()}
