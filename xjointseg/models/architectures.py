"""Architectures by name (placeholder until the networks land)."""

ARCHITECTURES: dict[str, type] = {}
