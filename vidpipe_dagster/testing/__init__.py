"""Test doubles that speak real protocols (the Vertex emulator), for tests and offline demos."""
