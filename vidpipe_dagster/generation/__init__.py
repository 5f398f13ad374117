"""Paid and local generators, and what keeps their spend safe (no Dagster here)."""
