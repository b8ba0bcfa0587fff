"""Adapters that plug UniSparse into model libraries."""
