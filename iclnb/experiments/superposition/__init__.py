"""The superposition family: contexts readable under two hypotheses of a dual graph (superposition_collapse,
graph_adherence)."""
