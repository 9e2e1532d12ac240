"""A long context fed through the model chunk by chunk with its key/value cache, keeping only what the collapse
measures need.

:class:`ChunkedPass` runs chunk i of a context with the ``DynamicCache`` of chunks < i (the model's own cache
classes, so sliding-window layers keep only their window), and forward hooks on the decoder blocks copy each
chunk's residual stream at the requested layers. Only the trailing window of residuals is kept per layer (the sink,
token 0, never enters it), so memory grows with the cache alone. Every state equals that of one plain pass over the
whole sequence up to float rounding (tested on tiny models, sliding-window families included).

:meth:`ChunkedPass.fork` copies the pass (cache and window), so one prefix serves several continuations, and
:meth:`ChunkedPass.probe` scores short question/answer continuations of the context read so far without changing it.
"""

from __future__ import annotations

import copy
import inspect

import numpy as np
import torch

from iclnb.models.hooks import check_finite, layer_hooks, where_layer

#: Most probes scored in one forward pass (bounds the copies of the cache that a batch needs).
PROBE_BATCH = 32


def _cache_keyword(base) -> str:
    params = inspect.signature(base.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def new_cache(model):
    """An empty ``DynamicCache`` laid out for ``model`` (sliding-window layers where its config has them)."""
    from transformers import DynamicCache

    try:
        return DynamicCache(config=model.hf.config)
    except (TypeError, ValueError, AttributeError):
        return DynamicCache()


def _common_prefix(sequences) -> int:
    """Length of the longest common prefix of ``sequences``, leaving at least one token of each."""
    n = min(len(s) for s in sequences) - 1
    for i in range(max(n, 0)):
        if any(s[i] != sequences[0][i] for s in sequences):
            return i
    return max(n, 0)


class ChunkedPass:
    """One context read in chunks: ``feed`` tokens, read the trailing ``window`` at any layer, ``fork``, ``probe``.

    layers: canonical layer indices (ints and/or "embed"); window_tokens: how many trailing positions to keep;
    chunk_tokens: most tokens per forward pass.
    """

    def __init__(self, model, layers, window_tokens: int, chunk_tokens: int):
        self.model = model
        self.layers = list(layers)
        self.window_tokens = int(window_tokens)
        self.chunk_tokens = int(chunk_tokens)
        self.cache = new_cache(model)
        self.n_tokens = 0  # tokens read so far (positions 0 .. n_tokens - 1)
        self._tail = {k: None for k in self.layers}
        self._cache_kw = _cache_keyword(model.hf.base_model)

    # ---- reading ------------------------------------------------------------------------------------------------
    def feed(self, ids) -> None:
        """Read ``ids`` (1-D token ids) after what was read before, in chunks of at most ``chunk_tokens``."""
        ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
        for start in range(0, len(ids), self.chunk_tokens):
            self._forward(ids[start : start + self.chunk_tokens])

    def _forward(self, chunk: torch.Tensor, capture: bool = True) -> None:
        model = self.model
        first = self.n_tokens
        captured = {}
        layers = self.layers if capture else []

        def store(k, hidden):
            check_finite(model, hidden, where_layer(k))
            captured[k] = hidden[0].detach().to(torch.float32, copy=True)

        with layer_hooks(model.blocks, layers, store, stop_early=False), torch.inference_mode():
            model.hf.base_model(input_ids=chunk[None].to(model.device), use_cache=True,
                                **{self._cache_kw: self.cache})
        self.n_tokens += len(chunk)
        for k in layers:
            rows = captured[k][1:] if first == 0 else captured[k]  # the sink (token 0) never enters a window
            tail = rows if self._tail[k] is None else torch.cat([self._tail[k], rows])
            self._tail[k] = tail[-self.window_tokens :].clone() if len(tail) > self.window_tokens else tail

    def window(self, layer) -> np.ndarray:
        """float64 (rows, d): the residuals at ``layer`` of positions max(1, n − w) .. n − 1 (n tokens read, w the
        window): the trailing window without the sink."""
        tail = self._tail[layer]
        if tail is None:
            return np.zeros((0, self.model.d_model))
        return tail.cpu().numpy().astype(np.float64)

    def fork(self) -> "ChunkedPass":
        """An independent copy (cache and windows): what it reads next does not touch this pass."""
        other = copy.copy(self)
        other.cache = copy.deepcopy(self.cache)
        other._tail = {k: (None if v is None else v.clone()) for k, v in self._tail.items()}
        return other

    # ---- probing ------------------------------------------------------------------------------------------------
    def probe(self, probes) -> tuple[np.ndarray, np.ndarray]:
        """Score continuations of the context read so far, which stays unchanged.

        probes: a list of (question ids, answer ids). For each: whether the answer's first token is the argmax of
        the next-token distribution after the question (``correct``), and the log-probability of the whole answer
        given the context and the question (``logprob``, nats). The questions' common first tokens are read once
        (on a copy of the cache); then up to PROBE_BATCH probes run together, right-padded, on copies of that
        cache.
        """
        correct = np.zeros(len(probes), dtype=bool)
        logprob = np.zeros(len(probes))
        shared = _common_prefix([list(q) for q, _ in probes])
        base = self
        if shared:
            base = copy.copy(self)
            base.cache = copy.deepcopy(self.cache)
            base._forward(torch.as_tensor(probes[0][0][:shared], dtype=torch.long), capture=False)
            probes = [(list(q)[shared:], a) for q, a in probes]
        model = self.model
        for first in range(0, len(probes), PROBE_BATCH):
            group = list(range(first, min(first + PROBE_BATCH, len(probes))))
            # right-padded: a causal model's real tokens never see the padding after them, so no mask is needed
            rows = [list(probes[i][0]) + list(probes[i][1]) for i in group]
            width = max(len(r) for r in rows)
            ids = torch.tensor([r + [r[-1]] * (width - len(r)) for r in rows], dtype=torch.long, device=model.device)
            q_len = torch.tensor([len(probes[i][0]) for i in group], device=model.device)
            a_len = torch.tensor([len(probes[i][1]) for i in group], device=model.device)
            steps = torch.arange(int(a_len.max()), device=model.device)
            where = (q_len[:, None] - 1 + steps[None]).clamp(max=width - 1)           # (B, A): predicting positions
            valid = steps[None] < a_len[:, None]
            cache = copy.deepcopy(base.cache)
            if len(group) > 1:
                cache.batch_repeat_interleave(len(group))
            with torch.inference_mode():
                out = model.hf.base_model(input_ids=ids, use_cache=True, **{self._cache_kw: cache})
                hidden = out.last_hidden_state.gather(1, where[..., None].expand(-1, -1, out.last_hidden_state.shape[-1]))
                logp = torch.log_softmax(model._logits(hidden), dim=-1)                   # (B, A, vocab)
            check_finite(model, logp, "before the probe answers (inf/NaN logits)")
            answers = ids.gather(1, (where + 1).clamp(max=width - 1))
            picked = logp.gather(-1, answers[..., None])[..., 0].masked_fill(~valid, 0.0)
            correct[group] = (logp[:, 0].argmax(-1) == answers[:, 0]).cpu().numpy()
            logprob[group] = picked.sum(-1).double().cpu().numpy()
        return correct, logprob
