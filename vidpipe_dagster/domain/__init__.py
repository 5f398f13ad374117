"""Pure domain logic: plain values in, plain values out; no Dagster imports."""
