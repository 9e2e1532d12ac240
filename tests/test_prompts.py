"""Walk encoding: exact word-to-token spans, BOS handling, multi-token words, pooling, sink exclusion."""

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, decoders, processors, trainers
from transformers import PreTrainedTokenizerFast

from iclnb.core.errors import IclnbError
from iclnb.prompts import encode_walk, first_token_ids, pad_batch, pool_words, tokenization_report
from tests.tiny_models import tiny_model

CORPUS = [" apple bird car egg house milk plane opera box sand sun mango rock math code phone"] * 50


def _tokenizer(with_bos: bool) -> PreTrainedTokenizerFast:
    """A small byte-level BPE trained in-process: common words are one token, rare ones split into several."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=["<bos>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    if with_bos:
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", pad_token="<pad>")


def _sentencepiece_tokenizer(with_bos: bool) -> PreTrainedTokenizerFast:
    """A BPE laid out like Llama-2's and Mistral-v0.1's tokenizer.json: no pre-tokenizer, and a normaliser that
    prepends "▁" and maps spaces to "▁". Merges are learned word by word (Metaspace), as SentencePiece learns them,
    so no piece spans "▁▁"."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "<pad>"],
                                  initial_alphabet=["▁"] + list("abcdefghijklmnopqrstuvwxyz"))
    tok.train_from_iterator(CORPUS, trainer)
    tok.pre_tokenizer = None
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    if with_bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", pad_token="<pad>", unk_token="<unk>")


WALK = ["apple", "zyxwv", "bird", "apple", "zyxwv", "quokka", "bird"]


@pytest.mark.parametrize("with_bos", [False, True])
def test_spans_cover_each_word_exactly(with_bos):
    tok = _tokenizer(with_bos)
    enc = encode_walk(tok, WALK)
    assert enc.bos is with_bos
    offset = 1 if with_bos else 0
    if with_bos:
        assert enc.input_ids[0].item() == tok.bos_token_id
    assert enc.spans[0, 0] == offset and enc.spans[-1, 1] == len(enc)
    assert (enc.spans[1:, 0] == enc.spans[:-1, 1]).all()  # contiguous, no gaps
    for word, (start, end) in zip(WALK, enc.spans):
        assert tok.decode(enc.input_ids[start:end]) == " " + word
    # every occurrence of a word has the same ids, the first included
    firsts = {}
    for word, (start, end) in zip(WALK, enc.spans):
        ids = enc.input_ids[start:end].tolist()
        assert firsts.setdefault(word, ids) == ids
    report = tokenization_report(tok, WALK)
    assert report["apple"] == 1 and report["zyxwv"] > 1  # multi-token words are allowed


@pytest.mark.parametrize("with_bos", [False, True])
def test_sentencepiece_normaliser_gives_single_spaced_words(with_bos):
    tok = _sentencepiece_tokenizer(with_bos)
    # the trap: the normaliser's own "▁" plus the space's makes " apple" a lone "▁" and then "▁apple"
    assert tok.convert_ids_to_tokens(tok(" apple", add_special_tokens=False)["input_ids"]) == ["▁", "▁apple"]
    enc = encode_walk(tok, WALK)
    assert enc.bos is with_bos
    # the tokenizer's own encoding of the prompt, BOS included when it adds one
    assert enc.input_ids.tolist() == tok(" ".join(WALK))["input_ids"]
    assert tok.decode(enc.input_ids, skip_special_tokens=True) == " ".join(WALK)  # no doubled spaces
    offset = 1 if with_bos else 0
    assert enc.spans[0, 0] == offset and enc.spans[-1, 1] == len(enc)
    assert (enc.spans[1:, 0] == enc.spans[:-1, 1]).all()
    pieces = tok.convert_ids_to_tokens(enc.input_ids.tolist())
    firsts = {}
    for word, (start, end) in zip(WALK, enc.spans):
        assert "".join(pieces[start:end]) == "▁" + word  # exactly the word and its one boundary
        ids = enc.input_ids[start:end].tolist()
        assert firsts.setdefault(word, ids) == ids
    report = tokenization_report(tok, WALK)
    assert report["apple"] == 1 and report["bird"] == 1 and report["zyxwv"] > 1
    words = CORPUS[0].split()
    assert tok.convert_ids_to_tokens(first_token_ids(tok, words)) == ["▁" + w for w in words]


