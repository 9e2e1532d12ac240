"""A whole `iclnb run loo_multilayer` against a script that only loads the model and runs bare forwards over the
same tokens: what the notebook, its start-up, its statistics and its figures add to the forward-pass floor.

Both sides run as fresh processes, one after the other, on the same machine:

* floor: ``python -c`` loads the model (``iclnb.load_model``), builds the same contexts, and runs plain forwards
  (no hooks, no cache, no metrics) over the same tokens the leave-one-out engine processes: every full context, then
  every deleted position's suffix, packed into rows and batches exactly as the engine packs them;
* run: ``iclnb run loo_multilayer`` with the same settings into a fresh directory (notebook, kernel, measurements,
  tables, figures with their PNG copies, results.json).

It prints both wall times, the ratio, and the engine's own measuring time from the run next to the floor's forward
time (the engine's ratio to the floor).

    python benchmarks/loo_run.py                                   # N = 100, 2 contexts, semantic, all layers
    python benchmarks/loo_run.py --context-lengths 6,10 --contexts 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FLOOR = textwrap.dedent('''
    import json, sys, time
    import numpy as np, torch
    from iclnb.experiments.loo import loo as exp
    from iclnb.methods.loo import LooEngine
    from iclnb.models import load_model
    lengths, n_contexts, conditions = json.loads(sys.argv[1])
    model = load_model("gemma-3-270m")
    engine = LooEngine(model)
    n_max = max(lengths)
    start = time.perf_counter()
    with torch.inference_mode():
        for condition in conditions:
            for k in range(n_contexts):
                graph, nodes, words = exp.context_inputs(condition, 42, k, n_max, n_max)
                enc = engine.encode(words)
                ids, spans = enc.input_ids, np.asarray(enc.spans)
                model.hf.base_model(input_ids=ids[None])
                positions = np.unique(np.concatenate([exp.tested_positions(n) for n in lengths]))
                suffix = [ids[int(spans[p, 1]):] for p in positions]
                sizes = np.array([len(s) for s in suffix])
                for batch in engine._batches(sizes):
                    width = max(max(int(sizes[row[0]]), 1) for row in batch)
                    rows = torch.full((len(batch), width), int(ids[0]), dtype=torch.long)
                    for r, row in enumerate(batch):
                        packed = torch.cat([suffix[i] for i in row]) if row else ids[:1]
                        rows[r, : len(packed)] = packed[:width]
                    model.hf.base_model(input_ids=rows)
    print(json.dumps({"forward_seconds": time.perf_counter() - start}))
''')


def timed(cmd, env) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--context-lengths", default="100")
    parser.add_argument("--contexts", type=int, default=2)
    parser.add_argument("--conditions", default="semantic")
    args = parser.parse_args()
    lengths = [int(n) for n in args.context_lengths.split(",")]
    conditions = args.conditions.split(",")
    env = {**os.environ, "ICLNB_PROGRESS": "text", "PYTHONPATH": str(ROOT)}

    floor_s, out = timed([sys.executable, "-c", FLOOR, json.dumps([lengths, args.contexts, conditions])], env)
    forward_s = json.loads(out.strip().splitlines()[-1])["forward_seconds"]
    with tempfile.TemporaryDirectory() as tmp:
        run_s, _ = timed([sys.executable, "-m", "iclnb", "run", "loo_multilayer", "-p", "context_lengths",
                          args.context_lengths, "-p", "n_contexts", str(args.contexts), "-p", "conditions",
                          args.conditions, "-o", f"{tmp}/run"], env)
        results = json.loads(Path(f"{tmp}/run/results.json").read_text())["results"]
        measure_s = sum(sum(entry["seconds"]) for by_n in results["contexts"].values()
                        for key, entry in by_n.items() if key == f"N_{max(lengths)}")
        pngs = len(list(Path(f"{tmp}/run/figures").glob("*.png")))
    print(f"settings: N {lengths}, {args.contexts} contexts, word sets {conditions}, all layers, gemma-3-270m")
    print(f"floor script (load + bare forwards over the same tokens): {floor_s:8.1f} s   (forwards {forward_s:.1f} s)")
    print(f"iclnb run loo_multilayer (everything, {pngs} PNGs):      {run_s:8.1f} s   (engine {measure_s:.1f} s)")
    print(f"ratio whole run / floor script: {run_s / floor_s:.2f}")
    print(f"ratio engine / bare forwards:   {measure_s / forward_s:.2f}")


if __name__ == "__main__":
    main()
