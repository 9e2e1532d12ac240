"""The loo family."""
