"""iclnb: measure how in-context examples reshape the hidden representations of language models."""
