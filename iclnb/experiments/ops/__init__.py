"""Experiments that read other runs: compare_experiments lines up any runs of any experiments and models."""
