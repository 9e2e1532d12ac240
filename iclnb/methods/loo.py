"""Influence of editing one context word (deleting it, or inserting a word before it) on a measure of the per-node
means of word vectors, at every layer, fast (docs/methods.md).

Edits. A walk of N words encodes to token ids ``ids`` with word spans [s_w, e_w). The edit at position p gives a
variant context: ``Delete()`` removes word p (leave-one-out), ``ids[:s_p] + ids[e_p:]``; ``Insert(word)`` puts
``word`` immediately before word p, ``ids[:s_p] + ids(word) + ids[s_p:]`` (p = N appends it). Every word is encoded
in its fixed leading-space form, so these are exactly the variants' own encodings. In a causal model the states of
the prefix ``ids[:s_p]`` are those of the full context, so the engine

1. runs the full context once (all requested layers, the per-token loss, and the key/value cache);
2. for each tested position p, recomputes only the variant's suffix (``ids[e_p:]``, or ``ids(word) + ids[s_p:]``)
   on top of the full context's cache cut at s_p, many positions per batch: the batch shares one cache (the first
   ``max s_p`` keys), several suffixes are packed per row, and a custom 4-D attention mask lets each suffix see only
   its own prefix (keys < s_p), itself causally, and — for sliding-window layers — only the keys inside the window,
   with position ids ``s_p + i`` so rotary/learned positions are those of the variant;
3. reduces every layer inside the forward hooks: the word vectors (residual at the last token of each word's span,
   in the work dtype) are summed per node with one-hot matrices — the prefix words from the full pass, the suffix
   words from the batch — and the sums of all variants go to the measure at once. Nothing of size
   (positions x words x d) is ever held.

Measures. A :class:`Measure` maps per-node sums and counts to named metrics; the engine knows nothing else about it.
:class:`PairDistances` (cross / within pair distances of node means) is the one the experiments use.

Which words count. Every original word of the walk counts with its own node label, except: the inserted word (not a
node of the graph); and, with ``exclude_sink``, the attention-sink word — the word whose span holds token 0 of the
context — and, in a variant, also the full context's sink word. So without BOS, deleting word 0 excludes word 1
(which then holds token 0), and inserting before word 0 (the inserted word then holds token 0) keeps word 0 excluded:
an insertion never changes which words count, only their vectors. With BOS no word holds token 0.

The influence of p on metric M at layer k is M(full) − M(variant at p).

Variant loss (``variant_loss=True``): the inserted word's loss (the sum of its tokens' losses given everything
before them) and the mean word loss of the original words after the edit, both in the variant. The suffix pass then
runs to the LM head (chunked float32 logits); the first suffix token is predicted from the full pass's state at
s_p − 1. A word holding token 0 has no loss (NaN) and is left out of the mean.

The word -> token ids step is pluggable (:func:`tokenizer_encoder`, :func:`map_encoder`), so the engine also runs
models that come without a tokenizer (random-init models in benchmarks and tests).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np
import torch

from iclnb.models.hooks import (LOGIT_CHUNK_ELEMENTS, WHERE_LOSS, Capture, StopForward, check_finite, layer_hooks,
                                where_layer)
from iclnb.core.errors import IclnbError
from iclnb.prompts import EncodedWalk, encode_walk
from iclnb.represent import word_losses

#: Suffix tokens per batch of variants (CPU; on CUDA 8x more).
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


# ---------------------------------------------------------------------------------------------------- measures


@runtime_checkable
class Measure(Protocol):
    """Per-node sums in, metrics out.

    ``names``: the metric columns. ``measure(sums, counts)``: sums (..., n_nodes, d), the sum of the counted word
    vectors of each node; counts (..., n_nodes), how many were counted -> (..., len(names)) on the sums' device, NaN
    where undefined. The engine calls it inside the forward hooks, once per layer and batch, with many contexts in
    the leading dimensions, so it should be vectorised over them.
    """

    names: tuple[str, ...]

    def __call__(self, sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor: ...


class PairDistances:
    """Distances between node means μ = sums / counts over two sets of node pairs.

    cross = mean over cross pairs (a, b) of ||μ_a − μ_b||; within = the same over within pairs; ratio = cross /
    within; within_sq = mean over within pairs of ||μ_a − μ_b||². A pair with an absent node (count 0) is skipped; a
    metric with no pair left is NaN, and so is ratio where within is 0. pairs: (m, 2) node indices.
    Distances come from explicit differences (no Gram-matrix expansion, which cancels badly for large residuals).
    """

    names = ("cross", "within", "ratio", "within_sq")

    def __init__(self, cross_pairs, within_pairs):
        self.cross_pairs = _pairs(cross_pairs)
        self.within_pairs = _pairs(within_pairs)
        self._on_device: dict = {}

    def _pairs_on(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._on_device:  # copied once per device, not in every hook call
            self._on_device[device] = (self.cross_pairs.to(device), self.within_pairs.to(device))
        return self._on_device[device]

    def __call__(self, sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        counts = counts.to(sums.dtype)
        means = sums / counts.clamp(min=1.0)[..., None]
        present = counts > 0
        cross_pairs, within_pairs = self._pairs_on(sums.device)
        cross_dist, cross_ok = _pair_distances(means, present, cross_pairs)
        within_dist, within_ok = _pair_distances(means, present, within_pairs)
        cross = _masked_mean(cross_dist, cross_ok)
        within = _masked_mean(within_dist, within_ok)
        within_sq = _masked_mean(within_dist * within_dist, within_ok)
        ratio = torch.where(within > 0, cross / within, torch.nan)
        return torch.stack([cross, within, ratio, within_sq], dim=-1)


#: The columns of :class:`PairDistances`, the measure of the loo experiments.
METRICS = PairDistances.names


def _pairs(pairs) -> torch.Tensor:
    return torch.as_tensor(np.asarray(pairs, dtype=np.int64).reshape(-1, 2))


def _pair_distances(means, present, pairs):
    """||μ_a − μ_b|| for every pair (..., m), and whether both nodes are present."""
    a, b = pairs[:, 0], pairs[:, 1]
    return (torch.linalg.vector_norm(means[..., a, :] - means[..., b, :], dim=-1),
            present[..., a] & present[..., b])


def _masked_mean(values, ok):
    """Mean of values over the last dimension where ok; NaN where nothing is ok."""
    n = ok.sum(-1)
    total = torch.where(ok, values, torch.zeros_like(values)).sum(-1)
    return torch.where(n > 0, total / n.clamp(min=1), torch.nan)


def _measured(measure, sums, counts) -> torch.Tensor:
    """``measure(sums, counts)``, refusing a result of the wrong shape (a custom measure's bug would otherwise land
    silently in the wrong columns)."""
    values = measure(sums, counts)
    expected = (*sums.shape[:-2], len(measure.names))
    if tuple(values.shape) != expected:
        raise IclnbError(f"the measure returned shape {tuple(values.shape)}, expected {expected} "
                         f"(one column per name in {tuple(measure.names)})")
    return values


def metrics_of_vectors(vectors, nodes, n_nodes: int, measure, keep=None, dtype=torch.float32) -> np.ndarray:
    """A measure of one context from its word vectors (n_words, d) (or (layers, n_words, d)): sums_n = Σ_{w: node w
    = n, keep w} x_w. keep: (n_words,) the words that count (default all). Returns (..., len(names)) float64."""
    x = torch.as_tensor(np.asarray(vectors), dtype=dtype)
    nodes = torch.as_tensor(np.asarray(nodes), dtype=torch.long)
    keep = torch.ones(len(nodes), dtype=torch.bool) if keep is None else torch.as_tensor(np.asarray(keep))
    onehot = torch.nn.functional.one_hot(nodes, n_nodes).to(dtype) * keep[:, None].to(dtype)
    sums = torch.einsum("wn,...wd->...nd", onehot, x)
    return _measured(measure, sums, onehot.sum(0).expand(sums.shape[:-1])).double().numpy()


# ---------------------------------------------------------------------------------------------------- edits


@dataclass(frozen=True)
class Delete:
    """Remove word p: the variant is ``ids[:s_p] + ids[e_p:]``. Positions 0..N-1."""

    removes: ClassVar[bool] = True

    def token_ids(self, encode) -> list[int]:
        return []


@dataclass(frozen=True)
class Insert:
    """Insert ``word`` immediately before word p: ``ids[:s_p] + ids(word) + ids[s_p:]``. Positions 0..N (N appends
    it, which leaves every word's vector and so every metric unchanged; only its loss is of interest there).
    ids(word): the word's span in the engine encoder's encoding of ``[word]`` (its leading-space form)."""

    word: str

    removes: ClassVar[bool] = False

    def token_ids(self, encode) -> list[int]:
        enc = encode([self.word])
        start, end = (int(i) for i in enc.spans[0])
        return [int(t) for t in enc.input_ids[start:end]]


# ---------------------------------------------------------------------------------------------------- results


@dataclass
class LooTrial:
    """One context's measurements under one edit.

    layers: the layers measured (ints); metrics: the measure's column names; edit: the edit applied; positions:
    (P,) the tested positions. full: (L, M) float64 metrics of the full context; edited: (P, L, M) those of each
    variant; influence = full − edited, (P, L, M). word_loss: (N,) summed token loss per word of the full context
    (NaN for a word holding token 0); token_loss: (T-1,) loss of token t+1 given tokens <= t; both None unless
    ``loss``. n_tokens: T; sink: (N,) the words excluded as the attention sink of the full context.
    With ``variant_loss``: inserted_loss (P,) the inserted word's loss in each variant (None for Delete);
    following_loss (P,) the mean word loss of the original words after the edit in each variant (NaN if none).
    """

    layers: list
    metrics: tuple[str, ...]
    edit: Delete | Insert
    positions: np.ndarray
    full: np.ndarray
    edited: np.ndarray
    word_loss: np.ndarray | None
    token_loss: np.ndarray | None
    n_tokens: int
    sink: np.ndarray
    inserted_loss: np.ndarray | None = None
    following_loss: np.ndarray | None = None

    @property
    def influence(self) -> np.ndarray:
        return self.full[None] - self.edited


# ---------------------------------------------------------------------------------------------------- packing


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


# ---------------------------------------------------------------------------------------------------- variants


@dataclass
class _Plan:
    """The tested variants of one trial, one entry per tested position (numpy).

    Variant p is ``ids[:cut] + inserted + ids[resume:]`` (cut = s_p; resume = e_p for Delete, s_p for Insert). Its
    suffix ``inserted + ids[resume:]`` has ``length`` tokens and holds the original words from ``first_kept`` on
    (p + 1 for Delete, p for Insert), each ``shift`` = len(inserted) − (resume − cut) positions from where it sits in
    the full context.
    """

    positions: np.ndarray
    cut: np.ndarray
    resume: np.ndarray
    first_kept: np.ndarray
    shift: np.ndarray
    length: np.ndarray

    @classmethod
    def of(cls, positions, spans, n_tokens: int, removes: bool, n_inserted: int) -> _Plan:
        starts = np.append(spans[:, 0], n_tokens)  # position N (an insertion after the last word) starts at T
        cut = starts[positions]
        resume = spans[positions, 1] if removes else cut
        return cls(positions, cut, resume, positions + int(removes), n_inserted - (resume - cut),
                   n_inserted + n_tokens - resume)


def _suffix_source(local, resume, n_inserted: int):
    """Index into ``inserted + ids`` of suffix token ``local`` of a variant resuming at ``resume``: the inserted
    tokens first (index local), then original token t = resume + local − m (index m + t = resume + local)."""
    return np.where(local < n_inserted, local, resume + local)


@dataclass
class _Layout:
    """Where one batch's variants sit in its packed rows (numpy).

    Per variant (V,): ``variants`` its index into the plan (row by row), ``row_of`` its row, ``offsets`` the column
    of its first suffix token. Per suffix token (S,): ``v_of`` its variant (0..V-1), ``local`` its index in the
    suffix, ``row`` and ``col`` where it sits. ``width``: the widest row's tokens.
    """

    variants: np.ndarray
    row_of: np.ndarray
    offsets: np.ndarray
    n_rows: int
    width: int
    v_of: np.ndarray
    local: np.ndarray
    row: np.ndarray
    col: np.ndarray


def _layout(batch_rows, lengths) -> _Layout:
    """Variants one after another along each row, in the order of ``batch_rows``; lengths: suffix tokens per plan
    entry."""
    sizes = np.array([len(row) for row in batch_rows])
    variants = np.concatenate([np.asarray(row, dtype=np.int64) for row in batch_rows])
    row_of = np.repeat(np.arange(len(batch_rows)), sizes)
    n = lengths[variants]
    before = np.cumsum(n) - n                                        # suffix tokens of the earlier variants
    offsets = before - before[np.cumsum(sizes) - sizes][row_of]      # ... less those of earlier rows
    v_of = np.repeat(np.arange(len(variants)), n)
    local = np.arange(int(n.sum())) - before[v_of]
    width = int(np.bincount(row_of, weights=n).max())
    return _Layout(variants, row_of, offsets, len(batch_rows), width, v_of, local, row_of[v_of], offsets[v_of] + local)


@dataclass
class _Context:
    """What every batch of variants of one trial reads."""

    ids: torch.Tensor              # (T,) the full context's token ids, on the model's device
    ext_ids: torch.Tensor          # (m + T,) the inserted ids, then ids: the source of every suffix token
    n_inserted: int                # m
    spans: np.ndarray              # (N, 2) word token spans of the full context
    word_of_token: np.ndarray      # (T,) the word holding each token (-1 for BOS)
    nodes: np.ndarray              # (N,) node of each word
    onehot: torch.Tensor           # (N, n_nodes) one-hot nodes, work dtype
    sink: np.ndarray               # (N,) the words excluded from the full context
    exclude_sink: bool
    layers: list
    measure: Measure
    lengths: torch.Tensor          # (K,) the context lengths measured
    word_vecs: dict                # layer -> (N, d) word vectors of the full pass, work dtype
    kv: list | None = None         # (keys, values) of each block of the full pass
    boundary_loss: torch.Tensor | None = None   # (P,) see LooEngine._boundary_losses


@dataclass
class _Results:
    """What the batches fill in: edited (K, P, L, M) metrics; inserted (P,) and following (K, P) losses."""

    edited: torch.Tensor
    inserted: torch.Tensor
    following: torch.Tensor


def _n_edits(n_words: int, edit) -> int:
    """How many edit positions an n-word context has: N for Delete, N + 1 for Insert (N appends)."""
    return n_words + (0 if edit.removes else 1)


def _per_length(ctx: _Context, plan: _Plan, edit, full, results: _Results, token_loss, variant_loss: bool) -> dict:
    """{n: LooTrial} for each context length n: the first n words, and the positions that are edit positions of n
    words (a variant of the n-word context is the walk's variant at the same position, cut after word n − 1)."""
    full, edited = full.double().cpu().numpy(), results.edited.double().cpu().numpy()
    inserted = results.inserted.double().cpu().numpy() if variant_loss and ctx.n_inserted else None
    following = results.following.double().cpu().numpy() if variant_loss else None
    w_loss = None if token_loss is None else word_losses(token_loss, ctx.spans)
    trials = {}
    for row, n in enumerate(ctx.lengths.tolist()):
        tokens = int(ctx.spans[n - 1, 1])
        tested = plan.positions < _n_edits(n, edit)
        trials[n] = LooTrial(
            layers=ctx.layers,
            metrics=tuple(ctx.measure.names),
            edit=edit,
            positions=plan.positions[tested],
            full=full[row],
            edited=edited[row][tested],
            word_loss=None if w_loss is None else w_loss[:n],
            token_loss=None if token_loss is None else token_loss[: tokens - 1],
            n_tokens=tokens,
            sink=ctx.sink[:n],
            inserted_loss=None if inserted is None else inserted[tested],
            following_loss=None if following is None else following[row][tested],
        )
    return trials


def _on(device, array) -> torch.Tensor:
    return torch.as_tensor(array, device=device)


def _target_losses(model, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """−log softmax(head(h_i))[y_i] for rows h_i of hidden (M, d) and targets y (M,) -> (M,) float32. Logits are
    float32 in chunks of rows (never M x vocabulary at once), with the model's logit soft-capping."""
    vocab = model.hf.get_output_embeddings().weight.shape[0]
    chunk = max(1, LOGIT_CHUNK_ELEMENTS // vocab)
    parts = [torch.nn.functional.cross_entropy(model._logits(hidden[i : i + chunk]), targets[i : i + chunk],
                                               reduction="none") for i in range(0, len(targets), chunk)]
    losses = torch.cat(parts) if parts else torch.empty(0, dtype=torch.float32, device=hidden.device)
    check_finite(model, losses, WHERE_LOSS)  # every target is a real token
    return losses


# ---------------------------------------------------------------------------------------------------- the engine


class LooEngine:
    """Edit-one-word measurements of one model: ``LooEngine(model).trial(words, nodes, n_nodes, measure, layers)``.

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
            raise IclnbError(f"prefix reuse needs attn_implementation 'sdpa' or 'eager' (custom attention masks); "
                             f"the model uses '{impl}'")
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
        with layer_hooks(self.model.blocks, layers, on_layer, stop_early=not need_head):
            try:
                return self.model.hf.base_model(input_ids=ids, attention_mask=mask, position_ids=position_ids,
                                                use_cache=True, **{self._cache_kw: cache})
            except StopForward:
                return None

    # -- one context
    @torch.inference_mode()
    def trial(self, words, nodes, n_nodes: int, measure: Measure, layers, positions=None, edit=Delete(),
              loss: bool = True, exclude_sink: bool = True, context_lengths=None, variant_loss: bool = False):
        """The measure of the full context and of each edited variant, at every layer in ``layers``.

        words: the walk's words; nodes: (N,) node index of each word (0..n_nodes-1); measure: a :class:`Measure`
        (e.g. ``PairDistances(cross_pairs, within_pairs)``); edit: ``Delete()`` or ``Insert(word)``; positions:
        the edit positions to test (default all: 0..N-1 for Delete, 0..N for Insert). loss: the full context's
        token and word losses; variant_loss: each variant's inserted-word and following-word losses (runs the LM
        head on every suffix; off by default, which keeps the suffix passes as short as the layers allow).
        context_lengths: also measure the shorter contexts ``words[:n]`` for each n given. In a causal model they
        are prefixes of the walk (and each of their variants a prefix of the walk's variant at the same position),
        so the same passes serve every length. Returns ``{n: LooTrial}`` (the positions that are edit positions of
        n words only) instead of one LooTrial.
        """
        layers, words, nodes, positions, lengths = self._checked(words, nodes, n_nodes, measure, layers, positions,
                                                                 edit, context_lengths)
        ctx = self._context(words, nodes, n_nodes, measure, layers, edit, lengths, exclude_sink)
        plan = _Plan.of(positions, ctx.spans, len(ctx.ids), edit.removes, ctx.n_inserted)

        # ---- the full context: word vectors of every layer, loss, cache
        out, cache = self._full_pass(ctx, need_head=loss or variant_loss)
        token_loss = None
        if loss:
            cap = Capture()  # the chunked float32 loss of iclnb.models.hooks (never T x V logits at once)
            self.model._head_outputs(out.last_hidden_state, ctx.ids[None], None, True, None, cap)
            token_loss = cap.loss[0].cpu().numpy()
        if variant_loss:
            ctx.boundary_loss = self._boundary_losses(out.last_hidden_state[0], plan, ctx)
        # the suffix passes stop after the deepest requested block unless they need the LM head
        depth = len(cache.layers) if variant_loss else max(layers) + 1
        ctx.kv = [(layer.keys, layer.values) for layer in cache.layers[:depth]]
        del cache, out
        full = self._full_metrics(ctx)                                               # (K, L, M)

        # ---- the variants, batched
        nan = dict(dtype=self.work_dtype, device=ctx.ids.device)
        results = _Results(
            edited=torch.full((len(lengths), len(positions), len(layers), len(measure.names)), torch.nan, **nan),
            inserted=torch.full((len(positions),), torch.nan, **nan),
            following=torch.full((len(lengths), len(positions)), torch.nan, **nan))
        for batch_rows in self._batches(plan.length):
            self._variant_batch(batch_rows, plan, ctx, results, variant_loss)
        trials = _per_length(ctx, plan, edit, full, results, token_loss, variant_loss)
        return trials if context_lengths is not None else trials[len(words)]

    def _checked(self, words, nodes, n_nodes, measure, layers, positions, edit, context_lengths):
        """The trial's arguments, checked: (block layers, words, nodes, sorted positions, sorted context lengths)."""
        layers = [k for k in self.model.resolve_layers(layers) if k != "embed"]
        if not layers:
            raise IclnbError("the edit engine needs at least one block layer")
        if not isinstance(measure, Measure):
            raise IclnbError("measure must have names and map (sums, counts) to metrics; see iclnb.methods.loo.Measure")
        if not isinstance(edit, (Delete, Insert)):
            raise IclnbError(f"edit must be Delete() or Insert(word), got {edit!r}")
        words = list(words)
        nodes = np.asarray(nodes, dtype=np.int64)
        n_words = len(words)
        if nodes.shape != (n_words,) or n_words < 2:
            raise IclnbError("nodes must give one node per word, for a walk of at least 2 words")
        if nodes.min() < 0 or nodes.max() >= n_nodes:
            raise IclnbError(f"node indices must lie in [0, {n_nodes})")
        n_edits = _n_edits(n_words, edit)
        positions = np.arange(n_edits) if positions is None else np.unique(np.asarray(positions, dtype=np.int64))
        if positions.size and (positions.min() < 0 or positions.max() >= n_edits):
            raise IclnbError(f"positions must lie in [0, {n_edits}) for {edit!r}")
        lengths = [n_words] if context_lengths is None else sorted({int(n) for n in context_lengths})
        if lengths[0] < 2 or lengths[-1] > n_words:
            raise IclnbError(f"context lengths must lie in [2, {n_words}], got {lengths}")
        return layers, words, nodes, positions, lengths

    def _context(self, words, nodes, n_nodes, measure, layers, edit, lengths, exclude_sink) -> _Context:
        """Encode the walk and the inserted word; everything the passes share (the full pass fills word_vecs)."""
        inserted = edit.token_ids(self.encode)
        enc = self.encode(words)
        if len(enc) + len(inserted) > self.model.max_positions:
            raise IclnbError(f"the walk encodes to {len(enc)} tokens (and {len(inserted)} inserted), more than "
                             f"{self.model.max_positions}")
        device = self.model.device
        ids = enc.input_ids.to(device)
        spans = np.asarray(enc.spans, dtype=np.int64)
        word_of_token = np.full(len(ids), -1)
        word_of_token[spans[0, 0]:] = np.repeat(np.arange(len(words)), spans[:, 1] - spans[:, 0])
        onehot = torch.nn.functional.one_hot(torch.as_tensor(nodes, device=device), n_nodes).to(self.work_dtype)
        return _Context(ids=ids, ext_ids=torch.cat([torch.as_tensor(inserted, dtype=torch.long, device=device), ids]),
                        n_inserted=len(inserted), spans=spans, word_of_token=word_of_token, nodes=nodes,
                        onehot=onehot, sink=(spans[:, 0] == 0) & exclude_sink, exclude_sink=exclude_sink,
                        layers=layers, measure=measure, lengths=torch.as_tensor(lengths, device=device),
                        word_vecs={})

    def _full_pass(self, ctx: _Context, need_head: bool):
        """The full context once: ctx.word_vecs[k] (N, d) for every layer; returns (the model output, or None when
        the pass stopped after the deepest layer; its cache)."""
        from transformers import DynamicCache

        n_tokens = len(ctx.ids)
        last = torch.as_tensor(ctx.spans[:, 1] - 1, device=ctx.ids.device)

        def keep_words(k, hidden):
            check_finite(self.model, hidden, where_layer(k))
            ctx.word_vecs[k] = hidden[0, last].to(self.work_dtype)

        cache = DynamicCache()
        causal = torch.zeros(1, n_tokens, dtype=torch.long)  # prefix 0, segment start 0: plain causal attention
        out = self._forward(ctx.ids[None], torch.arange(n_tokens, device=ctx.ids.device)[None],
                            self._masks(causal, causal, 0), cache, ctx.layers, keep_words, need_head=need_head)
        return out, cache

    def _full_metrics(self, ctx: _Context) -> torch.Tensor:
        """(K, L, M): the measure of the first n words (the sink excluded) for each context length n."""
        n_words = len(ctx.nodes)
        keep = torch.as_tensor(~ctx.sink, device=ctx.ids.device, dtype=self.work_dtype)
        within = torch.arange(n_words, device=ctx.ids.device)[None] < ctx.lengths[:, None]           # (K, N)
        onehot = (ctx.onehot * keep[:, None])[None] * within[..., None]                             # (K, N, n)
        stacked = torch.stack([ctx.word_vecs[k] for k in ctx.layers])                               # (L, N, d)
        sums = torch.einsum("kwn,lwd->klnd", onehot, stacked)
        return _measured(ctx.measure, sums, onehot.sum(1)[:, None].expand(-1, len(ctx.layers), -1))

    def _boundary_losses(self, final_hidden, plan: _Plan, ctx: _Context) -> torch.Tensor:
        """(P,) loss of each variant's first suffix token. It is predicted from the last prefix token s_p − 1, whose
        final state the full pass already holds (the suffix pass predicts only the later ones). NaN where the
        suffix is empty or the variant starts with it (s_p = 0: no token before it)."""
        device = ctx.ids.device
        losses = torch.full((len(plan.cut),), torch.nan, dtype=torch.float32, device=device)
        has = (plan.cut >= 1) & (plan.length >= 1)
        if has.any():
            targets = ctx.ext_ids[torch.as_tensor(_suffix_source(0, plan.resume[has], ctx.n_inserted), device=device)]
            hidden = final_hidden[torch.as_tensor(plan.cut[has] - 1, device=device)]
            losses[torch.as_tensor(has, device=device)] = _target_losses(self.model, hidden, targets)
        return losses

    def _batches(self, lengths):
        """Batches of packed rows over the variants (each row a list of indices into the plan).

        Rows are built by :func:`pack_rows` from the suffix lengths, then grouped so that rows x width stays
        within ``batch_tokens`` (rows come in decreasing width, so a batch's rows have similar widths).
        """
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

    def _suffix_words(self, plan: _Plan, ctx: _Context, lay: _Layout):
        """The original words in each variant's suffix, (V, W) grids: their index (clipped to N − 1 where
        ``valid`` is False), the packed column of their last token, and whether they count (sink rule in the module
        docstring; the inserted word is never among them)."""
        n_words = len(ctx.nodes)
        first = plan.first_kept[lay.variants]
        word = first[:, None] + np.arange(max(int((n_words - first).max()), 1))
        valid = word < n_words
        word = np.minimum(word, n_words - 1)
        resume = plan.resume[lay.variants][:, None]
        column = np.where(valid, lay.offsets[:, None] + ctx.n_inserted + ctx.spans[word, 1] - 1 - resume, 0)
        variant_start = ctx.spans[word, 0] + plan.shift[lay.variants][:, None]
        counted = valid & ~ctx.sink[word] & ~(ctx.exclude_sink & (variant_start == 0))
        return word, valid, column, counted

    def _variant_batch(self, batch_rows, plan: _Plan, ctx: _Context, results: _Results, variant_loss: bool):
        """One batch of variants: their suffix pass, each layer reduced to the measure inside its hook
        (prefix words' vectors from the full pass, suffix words' from the batch), and their losses when asked."""
        device, wd = ctx.ids.device, self.work_dtype
        lay = _layout(batch_rows, plan.length)
        n_words = len(ctx.nodes)
        # prefix words (w < p, counted in the full context) from the full pass
        prefix = (np.arange(n_words)[None] < plan.positions[lay.variants][:, None]) & ~ctx.sink[None]
        prefix_onehot = ctx.onehot[None] * _on(device, prefix).to(wd)[..., None]              # (V, N, n)
        # suffix words from the batch; per context length n only the words w < n count
        word, valid, column, counted = self._suffix_words(plan, ctx, lay)
        word_t = _on(device, word)
        suffix_onehot = ctx.onehot[word_t] * _on(device, counted).to(wd)[..., None]           # (V, W, n)
        suffix_onehot = suffix_onehot[None] * (word_t[None] < ctx.lengths[:, None, None])[..., None]
        counts = prefix_onehot.sum(1)[None] + suffix_onehot.sum(2)                            # (K, V, n)
        out_rows = _on(device, lay.variants)
        layer_row = {k: r for r, k in enumerate(ctx.layers)}

        def reduce(k, suffix_vectors):
            sums = torch.einsum("vwn,wd->vnd", prefix_onehot, ctx.word_vecs[k])[None]
            if suffix_vectors is not None:
                sums = sums + torch.einsum("kvwn,vwd->kvnd", suffix_onehot, suffix_vectors)
            else:
                sums = sums.expand(len(ctx.lengths), -1, -1, -1)
            results.edited[:, out_rows, layer_row[k]] = _measured(ctx.measure, sums, counts).to(wd)

        if lay.width == 0:  # only the last word deleted: the variant is a prefix of the full context
            for k in ctx.layers:
                reduce(k, None)
            return
        batch_ids, position_ids, mask, cache = self._packed_inputs(plan, ctx, lay)
        gather_t, variant_row_t = _on(device, column), _on(device, lay.row_of)[:, None]

        def on_layer(k, hidden):
            check_finite(self.model, hidden, where_layer(k))  # padding columns see only themselves: finite too
            reduce(k, hidden[variant_row_t, gather_t].to(wd))

        out = self._forward(batch_ids, position_ids, mask, cache, ctx.layers, on_layer, need_head=variant_loss)
        if variant_loss:
            inserted, following = self._variant_losses(out.last_hidden_state, batch_ids, plan, ctx, lay, word, valid)
            results.inserted[out_rows] = inserted.to(wd)
            results.following[:, out_rows] = following.to(wd)

    def _packed_inputs(self, plan: _Plan, ctx: _Context, lay: _Layout):
        """The batch's suffix pass inputs: token ids and position ids (R, width), attention masks, and the shared
        cache (the full pass's first ``max cut`` keys). Suffix token i of a variant cut at s sits at position s + i;
        a padding column gets no prefix and a segment of its own (it sees only itself)."""
        from transformers import DynamicCache

        device = ctx.ids.device
        cut = plan.cut[lay.variants][lay.v_of]
        source = _suffix_source(lay.local, plan.resume[lay.variants][lay.v_of], ctx.n_inserted)
        shape = (lay.n_rows, lay.width)
        batch_ids = torch.full(shape, int(ctx.ids[0]), dtype=torch.long, device=device)
        batch_ids[_on(device, lay.row), _on(device, lay.col)] = ctx.ext_ids[_on(device, source)]
        query_prefix, position_ids = np.zeros(shape, dtype=np.int64), np.zeros(shape, dtype=np.int64)
        query_start = np.tile(np.arange(lay.width), (lay.n_rows, 1))
        query_prefix[lay.row, lay.col] = cut
        query_start[lay.row, lay.col] = lay.offsets[lay.v_of]
        position_ids[lay.row, lay.col] = cut + lay.local
        cache_len = int(plan.cut[lay.variants].max())
        cache = DynamicCache()
        for layer_idx, (keys, values) in enumerate(ctx.kv):
            cache.update(keys[:, :, :cache_len].expand(lay.n_rows, -1, -1, -1),
                         values[:, :, :cache_len].expand(lay.n_rows, -1, -1, -1), layer_idx)
        mask = self._masks(torch.from_numpy(query_prefix), torch.from_numpy(query_start), cache_len)
        return batch_ids, _on(device, position_ids), mask, cache

    def _variant_losses(self, final_hidden, batch_ids, plan: _Plan, ctx: _Context, lay: _Layout, word, valid):
        """Word losses of one batch's variants: (inserted (V,), following (K, V)).

        Token i of a suffix is predicted from suffix token i − 1 (its packed column minus one) or, for i = 0, from
        the prefix (``ctx.boundary_loss``). Token losses are summed per word (slot 0: the inserted word; slot 1 + j:
        the j-th original word of the suffix); following = mean over the counted-length original words with a
        defined loss (a word holding token 0 has none).
        """
        device = ctx.ids.device
        first = lay.local == 0
        token_loss = torch.empty(len(lay.local), dtype=torch.float32, device=device)
        token_loss[_on(device, first)] = ctx.boundary_loss[_on(device, lay.variants[lay.v_of[first]])]
        row, col = _on(device, lay.row[~first]), _on(device, lay.col[~first])
        token_loss[_on(device, ~first)] = _target_losses(self.model, final_hidden[row, col - 1], batch_ids[row, col])
        m = ctx.n_inserted
        first_kept = plan.first_kept[lay.variants][lay.v_of]
        original = np.clip(plan.resume[lay.variants][lay.v_of] + lay.local - m, 0, len(ctx.ids) - 1)
        slot = np.where(lay.local < m, 0, 1 + ctx.word_of_token[original] - first_kept)
        word_loss = torch.zeros((len(lay.variants), 1 + word.shape[1]), dtype=torch.float32, device=device)
        word_loss.index_put_((_on(device, lay.v_of), _on(device, slot)), token_loss, accumulate=True)
        following = word_loss[:, 1:]
        in_length = _on(device, word)[None] < ctx.lengths[:, None, None]                      # (K, V, W)
        listed = _on(device, valid)[None] & in_length & ~following.isnan()[None]
        return word_loss[:, 0], _masked_mean(following[None].expand(len(ctx.lengths), -1, -1), listed)
