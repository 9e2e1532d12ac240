"""Tiny random-init models of every supported decoder family, built in-process from a config (no download)."""

from __future__ import annotations

import torch
import transformers as tf

from iclnb.models import Model

VOCAB = 97


def _configs():
    common = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                  max_position_embeddings=256)
    return {
        "llama": (tf.LlamaConfig(num_key_value_heads=2, **common), tf.LlamaForCausalLM, lambda m: m.model.norm),
        "mistral": (tf.MistralConfig(num_key_value_heads=2, sliding_window=16, **common), tf.MistralForCausalLM,
                    lambda m: m.model.norm),
        "qwen2": (tf.Qwen2Config(num_key_value_heads=2, **common), tf.Qwen2ForCausalLM, lambda m: m.model.norm),
        "gemma2": (tf.Gemma2Config(num_key_value_heads=2, head_dim=8, sliding_window=8, final_logit_softcapping=5.0,
                                   **common), tf.Gemma2ForCausalLM, lambda m: m.model.norm),
        "gemma3": (tf.Gemma3TextConfig(num_key_value_heads=1, head_dim=8, sliding_window=8, **common),
                   tf.Gemma3ForCausalLM, lambda m: m.model.norm),
        "gpt2": (tf.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=4, n_head=4, n_positions=256),
                 tf.GPT2LMHeadModel, lambda m: m.transformer.ln_f),
        "gpt_neox": (tf.GPTNeoXConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                      num_attention_heads=4, max_position_embeddings=256), tf.GPTNeoXForCausalLM,
                     lambda m: m.gpt_neox.final_layer_norm),
    }


FAMILIES = list(_configs())


def tiny_model(family: str, seed: int = 0, tokenizer=None) -> tuple[Model, callable]:
    """A tiny random-init model wrapped as iclnb's Model, and a function giving its final norm module."""
    config, cls, final_norm = _configs()[family]
    torch.manual_seed(seed)
    hf = cls(config).eval()
    # Random init gives near-zero residuals in some families; scale the weights up a little so that layer
    # outputs differ visibly from one another (the tests compare layers and must tell them apart).
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() > 1:
                p.mul_(3.0)
    return Model(hf, tokenizer, name=f"tiny-{family}"), final_norm(hf)


def tiny_word_model(seed: int = 1) -> Model:
    """A tiny GPT-2 that reads words: the test word tokenizer (tests/test_prompts.py) with its embeddings resized
    to the tokenizer and drawn afresh (seeded), so that different words get visibly different vectors."""
    from tests.test_prompts import _tokenizer

    tok = _tokenizer(False)
    model, _ = tiny_model("gpt2", tokenizer=tok)
    with torch.no_grad():
        model.hf.resize_token_embeddings(len(tok))
        model.hf.get_input_embeddings().weight.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(seed))
    return model
