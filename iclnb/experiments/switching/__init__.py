"""The switching family: how fast word representations reorganise when a walk's graph changes mid-context."""
