"""loo_multilayer at the predecessor's full settings on a model with Llama-3-8B's shapes: wall time and peak memory.

The predecessor's all-layer leave-one-out run took 7-8 hours on an A40 for Llama-3-8B (14 context lengths, 5 trials,
both word sets, all 32 layers). This script runs the same measurement (what ``iclnb.experiments.loo.measure`` runs:
the loo experiment's walks, every N from the largest N's passes, every position, every layer, the full context's
loss; driven here through the engine directly, so the script depends only on the engine, the graphs and the models)
on a random-init LlamaForCausalLM with Llama-3-8B's
shapes in bfloat16 (hidden 4096, 32 layers, 32 heads, 8 key/value heads, intermediate 14336, vocabulary 128256).
No tokenizer is available offline, so a stand-in word -> token ids map gives each of the 24 words 1 or 2 fixed
random token ids, after BOS id 128000. Prints one JSON line: wall time, peak GPU memory
(``torch.cuda.max_memory_allocated``), and a check that nothing came out infinite.

    python benchmarks/loo_gpu.py                # on a CUDA machine (about 16 GB of weights)
    python benchmarks/loo_gpu.py --tiny         # a small config, runs on CPU in a minute
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.loo import BOS_ID, pair_distances, stand_in_word_ids, trial_inputs  # noqa: E402
from iclnb.methods.loo import LooEngine, map_encoder, metrics_of_vectors  # noqa: E402
from iclnb.models import random_init_model  # noqa: E402

CONTEXT_LENGTHS = "6,7,8,9,10,12,15,20,25,30,40,50,75,100"


def separate_pass_check(model, encode, seed: int, n_words: int = 20, positions=(0, 5, 19)) -> float:
    """Largest relative difference, over layers and metrics, between the engine's leave-one-out metrics and the
    same contexts run as separate plain passes (no cache, no packing) on this machine."""
    graph, nodes, words = trial_inputs("semantic", seed, 0, n_words, n_words)
    measure = pair_distances(graph)
    trial = LooEngine(model, encode=encode).trial(words, nodes, graph.n, measure, "all", positions=list(positions),
                                                   loss=False)
    worst = 0.0
    for row, p in enumerate(trial.positions):
        enc = encode(words[:p] + words[p + 1:])
        cap = model.run(enc.input_ids, layers="all")
        last = torch.as_tensor(enc.spans[:, 1] - 1)
        vectors = np.stack([cap.resid[k][0, last].cpu().numpy() for k in trial.layers])
        ref = metrics_of_vectors(vectors, np.delete(nodes, p), graph.n, measure, keep=enc.spans[:, 0] != 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            worst = max(worst, float(np.nanmax(np.abs(trial.edited[row] - ref) / np.abs(ref))))
    return worst


def measure_all(engine, conditions, context_lengths, trials: int, seed: int) -> list:
    """Every (condition, trial): one engine trial of the largest N serving every N (all layers, every position)."""
    n_max = max(context_lengths)
    out = []
    for condition in conditions:
        for trial in range(trials):
            graph, nodes, words = trial_inputs(condition, seed, trial, n_max, n_max)
            out.extend(engine.trial(words, nodes, graph.n, pair_distances(graph), "all", loss=True,
                                    context_lengths=context_lengths).values())
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a small config (runs on CPU)")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--context-lengths", default=CONTEXT_LENGTHS)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--conditions", default="semantic,unrelated")
    parser.add_argument("--batch-tokens", type=int, default=0, help="suffix tokens per batch (0: the default)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    args = parser.parse_args(argv)

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype)
    start = time.perf_counter()
    model = random_init_model("llama-3-8b-tiny" if args.tiny else "llama-3-8b", dtype=dtype, device=device,
                              seed=args.seed)
    build_s = time.perf_counter() - start
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    encode = map_encoder(stand_in_word_ids(args.seed), bos_id=BOS_ID)
    conditions = [c for c in args.conditions.split(",") if c]
    context_lengths = sorted({int(n) for n in args.context_lengths.split(",")})
    engine = LooEngine(model, encode=encode, batch_tokens=args.batch_tokens or None)
    start = time.perf_counter()
    trials = measure_all(engine, conditions, context_lengths, args.trials, args.seed)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    check = separate_pass_check(model, encode, args.seed)
    values = np.concatenate([np.concatenate([t.full.ravel(), t.edited.ravel(), t.influence.ravel()]) for t in trials])
    n_inf = int(np.isinf(values).sum())
    undefined = int(sum(np.isnan(t.influence).sum() for t in trials))
    print(json.dumps({
        "benchmark": "loo_multilayer",
        "model": model.name, "dtype": str(dtype).replace("torch.", ""), "device": str(model.device),
        "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None,
        "context_lengths": context_lengths, "trials": args.trials, "conditions": conditions,
        "layers": model.n_layers, "influence_rows": int(sum(t.influence.size for t in trials)),
        "wall_s": round(wall, 2), "model_build_s": round(build_s, 2),
        "peak_gpu_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.startswith("cuda") else None,
        "n_inf": n_inf, "n_undefined_influence": undefined,
        "max_rel_diff_vs_separate_passes": float(f"{check:.3g}"),
        "predecessor_reference_s": "7-8 hours on an A40 (as reported)",
    }))
    return 0 if n_inf == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
