"""Leave-one-out influence of every context word on pair-distance metrics, at every layer, fast (SPEC 4, 5, 7.4, 7.5).

For a walk of N words, the leave-one-out (LOO) context for position p is the walk with word p removed, encoded
afresh. Every word is encoded in its fixed leading-space form, so that encoding equals the full context's token ids
with word p's span cut out: ``ids[:s_p] + ids[e_p:]``. In a causal model the states of the prefix ``ids[:s_p]`` are
those of the full context, so the engine

1. runs the full context once (all requested layers, the per-token loss, and the key/value cache of every block up
   to the deepest requested one);
2. for each tested position p, recomputes only the suffix ``ids[e_p:]`` on top of the full context's cache cut at
   s_p, many positions per batch: the batch shares one cache (the first ``max s_p`` keys), and a custom 4-D
   attention mask lets row b see only its own prefix (keys < s_b), its own suffix causally, and — for sliding-window
   layers — only the keys inside the window, with position ids ``s_b + i`` so rotary/learned positions are those of
   the LOO sequence;
3. reduces every layer inside the forward hooks: the word vectors (residual at the last token of each word's span,
   float32) are summed per node with one-hot matrices — the prefix words from the full pass, the suffix words from
   the batch — and the metrics of all rows are computed as batched float32 tensor operations. Nothing of size
   (positions x words x d) is ever held.

Metrics over node means μ (mean over all occurrences of a node in the context; the attention-sink word, the one whose
span holds token 0, excluded): ``cross`` = mean over cross pairs (semantic pairs) of ||μ_a − μ_b||; ``within`` = mean
over within pairs (same graph cluster) of ||μ_a − μ_b||; ``ratio`` = cross / within; ``energy`` = mean over within
pairs of ||μ_a − μ_b||². A pair with an absent node is skipped; a metric with no pair is NaN (null in JSON). The
influence of p on metric M at layer k is M(full) − M(without p).

The word -> token ids step is pluggable (:func:`tokenizer_encoder`, :func:`map_encoder`), so the engine also runs
models that come without a tokenizer (random-init models in benchmarks and tests).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
import torch

from iclnb.models.hooks import Capture, _StopForward, layer_hooks
from iclnb.core.errors import IclnbError
from iclnb.prompts import EncodedWalk, encode_walk
from iclnb.represent import word_losses

METRICS = ("cross", "within", "ratio", "energy")
#: Suffix tokens per batch of leave-one-out variants (CPU; on CUDA 8x more).
DEFAULT_BATCH_TOKENS = 2048


# ---------------------------------------------------------------------------------------------------- encoders


def tokenizer_encoder(tokenizer, max_tokens: int | None = None):
    """words -> :class:`EncodedWalk` with the model's tokenizer (``iclnb.prompts.encode_walk``)."""
    return lambda words: encode_walk(tokenizer, words, max_tokens=max_tokens)


def map_encoder(word_ids: dict, bos_id: int | None = None):
    """words -> :class:`EncodedWalk` from a fixed word -> token-ids map (a stand-in for a tokenizer)."""
    pieces = {str(w): [int(t) for t in ids] for w, ids in word_ids.items()}
    if any(not ids for ids in pieces.values()):
        raise IclnbError("every word of the word -> token ids map needs at least one token id")

    def encode(words) -> EncodedWalk:
        words = [str(w) for w in words]
        missing = sorted(set(words) - set(pieces))
        if missing:
            raise IclnbError(f"the words {missing[:5]} have no token ids in the map")
        lengths = np.array([len(pieces[w]) for w in words], dtype=np.int64)
        offset = 0 if bos_id is None else 1
        ends = offset + np.cumsum(lengths)
        spans = np.stack([ends - lengths, ends], axis=1)
        ids = ([] if bos_id is None else [int(bos_id)]) + [t for w in words for t in pieces[w]]
        return EncodedWalk(torch.tensor(ids, dtype=torch.long), spans, bos_id is not None, words)

    return encode


# ---------------------------------------------------------------------------------------------------- metrics


