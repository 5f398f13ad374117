"""Dagster resources: one per outside system (database, media store, Vertex, local models)."""
