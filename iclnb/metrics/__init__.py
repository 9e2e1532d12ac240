"""Metrics over word representations (SPEC section 5): structure, collapse and the Context Sensitivity Score."""

from iclnb.metrics.css import css, css_by_node, css_summary
from iclnb.metrics.structure import (
    cluster_separation,
    coherence,
    collapse_stats,
    copy_baseline,
    dirichlet_energy,
    distance_correlation,
    graph_distances,
    neighbor_accuracy,
    node_means,
    node_means_prefix,
    participation_ratio,
    pca,
    procrustes_fit,
    spectral_embedding,
    twonn_dimension,
)

__all__ = [
    "cluster_separation",
    "coherence",
    "collapse_stats",
    "copy_baseline",
    "css",
    "css_by_node",
    "css_summary",
    "dirichlet_energy",
    "distance_correlation",
    "graph_distances",
    "neighbor_accuracy",
    "node_means",
    "node_means_prefix",
    "participation_ratio",
    "pca",
    "procrustes_fit",
    "spectral_embedding",
    "twonn_dimension",
]
