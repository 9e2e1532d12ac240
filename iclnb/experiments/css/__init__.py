"""The css family."""
