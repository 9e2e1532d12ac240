"""Walk -> token ids with an exact word-to-token-span map (docs/methods.md, Prompts).

A walk is a list of words; the prompt is the words joined by single spaces. Every occurrence of a word, the first
included, is encoded in its leading-space form (" apple"), so all occurrences of a word have the same token span.
The model's BOS token comes first when its tokenizer adds one. Words may span several tokens.

The ids are the tokenizer's own encoding of " " + " ".join(words), or of " ".join(words) for tokenizers with a
SentencePiece normaliser (Llama-2, Mistral-v0.1), which put the word boundary "▁" before the text themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from iclnb.core.errors import IclnbError

POOLS = ("last", "mean", "first")


@dataclass
class EncodedWalk:
    """input_ids: 1-D token ids; spans: (n_words, 2) int array of [start, end) token ranges; bos: BOS prepended."""

    input_ids: torch.Tensor
    spans: np.ndarray
    bos: bool
    words: list

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def sink_words(self) -> np.ndarray:
        """Boolean mask of the words whose span contains token position 0 (the attention sink)."""
        return self.spans[:, 0] == 0


def check_pool(pool: str) -> None:
    if pool not in POOLS:
        raise IclnbError(f"pool must be one of {', '.join(POOLS)}; got '{pool}'")


def _adds_boundary_itself(tokenizer, spaced: list[int], bare: list[int]) -> bool:
    """Whether the bare word's tokens already start with the piece that the leading space becomes.

    A SentencePiece normaliser prepends "▁" and maps spaces to "▁", so " apple" becomes "▁▁apple" (tokens '▁',
    '▁apple') while "apple" becomes "▁apple", the word's form after a space in the prompt. Byte-level (GPT-2) and
    gemma tokenizers turn "apple" into 'apple', with no boundary piece. Comparing the token strings, not the ids, keeps
    this independent of how the pieces happen to be merged.
    """
    s = "".join(tokenizer.convert_ids_to_tokens(spaced))
    b = "".join(tokenizer.convert_ids_to_tokens(bare))
    marker = s[: len(s) - len(b)]
    return bool(b) and bool(marker) and s.endswith(b) and b.startswith(marker)


def word_token_ids(tokenizer, word: str) -> list[int]:
    """Token ids of a word in its leading-space form (as after a space inside the prompt), with no special tokens.

    The encoding of " " + word; for a tokenizer whose normaliser prepends the word boundary itself (SentencePiece,
    see ``_adds_boundary_itself``) that has a spurious extra "▁", and the encoding of the word alone is used.
    """
    ids = list(tokenizer(" " + word, add_special_tokens=False)["input_ids"])
    bare = list(tokenizer(word, add_special_tokens=False)["input_ids"])
    if ids != bare and _adds_boundary_itself(tokenizer, ids, bare):
        ids = bare
    if not ids:
        raise IclnbError(f"the word '{word}' encodes to no tokens")
    return ids


def tokenization_report(tokenizer, words) -> dict:
    """Number of tokens of every distinct word (multi-token words are allowed; their spans get pooled)."""
    return {word: len(word_token_ids(tokenizer, word)) for word in dict.fromkeys(words)}


def check_fits(model, words, n_words: int, *, extra_tokens: int = 0, what: str = "context length") -> dict:
    """Refuse, with one line, a context of ``n_words`` words drawn from ``words`` that may not fit ``model``.

    ``model`` is a loaded Model or a :class:`~iclnb.models.ModelSpec` (anything with ``tokenizer``,
    ``max_positions`` and ``name``). The bound assumes every word takes as many tokens as the longest of ``words``,
    plus ``extra_tokens`` (an inserted word, say) and one BOS token. Returns the tokenization report (tokens of every
    word), which experiments record.
    """
    report = tokenization_report(model.tokenizer, words)
    longest = max(report.values())
    need = n_words * longest + extra_tokens + 1
    if need > model.max_positions:
        most = max((model.max_positions - 1 - extra_tokens) // longest, 0)
        raise IclnbError(f"{what} {n_words} may need {need} tokens, more than the {model.max_positions} {model.name} "
                         f"can read; use at most {most}")
    return report


def first_token_ids(tokenizer, words) -> list[int]:
    """First token of each word's leading-space form (for next-token probability mass on graph words)."""
    firsts = [word_token_ids(tokenizer, w)[0] for w in words]
    if len(set(firsts)) != len(firsts):
        clashes = sorted({w for w, f in zip(words, firsts) if firsts.count(f) > 1})
        raise IclnbError(f"the words {clashes} share their first token, so their next-token mass cannot be separated")
    return firsts


