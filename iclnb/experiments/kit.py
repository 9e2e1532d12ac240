"""The experiment kit: the pieces every experiment's measure step is built from.

* :func:`resume_units`: the one checkpointed, resumable loop. Units (contexts, (condition, context) pairs, chains)
  are computed in batches and stored under each experiment's own checkpoint key, flushed per batch, so an
  interrupted run resumes where it stopped and a finished unit is never computed twice.
* :func:`measure_contexts`: :func:`resume_units` whose work is one forward pass per batch of prompts
  (:func:`iclnb.represent.represent_walks`, every requested layer and the loss from the same pass) followed by the
  experiment's ``measure``. It can run the same units through a second model (``tag=``): that is how a model-level
  control is added to an experiment in one place.
* :func:`each_model`: several models one after the other, one in memory at a time, loaded only when some of its
  units are still to do and freed after.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any

from iclnb.core.progress import progress


class LazyModel:
    """A model that is loaded on first use (``get()``) and can be freed (``free()``): a run whose units are all
    checkpointed never loads it."""

    def __init__(self, load: Callable[[], Any], name: str = ""):
        self.load, self.name, self.model = load, name, None

    def get(self):
        if self.model is None:
            self.model = self.load()
        return self.model

    def free(self) -> None:
        loaded, self.model = self.model is not None, None
        if loaded:
            release_memory()


def release_memory() -> None:
    """Give a freed model's memory back (the CPU allocator's and, where there is one, the GPU cache)."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover - torch is a dependency; the kit itself does not need it
        pass


def each_model(names: Sequence[str], load: Callable[[str], Any]) -> Iterator[tuple[str, LazyModel]]:
    """Yield ``(name, LazyModel)`` for each model name in turn; the previous one is freed before the next is
    loaded, so one model is in memory at a time. ``load(name)`` builds a model (for example
    ``lambda name: load_model(name, dtype=p.dtype)``); it is called only when :meth:`LazyModel.get` is."""
    for name in names:
        holder = LazyModel(lambda name=name: load(name), name)
        try:
            yield name, holder
        finally:
            holder.free()


def checkpoint_key(unit: Hashable, tag: str | None = None) -> str:
    """The checkpoint key of a unit: ``str(unit)`` for an int, the parts joined by ``/`` for a tuple, prefixed by
    ``"<tag>|"`` for units run through a second model (a control)."""
    key = "/".join(map(str, unit)) if isinstance(unit, tuple) else str(unit)
    return key if tag is None else f"{tag}|{key}"


def resume_units(run, units: Sequence[Hashable], compute: Callable[[list], list], *, checkpoint: str = "contexts",
                 key: Callable[[Hashable], str] = checkpoint_key, total: int | None = None, batch_size: int = 1,
                 every_s: float = 30.0, desc: str | None = None) -> list:
    """Compute each unit not yet in the run's checkpoint ``checkpoint`` and return every unit's item, in the order
    of ``units``.

    ``compute(batch)`` takes a list of at most ``batch_size`` units and returns one JSON-able item (or array dict)
    per unit; items are stored under ``key(unit)`` and the checkpoint is flushed after each batch (written at most
    every ``every_s`` seconds; 0 writes every batch). ``total`` is the number of units the checkpoint will hold
    when complete (default: ``len(units)``; larger when several calls share one checkpoint, one per model say).
    """
    store = run.checkpoint(checkpoint, total=len(units) if total is None else total, every_s=every_s)
    todo = [u for u in units if key(u) not in store]
    batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    for batch in progress(batches, desc=desc or f"{checkpoint} (batches)"):
        items = compute(batch)
        if len(items) != len(batch):
            raise RuntimeError(f"compute returned {len(items)} items for a batch of {len(batch)} units")
        for unit, item in zip(batch, items):
            store[key(unit)] = item
        store.flush()
    return [store[key(u)] for u in units]


def measure_contexts(run, model, units: Sequence[Hashable], prompt: Callable[[Hashable], Any],
                     measure: Callable[[Hashable, Any, Any], dict], *, layers, batch_size: int,
                     words: Callable[[Any], list] | None = None, loss: bool = False, token_ids=None,
                     checkpoint: str = "contexts", key: Callable[[Hashable], str] | None = None,
                     tag: str | None = None, total: int | None = None, every_s: float = 30.0,
                     measure_threads: int | None = None, desc: str | None = None) -> list:
    """Run each unit's prompt through ``model`` once and keep what ``measure`` makes of it, checkpointed per batch.

    * ``prompt(unit)`` gives the unit's prompt (a walk, say); ``words(prompt)`` its words (default: the prompt is
      the word list);
    * one :func:`~iclnb.represent.represent_walks` pass per batch of ``batch_size`` prompts gives each unit's
      :class:`~iclnb.represent.WordStates` at ``layers`` (with word losses if ``loss``, next-token probabilities
      of ``token_ids`` if given);
    * ``measure(unit, prompt, state)`` returns the item stored for the unit (arrays and numbers).

    ``model`` is a loaded model, or a :class:`LazyModel` (loaded only if a unit is still to do). ``tag`` names a
    second model run over the same units (a control): its items are stored in the same checkpoint under
    ``"<tag>|<key>"``. ``measure_threads`` caps the BLAS threads while measuring (the measures multiply small
    matrices, which threaded BLAS slows down on a shared CPU). Returns the items in the order of ``units``.
    """
    from iclnb.represent import represent_walks

    key = key or (lambda unit: checkpoint_key(unit, tag))

    def compute(batch):
        lm = model.get() if isinstance(model, LazyModel) else model
        prompts = [prompt(u) for u in batch]
        texts = [words(x) if words else x for x in prompts]
        states = represent_walks(lm, texts, layers, loss=loss, token_ids=token_ids, batch_size=batch_size)
        if measure_threads is None:
            return [measure(u, x, s) for u, x, s in zip(batch, prompts, states)]
        from threadpoolctl import threadpool_limits

        with threadpool_limits(measure_threads, user_api="blas"):
            return [measure(u, x, s) for u, x, s in zip(batch, prompts, states)]

    return resume_units(run, units, compute, checkpoint=checkpoint, key=key, total=total, batch_size=batch_size,
                        every_s=every_s, desc=desc or ("contexts (batches)" if tag is None else f"{tag} (batches)"))


def row(metric: str, layer, n_words, mean, low, high, condition: str = "", null=(float("nan"),) * 3) -> dict:
    """One row of an experiment's tidy table (what its ``tidy_rows`` returns, see :mod:`iclnb.ops.tidy`): ``metric``
    at ``layer`` and ``n_words`` words in ``condition``, its mean and interval (``low``, ``high``), and ``null``, the
    (mean, ci_low, ci_high) of the metric's null (NaN where it has none). A value that is not a finite number becomes
    NaN; the run, model, experiment and depth columns are filled in by the tidy table."""
    import math

    def number(value) -> float:
        try:
            out = float(value)
        except (TypeError, ValueError):
            return math.nan
        return out if math.isfinite(out) else math.nan

    return {"condition": condition, "layer": layer, "N": number(n_words), "metric": metric, "mean": number(mean),
            "ci_low": number(low), "ci_high": number(high), "null": number(null[0]),
            "null_ci_low": number(null[1]), "null_ci_high": number(null[2])}
