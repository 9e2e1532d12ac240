"""One forward pass that yields the requested residual-stream layers and, when asked, the per-token loss.

Forward hooks on the decoder blocks copy only the requested layers (and positions) to float32. Without a loss the
pass stops right after the deepest requested block, so the later blocks and the LM head never run. With a loss the
LM head is applied in chunks of positions, so the full tokens x vocabulary logits never exist in float32.

Every captured layer and the losses are checked for inf/NaN at real (non-padding) tokens (:func:`check_finite`): a
dtype whose range the activations leave (float16 for gemma-3-270m) stops the run with one IclnbError instead of
turning every number after it into NaN or 0.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from iclnb.core.errors import IclnbError
from iclnb.core.layers import LayerDict

# Upper bound on the float32 logits held at once while computing the loss (elements): 2**27 = 512 MiB. Smaller
# chunks make the LM-head matmul measurably slower on CPU (128 positions of gemma's 262k vocabulary: +30%).
LOGIT_CHUNK_ELEMENTS = 1 << 27

#: What to run with instead when activations overflow a half-precision dtype.
_WIDER_DTYPE = {torch.float16: "float32 (or bfloat16 on a GPU)", torch.bfloat16: "float32"}


class StopForward(Exception):
    """Raised by the hook of the deepest requested block to end the forward pass early."""


@dataclass
class Capture:
    """What one pass returns.

    resid[k]: float32 (batch, kept positions, d) for each requested layer k (ints, 0-based, and/or "embed"); any
        spelling of a captured layer finds it (``resid[-1]`` is the last block's).
    loss: float32 (batch, tokens-1): loss[b, t] = cross-entropy of token t+1 given tokens <= t; NaN where token t+1
        is padding. None unless asked.
    token_probs: float32 (batch, tokens, len(token_ids)) next-token probabilities of the given token ids, or None.
    """

    resid: dict = field(default_factory=dict)
    loss: torch.Tensor | None = None
    token_probs: torch.Tensor | None = None


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _all_finite(values: torch.Tensor) -> bool:
    """Whether every element is finite. A float32 sum is NaN or inf as soon as one element is, and on CPU one sum
    costs ~20x less than ``isfinite().all()`` (~30 us against ~600 us for 500 x 640 values); a sum that overflows
    although every element is finite (float32 values near 1e38) is told apart by the exact test."""
    return bool(torch.isfinite(values.sum(dtype=torch.float32))) or bool(torch.isfinite(values).all())


def check_finite(model, values: torch.Tensor, where: str, valid: torch.Tensor | None = None) -> None:
    """Refuse inf/NaN in ``values`` (a captured layer, losses) with one IclnbError naming the model's dtype.

    A residual stream that leaves the range of a half-precision dtype (float16 tops out at 65504) turns into inf,
    then NaN, and every number computed from it is wrong: it must stop the run, not reach the results. ``where``
    says where, for the message (see :func:`where_layer`). valid: optional boolean mask over the leading dimensions
    of ``values`` (True at real tokens); positions outside it (padding, NaN by design in the losses) are ignored.
    The cost is one float32 sum over ``values`` (see :func:`_all_finite`); the valid positions are looked at only
    when that finds something.
    """
    if _all_finite(values):
        return
    if valid is not None and _all_finite(values[valid.to(values.device)]):
        return
    name, dtype = getattr(model, "name", "the model"), model.dtype
    if dtype in _WIDER_DTYPE:
        raise IclnbError(f"{name}'s activations overflow {_dtype_name(dtype)} {where}; run with dtype "
                         f"{_WIDER_DTYPE[dtype]}")
    raise IclnbError(f"{name} gives inf/NaN {where} even in {_dtype_name(dtype)}, so no other dtype helps: its "
                     "weights or its input are broken; check the model")


def where_layer(layer) -> str:
    """``where`` of :func:`check_finite` for a captured layer (an int or "embed")."""
    if layer == "embed":
        return "in the embeddings (inf/NaN in the input of block 0)"
    return f"at layer {layer} (inf/NaN in the residual stream)"


#: ``where`` of :func:`check_finite` for the losses.
WHERE_LOSS = "before the next-token loss (inf/NaN losses)"


def _hidden_of(output):
    return output[0] if isinstance(output, (tuple, list)) else output


@contextmanager
def layer_hooks(blocks, layers, on_layer, stop_early: bool):
    """Forward hooks that hand each requested layer's residual stream to ``on_layer(k, hidden)``.

    layers: canonical indices (ints and/or "embed", the input of block 0). With ``stop_early`` the hook of the
    deepest one raises ``StopForward`` (the caller catches it), so later blocks never run. The hooks are always
    removed on exit.
    """
    ints = [k for k in layers if k != "embed"]
    deepest = max(ints) if ints else -1

    def block_hook(index):
        def hook(module, args, output):
            on_layer(index, _hidden_of(output))
            if stop_early and index == deepest:
                raise StopForward

        return hook

    def embed_hook(module, args, kwargs):
        on_layer("embed", args[0] if args else kwargs["hidden_states"])
        if stop_early and deepest == -1:
            raise StopForward

    handles = []
    try:
        if "embed" in layers:
            handles.append(blocks[0].register_forward_pre_hook(embed_hook, with_kwargs=True))
        for k in ints:
            handles.append(blocks[k].register_forward_hook(block_hook(k)))
        yield
    finally:
        for handle in handles:
            handle.remove()


class CaptureMixin:
    """``Model.run``: capture of chosen layers in one pass (mixed into ``iclnb.models.Model``)."""

    def _as_batch(self, input_ids, attention_mask):
        ids = torch.as_tensor(input_ids)
        if ids.dim() == 1:
            ids = ids[None]
        if ids.dim() != 2:
            raise IclnbError(f"input_ids must be 1-D or (batch, tokens), got shape {tuple(ids.shape)}")
        if ids.shape[1] > self.max_positions:
            raise IclnbError(
                f"the input has {ids.shape[1]} tokens, more than the {self.max_positions} positions {self.name} supports; "
                "use a shorter walk"
            )
        ids = ids.to(self.device, dtype=torch.long)
        if attention_mask is not None:
            attention_mask = torch.as_tensor(attention_mask)
            if attention_mask.dim() == 1:
                attention_mask = attention_mask[None]
            if attention_mask.shape != ids.shape:
                raise IclnbError(
                    f"attention_mask shape {tuple(attention_mask.shape)} differs from input_ids {tuple(ids.shape)}"
                )
            attention_mask = attention_mask.to(self.device, dtype=torch.long)
        return ids, attention_mask

    def run(self, input_ids, layers=(), loss: bool = False, attention_mask=None, positions=None, token_ids=None):
        """Run one forward pass and return a :class:`Capture`.

        input_ids: 1-D or (batch, tokens). Sequences of different lengths go right-padded with ``attention_mask``.
        layers: layer indices (see ``Model.resolve_layers``); ``"embed"`` is the input of block 0.
        loss: also return the next-token cross-entropy per position.
        positions: optional 1-D token indices to keep in ``resid`` (the same for every sequence of the batch).
        token_ids: optional token ids whose next-token probabilities to return at every position.
        Raises IclnbError when a captured layer or the loss holds inf/NaN at a real token (:func:`check_finite`).
        """
        ids, mask = self._as_batch(input_ids, attention_mask)
        wanted = self.resolve_layers(layers) if layers is not None and layers != () else []
        need_head = loss or token_ids is not None
        keep = None if positions is None else torch.as_tensor(positions, dtype=torch.long)
        captured: dict = {}
        valid = None if mask is None else mask > 0

        def store(name, hidden):
            check_finite(self, hidden, where_layer(name), valid)
            if keep is not None:
                hidden = hidden[:, keep.to(hidden.device)]
            captured[name] = hidden.detach().to(torch.float32, copy=True)

        if not wanted and not need_head:
            return Capture()
        with layer_hooks(self.blocks, wanted, store, stop_early=not need_head), torch.inference_mode():
            try:
                out = self.hf.base_model(input_ids=ids, attention_mask=mask, use_cache=False)
            except StopForward:
                out = None
            result = Capture(resid=LayerDict({k: captured[k] for k in wanted}, n_layers=self.n_layers,
                                             model_name=self.name))
            if need_head:
                self._head_outputs(out.last_hidden_state, ids, mask, loss, token_ids, result)
        return result

    # ---- the LM head, in chunks -------------------------------------------------------------------------------
    def _logits(self, hidden):
        logits = self.hf.get_output_embeddings()(hidden).float()
        cap = getattr(self.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def _head_outputs(self, hidden, ids, mask, want_loss, token_ids, result):
        batch, tokens = ids.shape
        vocab = self.hf.get_output_embeddings().weight.shape[0]
        chunk = max(1, LOGIT_CHUNK_ELEMENTS // (batch * vocab))
        losses = torch.full((batch, max(tokens - 1, 0)), float("nan"), dtype=torch.float32, device=ids.device)
        select = None if token_ids is None else torch.as_tensor(token_ids, dtype=torch.long, device=ids.device)
        probs = None if select is None else torch.empty((batch, tokens, len(select)), dtype=torch.float32, device=ids.device)
        for start in range(0, tokens, chunk):
            stop = min(tokens, start + chunk)
            logits = self._logits(hidden[:, start:stop])
            if select is not None:
                lse = torch.logsumexp(logits, dim=-1)
                # an inf/NaN logit shows in its row's logsumexp; the losses are checked below
                check_finite(self, lse, "before the next-token probabilities (inf/NaN logits)",
                             None if mask is None else mask[:, start:stop] > 0)
                probs[:, start:stop] = torch.exp(logits[..., select] - lse[..., None])
            last = min(stop, tokens - 1)
            if want_loss and last > start:
                targets = ids[:, start + 1 : last + 1]
                flat = logits[:, : last - start].reshape(-1, vocab)
                losses[:, start:last] = torch.nn.functional.cross_entropy(
                    flat, targets.reshape(-1), reduction="none"
                ).view(batch, last - start)
        if want_loss:
            valid = None if mask is None else (mask[:, 1:] > 0) & (mask[:, :-1] > 0)
            check_finite(self, losses, WHERE_LOSS, valid)
            if valid is not None:
                losses = losses.masked_fill(~valid, float("nan"))
            result.loss = losses
        if probs is not None:
            if mask is not None:
                probs = probs.masked_fill(~(mask > 0)[..., None], float("nan"))
            result.token_probs = probs