def test_byte_level_lone_space_piece_keeps_the_space():
    # byte-level BPE also splits off a lone space piece before a rare word, but there the bare word has no boundary
    # piece and dropping the space would glue the word to its predecessor
    tok = _tokenizer(False)
    spaced = tok.convert_ids_to_tokens(tok(" zyxwv", add_special_tokens=False)["input_ids"])
    assert spaced == ["Ġ"] + tok.convert_ids_to_tokens(tok("zyxwv", add_special_tokens=False)["input_ids"])
    enc = encode_walk(tok, ["apple", "zyxwv"])
    assert enc.input_ids.tolist() == tok(" apple zyxwv")["input_ids"]
    assert tok.decode(enc.input_ids[enc.spans[1, 0]:enc.spans[1, 1]]) == " zyxwv"


def test_text_tokenization_agrees_on_a_real_tokenizer():
    from iclnb.models import load_model

    model = load_model("gemma-3-270m")
    words = "apple bird car egg house milk plane opera box sand sun mango rock math code phone".split()
    walk = [words[i] for i in np.random.default_rng(0).integers(0, 16, 200)]
    enc = encode_walk(model.tokenizer, walk)
    assert enc.bos
    assert enc.input_ids.tolist() == model.tokenizer(" " + " ".join(walk))["input_ids"]
    assert len(set(first_token_ids(model.tokenizer, words))) == 16


def test_sink_words_without_bos():
    enc = encode_walk(_tokenizer(False), WALK)
    assert enc.sink_words().tolist() == [True] + [False] * (len(WALK) - 1)
    assert not encode_walk(_tokenizer(True), WALK).sink_words().any()


def test_pooling_last_first_mean():
    enc = encode_walk(_tokenizer(True), WALK)
    resid = torch.randn(len(enc), 3)
    last, first, mean = (pool_words(resid, enc.spans, p) for p in ("last", "first", "mean"))
    for i, (s, e) in enumerate(enc.spans):
        torch.testing.assert_close(last[i], resid[e - 1])
        torch.testing.assert_close(first[i], resid[s])
        torch.testing.assert_close(mean[i], resid[s:e].mean(0))
    batched = pool_words(resid[None].repeat(2, 1, 1), enc.spans, "mean")
    torch.testing.assert_close(batched[1], mean)


def test_word_vector_is_causal_and_aligned():
    """The vector of word i depends on words <= i only, and does depend on word i itself.

    Taking the first token of the next word (an off-by-one in the span end) would break the first property; taking
    the previous word's last token would break the second.
    """
    tok = _tokenizer(True)
    model, _ = tiny_model("llama")
    with torch.no_grad():
        model.hf.resize_token_embeddings(len(tok))
        model.hf.get_input_embeddings().weight.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(0))
    base = ["apple", "bird", "car", "egg", "house"]
    def vectors(words):
        enc = encode_walk(tok, words)
        cap = model.run(enc.input_ids, layers=[1])
        return pool_words(cap.resid[1][0], enc.spans, "last")
    ref = vectors(base)
    changed_next = vectors(base[:3] + ["milk"] + base[4:])  # word 3 changes
    torch.testing.assert_close(ref[:3], changed_next[:3])
    assert (ref[3] - changed_next[3]).abs().max() > 1e-4


def test_bad_walks_are_refused():
    tok = _tokenizer(False)
    with pytest.raises(IclnbError, match="empty"):
        encode_walk(tok, [])
    with pytest.raises(IclnbError, match="no spaces"):
        encode_walk(tok, ["two words"])
    with pytest.raises(IclnbError, match="more than the model's context of 5 tokens"):
        encode_walk(tok, WALK, max_tokens=5)


def test_pad_batch():
    ids, mask = pad_batch([torch.tensor([1, 2, 3]), torch.tensor([4])], pad_id=9)
    assert ids.tolist() == [[1, 2, 3], [4, 9, 9]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
