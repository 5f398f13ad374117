"""The per-project asset factory and its stages, one module per stage."""
