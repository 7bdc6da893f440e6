"""Building blocks composed by the models: one block per file."""
