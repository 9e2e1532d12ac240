"""Cluster separation Φ as a :class:`iclnb.methods.loo.Measure`, so the edit engine can report Φ of every variant.

Φ depends on each cluster's within-cluster sum of squares, which per-node sums cannot give. So the engine is run
with one "node" per word position (``nodes = arange(N)``, ``n_nodes = N``): its per-node sums are then the word
vectors themselves and its counts say which words count (1) or not (0: the inserted word, the sink, words beyond
the context length). :class:`WordSeparation` computes, from those, exactly
:func:`iclnb.metrics.cluster_separation` (the unbiased variant) of the counted word vectors labelled by cluster.
"""

from __future__ import annotations

import numpy as np
import torch

from iclnb.core.errors import IclnbError

__all__ = ["WordSeparation"]


class WordSeparation:
    """Φ of the counted word vectors: ``WordSeparation(word_clusters)`` with the cluster of each word position.

    With clusters a of n_a ≥ 2 counted words, centroid μ_a and within sum of squares SS_a (C such clusters, n words
    among them)::

        B = mean_{a<b} ( ||μ_a − μ_b||² − SS_a / ((n_a − 1) n_a) − SS_b / ((n_b − 1) n_b) )
        W = Σ_a SS_a / (n − C)
        Φ = B / W

    (NaN with fewer than two such clusters or W = 0). Distances and residuals come from explicit differences, not
    from expanded squares, which cancel badly for large residual-stream norms. Counts must be 0 or 1 (one node per
    word position).
    """

    names = ("phi",)

    def __init__(self, word_clusters):
        labels = np.asarray(word_clusters).reshape(-1)
        if labels.size < 1:
            raise IclnbError("WordSeparation needs the cluster of at least one word position")
        _, inverse = np.unique(labels, return_inverse=True)
        self.n_clusters = int(inverse.max()) + 1
        self._onehot = torch.nn.functional.one_hot(torch.as_tensor(inverse.reshape(-1)), self.n_clusters)
        self._on_device: dict = {}

    def _membership(self, like: torch.Tensor) -> torch.Tensor:
        key = (like.device, like.dtype)
        if key not in self._on_device:
            self._on_device[key] = self._onehot.to(device=like.device, dtype=like.dtype)
        return self._on_device[key]

    def __call__(self, sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        onehot = self._membership(sums)                                               # (W, C)
        if sums.shape[-2] != onehot.shape[0]:
            raise IclnbError(f"WordSeparation was built for {onehot.shape[0]} word positions, got sums for "
                             f"{sums.shape[-2]} nodes; run the engine with one node per word position")
        if bool((counts > 1).any()):
            raise IclnbError("WordSeparation needs one node per word position (counts of 0 or 1)")
        w = counts.to(sums.dtype)                                                     # (..., W)
        member = w[..., None] * onehot                                                # (..., W, C)
        n = member.sum(-2)                                                            # (..., C)
        cent = torch.einsum("...wc,...wd->...cd", member, sums) / n.clamp(min=1.0)[..., None]
        resid = sums - torch.einsum("wc,...cd->...wd", onehot, cent)
        ss = torch.einsum("...wc,...w->...c", member, (resid * resid).sum(-1))       # (..., C)
        kept = n >= 2
        n_kept = kept.sum(-1).to(sums.dtype)
        diff = cent[..., :, None, :] - cent[..., None, :, :]
        pair_sq = (diff * diff).sum(-1)                                               # (..., C, C)
        pair_ok = kept[..., :, None] & kept[..., None, :]
        upper = torch.triu(torch.ones(pair_sq.shape[-2:], dtype=torch.bool, device=sums.device), 1)
        pair_ok = pair_ok & upper
        n_pairs = pair_ok.sum((-2, -1)).to(sums.dtype)
        mean_pair = torch.where(pair_ok, pair_sq, torch.zeros_like(pair_sq)).sum((-2, -1)) / n_pairs.clamp(min=1)
        corr = torch.where(kept, ss / ((n - 1).clamp(min=1) * n.clamp(min=1)), torch.zeros_like(ss))
        between = mean_pair - 2.0 * corr.sum(-1) / n_kept.clamp(min=1)
        dof = torch.where(kept, n, torch.zeros_like(n)).sum(-1) - n_kept
        within = torch.where(kept, ss, torch.zeros_like(ss)).sum(-1) / dof.clamp(min=1)
        ok = (n_kept >= 2) & (within > 0)
        phi = torch.where(ok, between / torch.where(ok, within, torch.ones_like(within)), torch.nan)
        return phi[..., None]
