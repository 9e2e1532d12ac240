"""Perturbations of a walk and what they do to the representation geometry: block_permutation (does order matter,
or is a walk a bag of words?) and incongruous_injection (one word out of place)."""
