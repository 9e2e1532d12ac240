"""Working with many runs: one tidy table per run (:mod:`.tidy`), a drafted ``summary.md`` (:mod:`.summarize`),
logging to Weights & Biases (:mod:`.tracking`), parameter sweeps on this machine or a Slurm cluster (:mod:`.sweep`)
and the state of runs and sweeps (:mod:`.status`)."""

from iclnb.ops.tidy import COLUMNS, tidy

__all__ = ["COLUMNS", "tidy"]
