"""The park family."""