def encode_walk(tokenizer, words, max_tokens: int | None = None, add_bos: bool | None = None) -> EncodedWalk:
    """Encode a walk (list of words) with an exact word-to-token-span map.

    The ids are the BOS (if any) followed by ``word_token_ids`` of each word in turn; see the module docstring for
    the prompt text they encode.

    add_bos: prepend the tokenizer's BOS; default: exactly when the tokenizer itself adds one.
    max_tokens: refuse (IclnbError) a walk longer than the model's context instead of truncating it.
    """
    from iclnb.models import adds_bos

    words = [str(w) for w in words]
    if not words:
        raise IclnbError("the walk is empty")
    bad = [w for w in words if not w or w != w.strip() or " " in w]
    if bad:
        raise IclnbError(f"words must be non-empty and contain no spaces; got {bad[:3]!r}")
    if add_bos is None:
        add_bos = adds_bos(tokenizer)
    if add_bos and tokenizer.bos_token_id is None:
        raise IclnbError("add_bos=True but the tokenizer has no BOS token")
    pieces = {w: word_token_ids(tokenizer, w) for w in dict.fromkeys(words)}
    lengths = np.fromiter((len(pieces[w]) for w in words), dtype=np.int64, count=len(words))
    offset = 1 if add_bos else 0
    ends = offset + np.cumsum(lengths)
    spans = np.stack([ends - lengths, ends], axis=1)
    total = int(ends[-1])
    if max_tokens is not None and total > max_tokens:
        per_word = total / len(words)
        raise IclnbError(
            f"the walk of {len(words)} words encodes to {total} tokens, more than the model's context of {max_tokens} "
            f"tokens; use at most about {int((max_tokens - offset) / per_word)} words"
        )
    ids = ([tokenizer.bos_token_id] if add_bos else []) + [t for w in words for t in pieces[w]]
    return EncodedWalk(torch.tensor(ids, dtype=torch.long), spans, bool(add_bos), words)


def pool_words(resid: torch.Tensor, spans: np.ndarray, pool: str = "last") -> torch.Tensor:
    """Word vectors from token vectors.

    resid: (tokens, d) or (batch, tokens, d) for one encoding's full token range; returns (n_words, d) or
    (batch, n_words, d): the last token of each span (default), the first, or the mean over the span.
    """
    check_pool(pool)
    spans = np.asarray(spans)
    if pool == "last":
        return resid[..., torch.as_tensor(spans[:, 1] - 1), :]
    if pool == "first":
        return resid[..., torch.as_tensor(spans[:, 0]), :]
    zero = torch.zeros_like(resid[..., :1, :])
    cumulative = torch.cat([zero, resid.cumsum(dim=-2)], dim=-2)
    starts, ends = torch.as_tensor(spans[:, 0]), torch.as_tensor(spans[:, 1])
    sums = cumulative[..., ends, :] - cumulative[..., starts, :]
    return sums / (ends - starts).to(resid.dtype)[:, None]


def pad_batch(sequences, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D id tensors into (batch, max_len) ids and an attention mask (1 = real token)."""
    sequences = [torch.as_tensor(s, dtype=torch.long) for s in sequences]
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask
