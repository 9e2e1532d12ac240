"""A dtype whose range the activations leave stops the run with one clear error instead of giving wrong numbers.

The tiny model below has one block whose MLP is scaled up so that its residual stream reaches ~1e5: more than
float16 holds (65504), well inside float32. In float16 the captured layers from that block on, and the losses, turn
into inf/NaN; iclnb must refuse that and say which dtype to use instead.
"""

import subprocess
import sys

import numpy as np
import pytest
import torch

from iclnb.core.errors import IclnbError
from iclnb.methods.loo import Insert, LooEngine, map_encoder
from tests.test_loo_engine import INTRUDER, _setup
from tests.tiny_models import tiny_model

FLOAT16_MAX = 65504.0  # the largest finite float16 (IEEE 754 binary16)


def _loud_model(dtype):
    """tiny llama whose block 1 adds ~1e5 to the residual stream (its MLP's up and down projections x 1000)."""
    model, _ = tiny_model("llama")
    with torch.no_grad():
        model.blocks[1].mlp.up_proj.weight.mul_(1e3)
        model.blocks[1].mlp.down_proj.weight.mul_(1e3)
    model.hf.to(dtype)
    return model


IDS = torch.arange(3, 23)


def test_float32_holds_the_activations_that_float16_cannot():
    cap = _loud_model(torch.float32).run(IDS, layers=[0, 1, 3], loss=True)
    assert cap.resid[1].abs().max() > FLOAT16_MAX  # the premise: float16 cannot represent layer 1
    assert all(torch.isfinite(cap.resid[k]).all() for k in (0, 1, 3)) and torch.isfinite(cap.loss).all()


@pytest.mark.parametrize("kwargs, where", [
    (dict(layers=[0, 1, 3]), "at layer 1"),          # the first captured layer that overflows is named
    (dict(layers=[2]), "at layer 2"),
    (dict(layers=[0], loss=True), "loss"),           # layer 0 is fine; the loss is not
    (dict(token_ids=[5, 6]), "probabilities"),
])
def test_model_run_refuses_float16_overflow(kwargs, where):
    model = _loud_model(torch.float16)
    with pytest.raises(IclnbError) as info:
        model.run(IDS, **kwargs)
    message = str(info.value)
    assert "overflow float16" in message and where in message and "float32" in message, message
    assert "tiny-llama" in message


def test_layers_before_the_overflow_are_still_served():
    """Only what is captured (and the loss, when asked) counts: block 0 never overflows, and without a loss the
    pass stops right after it."""
    cap = _loud_model(torch.float16).run(IDS, layers=["embed", 0])
    assert torch.isfinite(cap.resid[0]).all() and torch.isfinite(cap.resid["embed"]).all()


def _engine_setup(dtype):
    graph, walk, words, word_ids, measure = _setup(10)
    engine = LooEngine(_loud_model(dtype), encode=map_encoder(word_ids, 1))
    return engine, (words, walk, graph.n, measure)


def test_loo_engine_refuses_float16_overflow_in_its_layers():
    engine, args = _engine_setup(torch.float16)
    with pytest.raises(IclnbError, match=r"overflow float16 at layer 1 .*run with dtype float32"):
        engine.trial(*args, [0, 1, 3], loss=False)


def test_loo_engine_refuses_float16_overflow_in_its_variant_losses():
    """Layer 0 is fine; the variant losses (its own loss path, not Model.run's) are not."""
    engine, args = _engine_setup(torch.float16)
    with pytest.raises(IclnbError, match=r"overflow float16 before the next-token loss.*float32"):
        engine.trial(*args, [0], edit=Insert(INTRUDER), loss=False, variant_loss=True)
    with pytest.raises(IclnbError, match=r"overflow float16 before the next-token loss.*float32"):
        engine.trial(*args, [0], loss=True)


def test_loo_engine_runs_in_float32():
    engine, args = _engine_setup(torch.float32)
    trial = engine.trial(*args, [0, 1, 3], edit=Insert(INTRUDER), variant_loss=True)
    within = list(trial.metrics).index("within")  # defined for this walk (cross may lack pairs: NaN by design)
    assert np.isfinite(trial.full[:, within]).all() and np.isfinite(trial.edited[:, :, within]).all()
    assert np.isfinite(trial.token_loss).all() and np.isfinite(trial.inserted_loss).all()


@pytest.mark.slow
def test_cli_refuses_float16_for_the_embedded_model(tmp_path):
    """gemma-3-270m's residual stream reaches norms near 1e4 on CPU, past float16: one error line, nothing saved."""
    out = tmp_path / "fp16"
    proc = subprocess.run([sys.executable, "-m", "iclnb", "run", "css_basic", "-p", "n_contexts", "2", "-p",
                           "context_length", "12", "-p", "layers", "0,-1", "-p", "dtype", "float16", "-p", "n_boot",
                           "10", "-p", "n_perm", "10", "-o", str(out)], capture_output=True, text=True,
                          env={**__import__("os").environ, "ICLNB_PROGRESS": "text"})
    assert proc.returncode != 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("iclnb: error:")]
    assert lines and "float16" in lines[0] and "float32" in lines[0], proc.stderr
    assert not (out / "results.json").exists()
