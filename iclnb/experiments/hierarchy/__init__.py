"""The hierarchy family: structure per hierarchy level as the context grows (``hierarchical``, across models) and
which level of a deeper hierarchy separates first (``deep_hierarchy``, with an animation of the node means)."""