def pair_metrics(sums: torch.Tensor, counts: torch.Tensor, cross_pairs: torch.Tensor,
                 within_pairs: torch.Tensor) -> torch.Tensor:
    """Metrics from per-node sums of word vectors.

    sums: (..., n_nodes, d) float32; counts: (..., n_nodes); pairs: (m, 2) long tensors of node indices.
    Returns (..., 4) float32: cross, within, ratio, energy (see the module docstring); NaN where undefined.
    Distances come from explicit differences (no Gram-matrix expansion, which cancels badly for large residuals).
    """
    counts = counts.to(sums.dtype)
    means = sums / counts.clamp(min=1.0)[..., None]
    present = counts > 0
    nan = torch.tensor(float("nan"), dtype=sums.dtype, device=sums.device)

    def pair_mean(pairs, square):
        if pairs.numel() == 0:
            return torch.full(sums.shape[:-2], float("nan"), dtype=sums.dtype, device=sums.device)
        a, b = pairs[:, 0], pairs[:, 1]
        dist = torch.linalg.vector_norm(means[..., a, :] - means[..., b, :], dim=-1)
        value = dist * dist if square else dist
        ok = present[..., a] & present[..., b]
        n = ok.sum(-1)
        total = torch.where(ok, value, torch.zeros_like(value)).sum(-1)
        return torch.where(n > 0, total / n.clamp(min=1), nan)

    cross = pair_mean(cross_pairs, False)
    within = pair_mean(within_pairs, False)
    energy = pair_mean(within_pairs, True)
    ratio = torch.where(within > 0, cross / torch.where(within > 0, within, torch.ones_like(within)), nan)
    return torch.stack([cross, within, ratio, energy], dim=-1)


def metrics_of_vectors(vectors, nodes, n_nodes: int, cross_pairs, within_pairs, keep=None,
                       dtype=torch.float32) -> np.ndarray:
    """The four metrics of one context from its word vectors (n_words, d) (or (layers, n_words, d)); float64 out."""
    x = torch.as_tensor(np.asarray(vectors), dtype=dtype)
    nodes = torch.as_tensor(np.asarray(nodes), dtype=torch.long)
    keep = torch.ones(len(nodes), dtype=torch.bool) if keep is None else torch.as_tensor(np.asarray(keep))
    onehot = torch.nn.functional.one_hot(nodes, n_nodes).to(dtype) * keep[:, None].to(dtype)
    sums = torch.einsum("wn,...wd->...nd", onehot, x)
    out = pair_metrics(sums, onehot.sum(0).expand(sums.shape[:-1]), _pairs(cross_pairs), _pairs(within_pairs))
    return out.double().numpy()


def _pairs(pairs, device=None) -> torch.Tensor:
    return torch.as_tensor(np.asarray(pairs, dtype=np.int64).reshape(-1, 2), device=device)


# ---------------------------------------------------------------------------------------------------- the engine


@dataclass
class LooTrial:
    """One context's measurements.

    layers: the layers measured (ints); positions: (P,) the tested word positions.
    full: (L, 4) float64 metrics of the full context (columns ``METRICS``); loo: (P, L, 4) of each LOO context;
    influence = full - loo, (P, L, 4). word_loss: (N,) summed token loss per word of the full context (NaN for a
    word holding token 0); token_loss: (T-1,) loss of token t+1 given tokens <= t; None when not asked.
    n_tokens: T; sink: (N,) the words excluded as the attention sink in the full context.
    """

    layers: list
    positions: np.ndarray
    full: np.ndarray
    loo: np.ndarray
    word_loss: np.ndarray | None
    token_loss: np.ndarray | None
    n_tokens: int
    sink: np.ndarray

    @property
    def influence(self) -> np.ndarray:
        return self.full[None] - self.loo


