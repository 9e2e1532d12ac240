"""Walks in, word-level representations and losses out: the step every experiment shares.

``represent_walks`` encodes each walk (exact word spans), runs batches of them through the model (one pass each,
right-padded), and pools every requested layer to one float32 vector per word occurrence. Results never depend on
the batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from iclnb.prompts import EncodedWalk, encode_walk, pad_batch, pool_words


@dataclass
class WordStates:
    """One walk's word-level view of a forward pass.

    reps: layer -> float32 array (n_words, d), the pooled residual of each word occurrence.
    word_loss: (n_words,) float32: the summed next-token loss of each word's tokens given everything before it
        (NaN for a first word that holds token 0, which nothing predicts); None unless asked.
    token_probs: (n_words, len(token_ids)) next-token probabilities at each word's last token; None unless asked.
    sink: (n_words,) bool, the words whose span holds token position 0 (excluded from geometry by default).
    """

    words: list
    encoding: EncodedWalk
    reps: dict
    word_loss: np.ndarray | None
    token_probs: np.ndarray | None
    sink: np.ndarray


def word_losses(token_loss: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """Sum the token losses of each word's span. token_loss[t] is the loss of token t+1 given tokens <= t."""
    padded = np.concatenate([[np.nan], np.asarray(token_loss, dtype=np.float64)])  # padded[t] = loss of token t
    cumulative = np.concatenate([[0.0], np.nancumsum(padded)])
    sums = cumulative[spans[:, 1]] - cumulative[spans[:, 0]]
    sums[spans[:, 0] == 0] = np.nan  # the loss of token 0 is undefined
    return sums.astype(np.float32)


def represent_walks(model, walks, layers, pool: str = "last", loss: bool = False, token_ids=None,
                    batch_size: int = 8, progress=None) -> list[WordStates]:
    """Word-level representations (and losses) of each walk (a list of words) at the given layers.

    One forward pass per batch of walks; ``progress`` is an optional callable wrapping the batch iterator.
    """
    layers = model.resolve_layers(layers) if layers is not None else []
    encodings = [encode_walk(model.tokenizer, words, max_tokens=model.max_positions) for words in walks]
    order = np.argsort([-len(e) for e in encodings], kind="stable")  # similar lengths together: less padding
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    out: list = [None] * len(encodings)
    pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    for batch in (progress(batches) if progress else batches):
        ids, mask = pad_batch([encodings[i].input_ids for i in batch], pad_id=pad_id)
        cap = model.run(ids, layers=layers, loss=loss, attention_mask=mask, token_ids=token_ids)
        for row, index in enumerate(batch):
            enc = encodings[index]
            reps = {k: pool_words(cap.resid[k][row, : len(enc)], enc.spans, pool).cpu().numpy() for k in layers}
            losses = word_losses(cap.loss[row, : len(enc) - 1].cpu().numpy(), enc.spans) if loss else None
            probs = None
            if token_ids is not None:
                probs = cap.token_probs[row, torch.as_tensor(enc.spans[:, 1] - 1)].cpu().numpy()
            out[index] = WordStates(list(walks[index]), enc, reps, losses, probs, enc.sink_words())
    return out
