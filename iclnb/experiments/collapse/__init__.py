"""The collapse family: representations over very long contexts (random walks, natural text, one repeated token),
the switch from a walk to natural text, and factual recall after each context."""