def _cache_keyword(hf_base) -> str:
    params = inspect.signature(hf_base.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _mask_kinds(config) -> dict | None:
    """Which attention masks the decoder needs: {"full_attention": None, "sliding_attention": W} for models with
    per-layer types (passed as a dict), or {"_single": W or None} for models with one mask for all layers."""
    types = getattr(config, "layer_types", None)
    window = getattr(config, "sliding_window", None)
    if types:
        unknown = sorted(set(types) - {"full_attention", "sliding_attention"})
        if unknown:
            raise IclnbError(f"leave-one-out with prefix reuse does not support attention types {unknown}")
        if "sliding_attention" in types and not window:
            raise IclnbError("the model has sliding-window layers but no sliding_window in its config")
        return {t: (int(window) if t == "sliding_attention" else None) for t in set(types)}
    use = getattr(config, "use_sliding_window", True)
    return {"_single": int(window) if (window and use) else None}


def _build_mask(query_prefix: torch.Tensor, query_start: torch.Tensor, cache_len: int, window, dtype,
                device) -> torch.Tensor:
    """Additive attention mask (R, 1, Q, cache_len + Q) for rows that pack several leave-one-out suffixes.

    A row holds one or more segments; query q of a segment that starts at column o and continues a prefix of s
    tokens sits at position s + (q − o). It sees cache keys j < s and the keys of its own segment o <= q' <= q; with
    a window W only keys whose position lies within W of its own. query_prefix (R, Q) is s per query and
    query_start (R, Q) is o (a padding query gets s = 0, o = q: it sees only itself).
    """
    s = query_prefix.to(device)[..., None]                                      # (R, Q, 1)
    o = query_start.to(device)[..., None]
    q = torch.arange(query_prefix.shape[1], device=device)[None, :, None]
    k = torch.arange(query_prefix.shape[1], device=device)[None, None, :]
    jc = torch.arange(cache_len, device=device)[None, None, :]
    cache_ok = jc < s
    suffix_ok = (k >= o) & (k <= q)
    if window is not None:
        cache_ok = cache_ok & (jc > s + (q - o) - window)
        suffix_ok = suffix_ok & ((q - k) < window)
    ok = torch.cat([cache_ok, suffix_ok], dim=-1)[:, None]
    mask = torch.zeros(ok.shape, dtype=dtype, device=device)
    return mask.masked_fill(~ok, torch.finfo(dtype).min)


def pack_rows(lengths, width_limit: int | None = None) -> list[list[int]]:
    """Pack segments of the given lengths into rows: each row is led by the longest remaining segment and filled
    with the shortest ones while they fit in its width, so padding stays small. Returns rows of segment indices."""
    lengths = np.asarray(lengths, dtype=np.int64)
    order = list(np.argsort(-lengths, kind="stable"))
    rows = []
    while order:
        lead = order.pop(0)
        width = max(int(lengths[lead]), 1) if width_limit is None else width_limit
        row, used = [int(lead)], int(lengths[lead])
        while order and used + int(lengths[order[-1]]) <= width:
            used += int(lengths[order[-1]])
            row.append(int(order.pop()))
        rows.append(row)
    return rows


class LooEngine:
    """Leave-one-out measurements of one model: ``LooEngine(model).trial(words, nodes, ...)``.

    batch_tokens: suffix tokens per batched pass (default 2048 on CPU, 16384 on CUDA); results do not depend on it
    beyond float rounding. work_dtype: float32 (default) or float64 for word vectors and metrics.
    """

    def __init__(self, model, encode=None, batch_tokens: int | None = None, work_dtype=torch.float32):
        if work_dtype not in (torch.float32, torch.float64):
            raise IclnbError(f"work_dtype must be torch.float32 or torch.float64, got {work_dtype}")
        self.work_dtype = work_dtype
        self.model = model
        self.encode = encode or tokenizer_encoder(model.tokenizer, max_tokens=model.max_positions)
        if batch_tokens is None:
            batch_tokens = DEFAULT_BATCH_TOKENS * (8 if model.device.type == "cuda" else 1)
        self.batch_tokens = int(batch_tokens)
        impl = getattr(model.hf.config, "_attn_implementation", "sdpa") or "sdpa"
        if impl not in ("sdpa", "eager"):
            raise IclnbError(f"leave-one-out prefix reuse needs attn_implementation 'sdpa' or 'eager' (custom "
                             f"attention masks); the model uses '{impl}'")
        self._cache_kw = _cache_keyword(model.hf.base_model)
        self._kinds = _mask_kinds(model.config)

    # -- passes
    def _masks(self, query_prefix, query_start, cache_len):
        args = (query_prefix, query_start, cache_len)
        dtype, device = self.model.dtype, self.model.device
        if "_single" in self._kinds:
            return _build_mask(*args, self._kinds["_single"], dtype, device)
        return {kind: _build_mask(*args, w, dtype, device) for kind, w in self._kinds.items()}

    def _forward(self, ids, position_ids, mask, cache, layers, on_layer, need_head):
        with layer_hooks(self.model.blocks, layers, on_layer, stop_early=not need_head), torch.inference_mode():
            try:
                return self.model.hf.base_model(input_ids=ids, attention_mask=mask, position_ids=position_ids,
                                                use_cache=True, **{self._cache_kw: cache})
            except _StopForward:
                return None

    # -- one context
    def trial(self, words, nodes, n_nodes: int, cross_pairs, within_pairs, layers, positions=None,
              loss: bool = True, exclude_sink: bool = True, context_lengths=None):
        """Full-context and leave-one-out metrics of one walk at every layer in ``layers``.

        words: the walk's words; nodes: (N,) node index of each word (0..n_nodes-1); cross_pairs / within_pairs:
        (m, 2) node pairs; positions: word positions to delete (default all).
        context_lengths: also measure the shorter contexts ``words[:n]`` for each n given. In a causal model they
        are prefixes of the walk (and each of their leave-one-out contexts a prefix of the walk's), so the same
        passes serve every length. Returns ``{n: LooTrial}`` (positions < n only) instead of one LooTrial.
        """
        from transformers import DynamicCache

        model = self.model
        layers = [k for k in model.resolve_layers(layers) if k != "embed"]
        if not layers:
            raise IclnbError("leave-one-out needs at least one block layer")
        words = list(words)
        nodes_np = np.asarray(nodes, dtype=np.int64)
        n_words = len(words)
        if nodes_np.shape != (n_words,) or n_words < 2:
            raise IclnbError("nodes must give one node per word, for a walk of at least 2 words")
        if nodes_np.min() < 0 or nodes_np.max() >= n_nodes:
            raise IclnbError(f"node indices must lie in [0, {n_nodes})")
        positions = np.arange(n_words) if positions is None else np.unique(np.asarray(positions, dtype=np.int64))
        if positions.size and (positions.min() < 0 or positions.max() >= n_words):
            raise IclnbError(f"positions must lie in [0, {n_words})")
        enc = self.encode(words)
        if len(enc) > model.max_positions:
            raise IclnbError(f"the walk encodes to {len(enc)} tokens, more than {model.max_positions}")
        device = model.device
        ids = enc.input_ids.to(device)
        spans = np.asarray(enc.spans, dtype=np.int64)
        n_tokens = len(ids)
        last = spans[:, 1] - 1
        sink = (spans[:, 0] == 0) if exclude_sink else np.zeros(n_words, bool)
        cross = _pairs(cross_pairs, device)
        within = _pairs(within_pairs, device)
        node_t = torch.as_tensor(nodes_np, device=device)
        onehot = torch.nn.functional.one_hot(node_t, n_nodes).to(self.work_dtype)     # (N, n)
        keep_full = torch.as_tensor(~sink, device=device, dtype=self.work_dtype)
        layer_row = {k: r for r, k in enumerate(layers)}
        lengths = [n_words] if context_lengths is None else sorted({int(n) for n in context_lengths})
        if lengths[0] < 2 or lengths[-1] > n_words:
            raise IclnbError(f"context lengths must lie in [2, {n_words}], got {lengths}")
        lengths_t = torch.as_tensor(lengths, device=device)
        word_index = torch.arange(n_words, device=device)

        # ---- the full context: word vectors of every layer, loss, cache
        word_vecs: dict = {}
        last_t = torch.as_tensor(last, device=device)

        def keep_words(k, hidden):
            word_vecs[k] = hidden[0, last_t].to(self.work_dtype)

        cache = DynamicCache()
        full_mask = self._masks(torch.zeros(1, n_tokens, dtype=torch.long), torch.zeros(1, n_tokens, dtype=torch.long), 0)
        out = self._forward(ids[None], torch.arange(n_tokens, device=device)[None], full_mask, cache, layers,
                            keep_words, need_head=loss)
        token_loss = w_loss = None
        if loss:
            cap = Capture()
            with torch.inference_mode():  # the chunked float32 loss of iclnb.models.hooks (never T x V logits at once)
                model._head_outputs(out.last_hidden_state, ids[None], None, True, None, cap)
            token_loss = cap.loss[0].cpu().numpy()
            w_loss = word_losses(token_loss, spans)
        # one row per context length: the words before it
        full_onehot = (onehot * keep_full[:, None])[None] * (word_index[None] < lengths_t[:, None])[..., None]
        stacked = torch.stack([word_vecs[k] for k in layers])                       # (L, N, d)
        full_sums = torch.einsum("kwn,lwd->klnd", full_onehot, stacked)
        full_counts = full_onehot.sum(1)[:, None].expand(-1, len(layers), -1)
        full = pair_metrics(full_sums, full_counts, cross, within)                   # (K, L, 4)
        kv = [(layer.keys, layer.values) for layer in cache.layers[: max(layers) + 1]]
        del cache, out

        # ---- the leave-one-out variants, batched
        loo = torch.full((len(lengths), len(positions), len(layers), len(METRICS)), float("nan"),
                         dtype=self.work_dtype, device=device)
        for batch_rows in self._batches(positions, spans, n_tokens):
            self._loo_batch(batch_rows, ids, spans, nodes_np, n_nodes, sink, onehot, word_vecs, kv, layers,
                            layer_row, cross, within, loo, positions, exclude_sink, lengths_t)
        full, loo = full.double().cpu().numpy(), loo.double().cpu().numpy()
        trials = {}
        for row, n in enumerate(lengths):
            tokens = int(spans[n - 1, 1])
            tested = positions < n
            trials[n] = LooTrial(
                layers=layers,
                positions=positions[tested],
                full=full[row],
                loo=loo[row][tested],
                word_loss=None if w_loss is None else w_loss[:n],
                token_loss=None if token_loss is None else token_loss[: tokens - 1],
                n_tokens=tokens,
                sink=sink[:n],
            )
        return trials if context_lengths is not None else trials[n_words]

    def _batches(self, positions, spans, n_tokens):
        """Batches of packed rows over ``positions`` (each row a list of indices into ``positions``).

        Rows are built by :func:`pack_rows` from the suffix lengths, then grouped so that rows x width stays
        within ``batch_tokens`` (rows come in decreasing width, so a batch's rows have similar widths).
        """
        lengths = n_tokens - spans[positions, 1]
        batches, current, width = [], [], 0
        for row in pack_rows(lengths):
            row_width = max(int(lengths[row[0]]), 1)
            if current and (len(current) + 1) * width > self.batch_tokens:
                batches.append(current)
                current = []
            if not current:
                width = row_width
            current.append(row)
        if current:
            batches.append(current)
        return batches

    def _loo_batch(self, batch_rows, ids, spans, nodes, n_nodes, sink, onehot, word_vecs, kv, layers, layer_row,
                   cross, within, loo, positions, exclude_sink, lengths_t):
        from transformers import DynamicCache

        device = ids.device
        n_words = len(nodes)
        n_tokens = len(ids)
        variants = np.array([v for row in batch_rows for v in row], dtype=np.int64)   # indices into positions
        batch_pos = positions[variants]
        V, R = len(variants), len(batch_rows)
        starts = spans[batch_pos, 0]
        ends = spans[batch_pos, 1]
        lengths = n_tokens - ends
        row_of = np.repeat(np.arange(R), [len(row) for row in batch_rows])
        offsets = np.concatenate([np.concatenate([[0], np.cumsum(lengths[row_of == r])[:-1]]) for r in range(R)])
        # prefix words (w < p, not the sink) from the full pass
        w_idx = np.arange(n_words)
        prefix_keep = (w_idx[None, :] < batch_pos[:, None]) & ~sink[None, :]
        prefix_onehot = onehot[None] * torch.as_tensor(prefix_keep, device=device, dtype=self.work_dtype)[..., None]
        # suffix words (w > p): the column of their last token in the packed row, and whether they count
        width_w = max(int((n_words - 1 - batch_pos).max()), 1)
        gather = np.zeros((V, width_w), dtype=np.int64)
        suffix_nodes = np.zeros((V, width_w), dtype=np.int64)
        suffix_keep = np.zeros((V, width_w), dtype=bool)
        for v, p in enumerate(batch_pos):
            w = np.arange(p + 1, n_words)
            gather[v, : len(w)] = offsets[v] + spans[w, 1] - 1 - ends[v]
            suffix_nodes[v, : len(w)] = nodes[w]
            loo_start = spans[w, 0] - (ends[v] - starts[v])
            suffix_keep[v, : len(w)] = ~(exclude_sink & (loo_start == 0))
        suffix_onehot = (torch.nn.functional.one_hot(torch.as_tensor(suffix_nodes, device=device), n_nodes)
                         .to(self.work_dtype) * torch.as_tensor(suffix_keep, device=device)[..., None])
        # per context length n: only suffix words w < n count (rows with p >= n are not tested at that length)
        suffix_word = torch.as_tensor(batch_pos, device=device)[:, None] + 1 + torch.arange(width_w, device=device)
        suffix_onehot = suffix_onehot[None] * (suffix_word[None] < lengths_t[:, None, None])[..., None]
        counts = prefix_onehot.sum(1)[None] + suffix_onehot.sum(2)                    # (K, V, n)
        gather_t = torch.as_tensor(gather, device=device)
        row_t = torch.as_tensor(row_of, device=device)[:, None]
        out_rows = torch.as_tensor(variants, device=device)

        def reduce(k, suffix_vectors):
            sums = torch.einsum("bwn,wd->bnd", prefix_onehot, word_vecs[k])[None]
            if suffix_vectors is not None:
                sums = sums + torch.einsum("kbwn,bwd->kbnd", suffix_onehot, suffix_vectors)
            else:
                sums = sums.expand(len(lengths_t), -1, -1, -1)
            loo[:, out_rows, layer_row[k]] = pair_metrics(sums, counts, cross, within)

        width = int(max(lengths[row_of == r].sum() for r in range(R)))
        if width == 0:  # only the last word deleted: the LOO context is a prefix of the full one
            for k in layers:
                reduce(k, None)
            return
        cache_len = int(starts.max())
        batch_ids = torch.full((R, width), int(ids[0]), dtype=torch.long, device=device)
        query_prefix = torch.zeros((R, width), dtype=torch.long)
        query_start = torch.arange(width).repeat(R, 1)
        position_ids = torch.zeros((R, width), dtype=torch.long)
        for v in range(V):
            r, o, n = row_of[v], int(offsets[v]), int(lengths[v])
            batch_ids[r, o : o + n] = ids[ends[v]:]
            query_prefix[r, o : o + n] = int(starts[v])
            query_start[r, o : o + n] = o
            position_ids[r, o : o + n] = int(starts[v]) + torch.arange(n)
        cache = DynamicCache()
        for layer_idx, (keys, values) in enumerate(kv):
            cache.update(keys[:, :, :cache_len].expand(R, -1, -1, -1), values[:, :, :cache_len].expand(R, -1, -1, -1),
                         layer_idx)
        mask = self._masks(query_prefix, query_start, cache_len)

        def on_layer(k, hidden):
            reduce(k, hidden[row_t, gather_t].to(self.work_dtype))

        self._forward(batch_ids, position_ids.to(device), mask, cache, layers, on_layer, need_head=False)
