"""Cost of capture: Model.run (all layers + per-token loss) against a bare Hugging Face forward.

Both run on the same input in the same process, interleaved, and the median of several repetitions is compared.
The bare forward is ``model.hf(input_ids)`` (it computes the full logits and nothing else).

    python benchmarks/capture.py [--model gemma-3-270m] [--tokens 1024] [--repeats 5]
    python benchmarks/capture.py --random-init llama-3-8b --device cuda     # real 8B shapes, random weights
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from iclnb.models import load_model, random_init_model


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--random-init", default=None, metavar="SHAPES",
                        help="measure a random-init model of these shapes (e.g. llama-3-8b) instead of --model")
    args = parser.parse_args(argv)
    if args.random_init:
        model = random_init_model(args.random_init, dtype=args.dtype, device=args.device)
        args.model = model.name
    else:
        model = load_model(args.model, dtype=args.dtype, device=args.device)
    vocab = model.hf.get_input_embeddings().weight.shape[0]
    ids = torch.randint(10, vocab, (1, args.tokens), generator=torch.Generator().manual_seed(0)).to(model.device)
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)

    def bare():
        with torch.inference_mode():
            model.hf(input_ids=ids, use_cache=False)

    def capture():
        model.run(ids, layers="all", loss=True)

    def capture_no_loss():
        model.run(ids, layers="all")

    timings = {"bare": [], "capture": [], "capture_no_loss": []}
    for fn in (bare, capture, capture_no_loss):  # warm-up
        fn()
    for _ in range(args.repeats):
        for name, fn in (("bare", bare), ("capture", capture), ("capture_no_loss", capture_no_loss)):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            timings[name].append(time.perf_counter() - start)
    med = {name: statistics.median(values) for name, values in timings.items()}
    report = {
        "model": args.model, "tokens": args.tokens, "layers": model.n_layers, "device": str(model.device),
        "dtype": str(model.dtype), "threads": torch.get_num_threads(), "repeats": args.repeats,
        "bare_s": round(med["bare"], 4), "capture_all_layers_loss_s": round(med["capture"], 4),
        "capture_all_layers_no_loss_s": round(med["capture_no_loss"], 4),
        "ratio_capture_over_bare": round(med["capture"] / med["bare"], 3),
        "ratio_no_loss_over_bare": round(med["capture_no_loss"] / med["bare"], 3),
    }
    print(f"bare forward            {med['bare']:.3f} s")
    print(f"run(all layers, loss)   {med['capture']:.3f} s   ratio {report['ratio_capture_over_bare']:.3f}")
    print(f"run(all layers)         {med['capture_no_loss']:.3f} s   ratio {report['ratio_no_loss_over_bare']:.3f}")
    if model.device.type == "cuda":
        report["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
